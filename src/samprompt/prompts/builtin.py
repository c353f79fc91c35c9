"""The built-in strategies, registered through samprompt's own ``samprompt`` entry point."""

from __future__ import annotations

from collections.abc import Sequence

from samprompt.markers import hookimpl
from samprompt.prompts.combined import Combined
from samprompt.prompts.learned import Learned
from samprompt.prompts.mean_points import MeanPoints
from samprompt.prompts.perturbed_box import PerturbedBox
from samprompt.prompts.refine import Refine
from samprompt.prompts.strategy import PromptStrategy


@hookimpl
def samprompt_prompt_strategies() -> Sequence[type[PromptStrategy]]:
    """``mean-points``, ``perturbed-box``, ``combined``, ``learned`` and ``refine``."""
    return [MeanPoints, PerturbedBox, Combined, Learned, Refine]
