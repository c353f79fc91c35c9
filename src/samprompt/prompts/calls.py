"""Every call samprompt makes into a prompt strategy goes through these functions.

A strategy may come from a third-party plugin. Whatever such code raises (other than samprompt's
own errors, which already name what is wrong) becomes one :class:`~samprompt.errors.PluginError`
line naming the strategy, the class it comes from and the method that failed; a method that
returns something other than a :class:`~samprompt.Prompt`, or a state that is not JSON, is
refused the same way, before it can fail somewhere far from its cause.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
from segment_anything.modeling import Sam

from samprompt.data.sample import Sample
from samprompt.errors import PluginError, SampromptError
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.strategy import PromptStrategy
from samprompt.prompts.tokens import PromptTokens

__all__ = [
    "fit_strategy",
    "inference_prompt",
    "load_strategy_state",
    "prompt_lr",
    "prompt_tokens",
    "refine_passes",
    "refine_prompt",
    "strategy_state",
    "training_prompt",
]

T = TypeVar("T")


def _who(strategy: object) -> str:
    name = getattr(strategy, "name", "?")
    kind = type(strategy)
    return f"prompt strategy {name!r} ({kind.__module__}.{kind.__qualname__})"


def _guarded(strategy: object, hook: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except SampromptError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise PluginError(
            f"{_who(strategy)} failed in {hook}(): {type(exc).__name__}"
            + (f": {text}" if text else "")
        ) from exc


def _prompt(strategy: object, hook: str, value: object) -> Prompt:
    if not isinstance(value, Prompt):
        raise PluginError(
            f"{_who(strategy)}: {hook}() returned {type(value).__name__}, not a samprompt.Prompt"
        )
    return value


def fit_strategy(strategy: PromptStrategy, train: Iterable[Sample]) -> None:
    """``strategy.fit(train)``."""
    _guarded(strategy, "fit", lambda: strategy.fit(train))


def training_prompt(strategy: PromptStrategy, sample: Sample, rng: np.random.Generator) -> Prompt:
    """``strategy.training_prompt(sample, rng)``, checked to be a :class:`Prompt`."""
    value = _guarded(strategy, "training_prompt", lambda: strategy.training_prompt(sample, rng))
    return _prompt(strategy, "training_prompt", value)


def inference_prompt(strategy: PromptStrategy, sample: Sample) -> Prompt:
    """``strategy.inference_prompt(sample)``, checked to be a :class:`Prompt`."""
    value = _guarded(strategy, "inference_prompt", lambda: strategy.inference_prompt(sample))
    return _prompt(strategy, "inference_prompt", value)


def strategy_state(strategy: PromptStrategy) -> dict[str, Any]:
    """``strategy.state_dict()`` as plain JSON (a copy); refused when it is not JSON."""
    state = _guarded(strategy, "state_dict", strategy.state_dict)
    try:
        plain = json.loads(json.dumps(state, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise PluginError(
            f"{_who(strategy)}: state_dict() is not JSON-serialisable ({str(exc)[:200]})"
        ) from exc
    if not isinstance(plain, dict):
        raise PluginError(f"{_who(strategy)}: state_dict() returned {type(state).__name__}")
    return plain


def load_strategy_state(strategy: PromptStrategy, state: Mapping[str, Any]) -> None:
    """``strategy.load_state_dict(state)``."""
    _guarded(strategy, "load_state_dict", lambda: strategy.load_state_dict(state))


def prompt_tokens(strategy: PromptStrategy, sam: Sam) -> PromptTokens | None:
    """``strategy.prompt_tokens(sam)`` for a strategy that learns a prompt, else None."""
    make = getattr(strategy, "prompt_tokens", None)
    if make is None:
        return None
    value = _guarded(strategy, "prompt_tokens", lambda: make(sam))
    if value is not None and not isinstance(value, PromptTokens):
        raise PluginError(
            f"{_who(strategy)}: prompt_tokens() returned {type(value).__name__}, not a "
            "samprompt.prompts.tokens.PromptTokens"
        )
    return value


def prompt_lr(strategy: PromptStrategy, default: float) -> float:
    """The learning rate a strategy asks for its prompt parameters (``default`` if none)."""
    value = getattr(strategy, "prompt_lr", None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise PluginError(f"{_who(strategy)}: prompt_lr must be a positive number, got {value!r}")
    return float(value)


def refine_passes(strategy: PromptStrategy) -> int:
    """How many passes after the first a strategy asks for (0 unless it refines)."""
    value = getattr(strategy, "refine_passes", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PluginError(f"{_who(strategy)}: refine_passes must be a whole number >= 0")
    return value


def refine_prompt(strategy: PromptStrategy, sample: Sample, previous: np.ndarray) -> Prompt:
    """``strategy.refine_prompt(sample, previous)``, checked to be a :class:`Prompt`; the sample
    handed over carries no mask, so no refinement can read ground truth."""
    blind = Sample(sample.id, sample.image, None)
    value = _guarded(
        strategy,
        "refine_prompt",
        lambda: strategy.refine_prompt(blind, previous),  # type: ignore[attr-defined]
    )
    return _prompt(strategy, "refine_prompt", value)
