"""Prompts, the prompt-strategy protocol and the built-in strategies."""

from samprompt.prompts.combined import Combined
from samprompt.prompts.mean_points import MeanPoints
from samprompt.prompts.perturbed_box import PerturbedBox
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.strategy import BaseStrategy, PromptStrategy

__all__ = ["BaseStrategy", "Combined", "MeanPoints", "PerturbedBox", "Prompt", "PromptStrategy"]
