"""The :class:`PromptStrategy` protocol every prompt plugin implements, and a helper base class."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from samprompt.data.sample import Sample
from samprompt.errors import ConfigError
from samprompt.prompts.prompt import Prompt

__all__ = ["BaseStrategy", "PromptStrategy"]


@runtime_checkable
class PromptStrategy(Protocol):
    """How prompts are made for training and inference.

    A strategy is registered under :attr:`name` through the ``samprompt`` entry-point group (see
    :mod:`samprompt.plugins`) and built with keyword parameters.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"mean-points"``.
    needs_mask_at_inference : bool
        True when :meth:`inference_prompt` reads the ground-truth mask (boxes from ground truth:
        an *oracle* setting, labelled so in every report).

    Examples
    --------
    >>> from samprompt import get_strategy
    >>> strategy = get_strategy("perturbed-box")
    >>> isinstance(strategy, PromptStrategy), strategy.needs_mask_at_inference
    (True, True)
    """

    name: str
    needs_mask_at_inference: bool

    def fit(self, train: Iterable[Sample]) -> None:
        """Learn whatever the strategy needs from the training split only."""
        ...

    def training_prompt(self, sample: Sample, rng: np.random.Generator) -> Prompt:
        """The prompt for ``sample`` during training; may read ``sample.mask`` and use ``rng``."""
        ...

    def inference_prompt(self, sample: Sample) -> Prompt:
        """The prompt at inference: deterministic; reads ``sample.mask`` only if
        :attr:`needs_mask_at_inference`."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Parameters and fitted state, JSON-serialisable."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


class BaseStrategy:
    """Convenience base: no fitting, training prompt = inference prompt, params in the state.

    Subclasses set :attr:`name`, implement :meth:`inference_prompt` and list their constructor
    parameters in :meth:`params`. A strategy that learns from the training split in :meth:`fit`
    also implements :meth:`fitted_state` and :meth:`load_fitted`, so that a saved model prompts
    exactly as it did in training; saving checks this round trip and names the plugin if it
    fails.

    Examples
    --------
    >>> from samprompt import Prompt
    >>> class Centre(BaseStrategy):
    ...     name = "centre"
    ...     def inference_prompt(self, sample):
    ...         h, w = sample.size
    ...         return Prompt((h, w), points=[[(w - 1) / 2, (h - 1) / 2]], point_labels=[1])
    >>> from samprompt.data import make_phantoms
    >>> Centre().inference_prompt(make_phantoms(1, 64)[0]).points.tolist()
    [[31.5, 31.5]]
    """

    name: str = "base"
    needs_mask_at_inference: bool = False

    def params(self) -> dict[str, Any]:
        """Constructor parameters (JSON-serialisable)."""
        return {}

    def fit(self, train: Iterable[Sample]) -> None:
        """Nothing to learn by default."""

    def training_prompt(self, sample: Sample, rng: np.random.Generator) -> Prompt:
        """Same as :meth:`inference_prompt` by default."""
        return self.inference_prompt(sample)

    def inference_prompt(self, sample: Sample) -> Prompt:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """``{"params": ..., "fitted": ...}``."""
        return {"params": self.params(), "fitted": self.fitted_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore parameters and fitted state; only the constructor's parameters
        (:meth:`params`) may be set, never a method or another attribute."""
        params = dict(state.get("params", {}))
        unknown = sorted(set(params) - set(self.params()))
        if unknown:
            raise ConfigError(
                f"strategy {self.name!r}: its saved state names unknown parameters {unknown}; "
                f"it takes {sorted(self.params())}"
            )
        for key, value in params.items():
            setattr(self, key, value)
        self.load_fitted(state.get("fitted") or {})

    def fitted_state(self) -> dict[str, Any]:
        """What :meth:`fit` learned, JSON-serialisable (nothing by default)."""
        return {}

    def load_fitted(self, fitted: Mapping[str, Any]) -> None:
        """Restore what :meth:`fitted_state` returned."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
