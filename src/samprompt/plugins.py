"""Discovery of prompt strategies and model families through pluggy and the ``samprompt``
entry-point group.

Built-in strategies and families are plugin modules like any other (``samprompt.prompts.builtin``,
``samprompt.families.builtin``). They are registered directly, so a source checkout that was never
installed works too, and are also declared as samprompt's own entry points (a module reached both
ways is registered once).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata
from types import ModuleType
from typing import Any, cast

import attrs
import pluggy

from samprompt import hookspecs
from samprompt._version import __version__
from samprompt.errors import CheckpointError, PluginError, SampromptError
from samprompt.families import builtin as builtin_families
from samprompt.families.base import ModelFamily
from samprompt.prompts import builtin as builtin_strategies
from samprompt.prompts.strategy import PromptStrategy

__all__ = [
    "FamilyInfo",
    "PluginFailure",
    "StrategyInfo",
    "get_family",
    "get_strategy",
    "list_families",
    "list_strategies",
    "register_plugin",
    "reset_plugins",
    "strategy_table",
]


@attrs.frozen
class StrategyInfo:
    """A registered strategy: its class and the plugin (distribution and entry point) it came from."""

    name: str
    cls: type[PromptStrategy]
    source: str


@attrs.frozen
class FamilyInfo:
    """A registered model family and the plugin it came from."""

    name: str
    family: ModelFamily
    source: str


@attrs.frozen
class PluginFailure:
    """A plugin that raised while loading (the other plugins stay usable)."""

    source: str
    error: str


class _Registry:
    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.by_name: dict[str, list[StrategyInfo]] = {}
        self.families: dict[str, list[FamilyInfo]] = {}
        for module in (builtin_strategies, builtin_families):
            self.add(module, f"samprompt {__version__} (built-in {module.__name__})")
        for entry in metadata.entry_points(group=hookspecs.PROJECT):
            dist = getattr(entry, "dist", None)
            where = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
            source = f"{where} (entry point {entry.name} = {entry.value})"
            try:
                module = entry.load()
            except Exception as exc:
                self.failures.append(PluginFailure(source, f"{type(exc).__name__}: {exc}"))
                continue
            self.add(module, source)

    def add(self, plugin: ModuleType | object, source: str) -> None:
        if self.manager.is_registered(plugin):
            return
        self.manager.register(plugin, name=source)
        for cls in self._provided(plugin, source, self.manager.hook.samprompt_prompt_strategies):
            name = getattr(cls, "name", None)
            if not isinstance(name, str) or not name:
                self.failures.append(PluginFailure(source, f"{cls!r} has no string 'name'"))
                continue
            self.by_name.setdefault(name, []).append(StrategyInfo(name, cls, source))
        for family in self._provided(plugin, source, self.manager.hook.samprompt_model_families):
            if not isinstance(family, ModelFamily):
                self.failures.append(
                    PluginFailure(source, f"{family!r} is not a samprompt ModelFamily instance")
                )
                continue
            self.families.setdefault(family.name, []).append(
                FamilyInfo(family.name, family, source)
            )

    def _provided(self, plugin: object, source: str, hook: Any) -> list[Any]:
        """What ``plugin``'s implementation of ``hook`` returns (a failure is recorded)."""
        provided: list[Any] = []
        for impl in hook.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            try:
                provided.extend(cast(Iterable[Any], impl.function()))
            except Exception as exc:
                self.failures.append(PluginFailure(source, f"{type(exc).__name__}: {exc}"))
        return provided


_registry: _Registry | None = None


def _get_registry() -> _Registry:
    global _registry
    if _registry is None:
        _registry = _Registry()
    return _registry


def reset_plugins() -> None:
    """Forget discovered plugins; the next lookup scans the entry points again."""
    global _registry
    _registry = None


def register_plugin(plugin: ModuleType | object, source: str = "registered at run time") -> None:
    """Register a plugin object or module by hand (e.g. in a notebook), next to entry points."""
    _get_registry().add(plugin, source)


def list_strategies() -> dict[str, str]:
    """Map each installed strategy name to where it came from.

    Examples
    --------
    >>> sorted(list_strategies())[:3]  # doctest: +SKIP
    ['combined', 'mean-points', 'perturbed-box']
    """
    registry = _get_registry()
    return {
        name: " | ".join(i.source for i in infos)
        for name, infos in sorted(registry.by_name.items())
    }


