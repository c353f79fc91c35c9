"""Prompts, the prompt-strategy protocol and the built-in strategies."""

from samprompt.prompts.combined import Combined
from samprompt.prompts.learned import Learned
from samprompt.prompts.mean_points import MeanPoints
from samprompt.prompts.perturbed_box import PerturbedBox
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.refine import Refine
from samprompt.prompts.strategy import BaseStrategy, PromptStrategy
from samprompt.prompts.tokens import DecoderAndPrompt, PromptTokens

__all__ = [
    "BaseStrategy",
    "Combined",
    "DecoderAndPrompt",
    "Learned",
    "MeanPoints",
    "PerturbedBox",
    "Prompt",
    "PromptStrategy",
    "PromptTokens",
    "Refine",
]
