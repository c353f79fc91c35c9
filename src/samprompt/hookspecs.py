"""The plugin contract: hook specifications a plugin implements (prompt strategies, model
families).

A plugin is a module registered under the ``samprompt`` entry-point group, for example in its
``pyproject.toml``::

    [project.entry-points.samprompt]
    my_strategies = "my_package.strategies"

where ``my_package/strategies.py`` holds::

    from samprompt.hookspecs import hookimpl

    @hookimpl
    def samprompt_prompt_strategies():
        return [MyStrategy]
"""

from __future__ import annotations

from collections.abc import Sequence

from samprompt.families.base import ModelFamily
from samprompt.markers import PROJECT, hookimpl, hookspec
from samprompt.prompts.strategy import PromptStrategy

__all__ = [
    "PROJECT",
    "hookimpl",
    "hookspec",
    "samprompt_model_families",
    "samprompt_prompt_strategies",
]


@hookspec
def samprompt_prompt_strategies() -> Sequence[type[PromptStrategy]]:  # type: ignore[empty-body]
    """Return the prompt-strategy classes this plugin provides.

    Each class has a unique class attribute ``name`` (its registry name), builds with keyword
    parameters only, and implements :class:`samprompt.PromptStrategy`.
    """


@hookspec
def samprompt_model_families() -> Sequence[ModelFamily]:  # type: ignore[empty-body]
    """Return instances of the model families this plugin provides.

    Each is a :class:`samprompt.families.ModelFamily` with a unique ``name`` and variant names
    that no other family uses; :func:`samprompt.load_sam` then builds its ``random:<variant>``
    specs, recognises its checkpoint files from their tensor shapes and loads its named
    checkpoints.
    """
