"""Discovery of prompt strategies through pluggy and the ``samprompt`` entry-point group.

Built-in strategies are registered by samprompt's own entry point, the same path third-party
packages take: the core holds no hard-coded list.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata
from types import ModuleType
from typing import Any, cast

import attrs
import pluggy

from samprompt import hookspecs
from samprompt.errors import PluginError
from samprompt.prompts.strategy import PromptStrategy

__all__ = [
    "PluginFailure",
    "StrategyInfo",
    "get_strategy",
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
        impls = [
            i
            for i in self.manager.hook.samprompt_prompt_strategies.get_hookimpls()
            if i.plugin is plugin
        ]
        for impl in impls:
            try:
                classes = list(cast(Iterable[Any], impl.function()))
            except Exception as exc:
                self.failures.append(PluginFailure(source, f"{type(exc).__name__}: {exc}"))
                continue
            for cls in classes:
                name = getattr(cls, "name", None)
                if not isinstance(name, str) or not name:
                    self.failures.append(PluginFailure(source, f"{cls!r} has no string 'name'"))
                    continue
                self.by_name.setdefault(name, []).append(StrategyInfo(name, cls, source))


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
    try:
        return info.cls(**params)
    except TypeError as exc:
        raise PluginError(
            f"strategy {name!r} ({info.source}) rejected parameters {params}: {exc}"
        ) from exc


def strategy_table() -> str:
    """A plain-text table of installed strategies and failed plugins (``samprompt plugins``)."""
    registry = _get_registry()
    rows = [("name", "oracle", "source")]
    for name, infos in sorted(registry.by_name.items()):
        for info in infos:
            oracle = getattr(info.cls, "needs_mask_at_inference", "?")
            rows.append(
                (name + (" (DUPLICATE)" if len(infos) > 1 else ""), str(oracle), info.source)
            )
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]}" for r in rows]
    lines += [f"FAILED  {f.source}: {f.error}" for f in registry.failures]
    return "\n".join(lines)