def plugin_failures() -> list[PluginFailure]:
    """Plugins that failed to load, with their errors."""
    return list(_get_registry().failures)


def _lookup(name: str) -> StrategyInfo:
    registry = _get_registry()
    infos = registry.by_name.get(name)
    if not infos:
        installed = ", ".join(sorted(registry.by_name)) or "none"
        failed = "".join(f"\n  failed to load: {f.source}: {f.error}" for f in registry.failures)
        raise PluginError(f"unknown prompt strategy {name!r}; installed: {installed}{failed}")
    if len(infos) > 1:
        sources = "; ".join(i.source for i in infos)
        raise PluginError(
            f"prompt strategy name {name!r} is provided by several plugins: {sources}"
        )
    return infos[0]


def get_strategy(name: str, **params: Any) -> PromptStrategy:
    """Build the strategy registered as ``name`` with keyword ``params``.

    Raises
    ------
    PluginError
        Unknown name (the message lists the installed ones) or a name two plugins provide.

    Examples
    --------
    >>> get_strategy("perturbed-box", max_shift=0.05)  # doctest: +SKIP
    PerturbedBox(max_shift=0.05, ...)
    """
    info = _lookup(name)
    if getattr(info.cls, "builds_children", False):
        params = {**params, "build": get_strategy}
    try:
        return info.cls(**params)
    except SampromptError:
        raise
    except TypeError as exc:
        raise PluginError(
            f"strategy {name!r} ({info.source}) rejected parameters {params}: {exc}"
        ) from exc
    except Exception as exc:  # a third-party constructor's own failure: one line naming it
        raise PluginError(
            f"strategy {name!r} ({info.source}) failed in __init__(): {type(exc).__name__}: "
            f"{str(exc)[:200]}"
        ) from exc


def strategy_table() -> str:
    """A plain-text table of installed strategies and failed plugins (``samprompt plugins``)."""
    registry = _get_registry()
    rows = [("name", "oracle", "source")]
    for name, infos in sorted(registry.by_name.items()):
        for info in infos:
            flag = getattr(info.cls, "needs_mask_at_inference", "?")
            # a property (e.g. `combined`'s) is decided by the instance's parts
            oracle = "per instance" if isinstance(flag, property) else str(flag)
            rows.append((name + (" (DUPLICATE)" if len(infos) > 1 else ""), oracle, info.source))
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]}" for r in rows]
    lines += [f"FAILED  {f.source}: {f.error}" for f in registry.failures]
    return "\n".join(lines)


def list_families() -> dict[str, str]:
    """Map each installed model family name to where it came from.

    Examples
    --------
    >>> sorted(list_families())
    ['litemedsam', 'vit']
    """
    return {
        name: " | ".join(i.source for i in infos)
        for name, infos in sorted(_get_registry().families.items())
    }


def families() -> list[ModelFamily]:
    """The installed model families (a name two plugins provide raises :class:`PluginError`)."""
    return [get_family(name) for name in sorted(_get_registry().families)]


def get_family(name: str) -> ModelFamily:
    """The model family registered as ``name``.

    Raises
    ------
    CheckpointError
        Unknown name (the message lists the installed ones).
    PluginError
        A name two plugins provide.

    Examples
    --------
    >>> get_family("vit").variants
    ('vit_b', 'vit_l', 'vit_h', 'tiny')
    """
    registry = _get_registry()
    infos = registry.families.get(name)
    if not infos:
        installed = ", ".join(sorted(registry.families)) or "none"
        raise CheckpointError(f"unknown model family {name!r}; installed: {installed}")
    if len(infos) > 1:
        sources = "; ".join(i.source for i in infos)
        raise PluginError(f"model family name {name!r} is provided by several plugins: {sources}")
    return infos[0].family


def family_table() -> str:
    """A plain-text table of installed model families (``samprompt plugins``)."""
    rows = [("family", "variants", "named checkpoints", "source")]
    for name, infos in sorted(_get_registry().families.items()):
        for info in infos:
            named = ", ".join(c.name for c in info.family.named_checkpoints()) or "-"
            rows.append((name, info.family.describe(), named, info.source))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]:<{width[2]}}  {r[3]}" for r in rows
    )
