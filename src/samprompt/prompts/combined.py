"""``combined``: the union of the prompts of several other strategies."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from samprompt.data.sample import Sample
from samprompt.errors import ConfigError
from samprompt.prompts.mean_points import MeanPoints
from samprompt.prompts.perturbed_box import PerturbedBox
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.strategy import BaseStrategy, PromptStrategy

#: Builds a registered strategy by name with keyword parameters (the registry's ``get_strategy``).
StrategyBuilder = Callable[..., PromptStrategy]

__all__ = ["Combined"]


class Combined(BaseStrategy):
    """Points and boxes of several strategies together (default: mean points + perturbed box).

    Parameters
    ----------
    strategies : sequence of str
        Registered strategy names to combine (default ``("mean-points", "perturbed-box")``); any
        installed plugin may be named.
    params : mapping of str to mapping
        Parameters passed to each named strategy, e.g.
        ``{"perturbed-box": {"per_component": True}}``.
    build : callable, optional
        Builds a child strategy by name; :func:`samprompt.get_strategy` passes itself here (see
        :attr:`builds_children`), so any installed plugin may be combined. Without it only the
        built-in strategies can be named.

    Each box is decoded with all the points, and the masks of the boxes are merged.
    """

    name = "combined"
    #: Tells the registry to pass ``build=get_strategy``: the registry builds the children, so
    #: this module needs no import of the registry.
    builds_children = True

    def __init__(
        self,
        strategies: Sequence[str] = ("mean-points", "perturbed-box"),
        params: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        build: StrategyBuilder | None = None,
    ) -> None:
        self._build = build or _build_builtin
        names = [strategies] if isinstance(strategies, str) else list(strategies)
        if not names or self.name in names:
            raise ConfigError(f"combined needs other strategies to combine, got {names}")
        self.strategies = names
        self.child_params = {k: dict(v) for k, v in (params or {}).items()}
        unknown = set(self.child_params) - set(names)
        if unknown:
            raise ConfigError(
                f"combined: params given for strategies not combined: {sorted(unknown)}"
            )
        self.children: list[PromptStrategy] = [
            self._build(n, **self.child_params.get(n, {})) for n in names
        ]

    @property
    def needs_mask_at_inference(self) -> bool:  # type: ignore[override]
        """True when any combined strategy needs the mask at inference."""
        return any(c.needs_mask_at_inference for c in self.children)

    def params(self) -> dict[str, Any]:
        return {"strategies": list(self.strategies), "params": self.child_params}

    def fit(self, train: Iterable[Sample]) -> None:
        """Fit each combined strategy on the same training samples."""
        samples = train if isinstance(train, Sequence) else list(train)
        for child in self.children:
            child.fit(samples)

    def training_prompt(self, sample: Sample, rng: np.random.Generator) -> Prompt:
        return Prompt.merge([c.training_prompt(sample, rng) for c in self.children])

    def inference_prompt(self, sample: Sample) -> Prompt:
        return Prompt.merge([c.inference_prompt(sample) for c in self.children])

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": self.params(),
            "fitted": {"children": [c.state_dict() for c in self.children]},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        params = state.get("params", {})
        self.__init__(  # type: ignore[misc]
            params.get("strategies", self.strategies), params.get("params"), build=self._build
        )
        for child, child_state in zip(
            self.children, state.get("fitted", {}).get("children", []), strict=False
        ):
            child.load_state_dict(child_state)


def _build_builtin(name: str, **params: Any) -> PromptStrategy:
    """Children of a ``Combined`` built without the registry: the built-in strategies only."""
    builtins: dict[str, type[BaseStrategy]] = {
        MeanPoints.name: MeanPoints,
        PerturbedBox.name: PerturbedBox,
    }
    if name not in builtins:
        raise ConfigError(
            f"combined: {name!r} is not a built-in strategy; build combined with "
            "samprompt.get_strategy('combined', ...) to combine installed plugins"
        )
    return builtins[name](**params)
