"""``refine``: a first prompt from another strategy, then passes prompted by the model's own
previous answer (boxes of what it found, and its low-res logits as SAM's mask input)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from segment_anything.modeling import Sam

from samprompt.data.sample import Sample
from samprompt.errors import ConfigError
from samprompt.prompts.combined import StrategyBuilder
from samprompt.prompts.geometry import bounding_box, components
from samprompt.prompts.learned import Learned
from samprompt.prompts.mean_points import MeanPoints
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.strategy import BaseStrategy, PromptStrategy
from samprompt.prompts.tokens import PromptTokens

__all__ = ["Refine", "boxes_from_logits"]


def boxes_from_logits(
    logits: np.ndarray, image_size: tuple[int, int], max_boxes: int, min_fraction: float
) -> np.ndarray:
    """``(K, 4)`` pixel boxes (XYXY, original frame) of the largest components of
    ``logits > 0``; ``logits`` is ``(S, S)`` in SAM's low-res frame (the padded square input
    scaled to ``S``). ``(0, 4)`` when nothing is predicted."""
    h, w = image_size
    side = logits.shape[-1]
    scale = max(h, w) / side  # low-res pixels -> original pixels
    valid = logits[: int(np.ceil(h / scale)), : int(np.ceil(w / scale))] > 0
    boxes = []
    for part in components(valid, min_fraction)[:max_boxes]:
        x0, y0, x1, y1 = bounding_box(part)
        boxes.append(
            [
                x0 * scale,
                y0 * scale,
                min((x1 + 1) * scale - 1, w - 1),
                min((y1 + 1) * scale - 1, h - 1),
            ]
        )
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


class Refine(BaseStrategy):
    """Self-refinement: ``passes`` more decoder passes, each prompted by the previous one.

    Pass 0 uses the ``first`` strategy's prompt (default ``learned``; any strategy that needs
    no mask at inference). Each further pass gets the boxes of the previous prediction's largest
    connected components (up to ``max_boxes``) and, with ``use_mask``, the previous low-res logits
    as SAM's dense ``mask_input``; where nothing was predicted, the first prompt is reused with the
    mask input. No ground truth is read at inference. In training the same passes run on the
    decoder's own (detached) predictions, so the decoder learns the prompts it will see, and the
    loss is the mean over passes.

    Parameters
    ----------
    first : str
        Registered strategy of the first pass (default ``"learned"``).
    first_params : mapping, optional
        Its parameters.
    passes : int
        Refinement passes after the first (default 1; 0 gives the first strategy's result).
    max_boxes : int
        Components of the previous mask that get a box (default 3).
    min_component_fraction : float
        Components smaller than this fraction of the predicted area get no box (default 0.05).
    use_mask : bool
        Pass the previous logits as SAM's mask input (default True).
    build : callable, optional
        Builds the first strategy by name (the registry passes :func:`samprompt.get_strategy`).
    """

    name = "refine"
    builds_children = True

    def __init__(
        self,
        first: str = "learned",
        first_params: Mapping[str, Any] | None = None,
        passes: int = 1,
        max_boxes: int = 3,
        min_component_fraction: float = 0.05,
        use_mask: bool = True,
        *,
        build: StrategyBuilder | None = None,
    ) -> None:
        if isinstance(passes, bool) or not isinstance(passes, int) or not 0 <= passes <= 8:
            raise ConfigError(f"refine: passes must be a whole number from 0 to 8, got {passes!r}")
        if isinstance(max_boxes, bool) or not isinstance(max_boxes, int) or max_boxes < 1:
            raise ConfigError(f"refine: max_boxes must be a whole number >= 1, got {max_boxes!r}")
        if first == self.name:
            raise ConfigError("refine: the first pass cannot itself be refine")
        self._build = build or _build_builtin
        self.first = first
        self.first_params = dict(first_params or {})
        self.passes = passes
        self.max_boxes = max_boxes
        self.min_component_fraction = float(min_component_fraction)
        self.use_mask = bool(use_mask)
        self.inner: PromptStrategy = self._build(first, **self.first_params)
        if self.inner.needs_mask_at_inference:
            raise ConfigError(
                f"refine: the first pass {first!r} reads the ground-truth mask at inference; "
                "refine is for prompts a deployment can make (e.g. learned, mean-points)"
            )

    @property
    def refine_passes(self) -> int:
        """Passes after the first (the decoder loop reads this)."""
        return self.passes

    @property
    def prompt_lr(self) -> float | None:
        """The first strategy's prompt learning rate, if it learns a prompt."""
        return getattr(self.inner, "prompt_lr", None)

    def params(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "first_params": self.first_params,
            "passes": self.passes,
            "max_boxes": self.max_boxes,
            "min_component_fraction": self.min_component_fraction,
            "use_mask": self.use_mask,
        }

    def fit(self, train: Iterable[Sample]) -> None:
        self.inner.fit(train)

    def training_prompt(self, sample: Sample, rng: np.random.Generator) -> Prompt:
        return self.inner.training_prompt(sample, rng)

    def inference_prompt(self, sample: Sample) -> Prompt:
        return self.inner.inference_prompt(sample)

    def refine_prompt(self, sample: Sample, previous: np.ndarray) -> Prompt:
        """The next pass's prompt from the previous pass's ``(S, S)`` low-res logits."""
        boxes = boxes_from_logits(
            previous, sample.size, self.max_boxes, self.min_component_fraction
        )
        mask = previous if self.use_mask else None
        if len(boxes):
            return Prompt(sample.size, boxes=boxes, mask_input=mask)
        first = self.inner.inference_prompt(sample)
        return Prompt(
            sample.size,
            points=first.points,
            point_labels=first.point_labels,
            boxes=first.boxes,
            mask_input=mask,
        )

    def prompt_tokens(self, sam: Sam) -> PromptTokens | None:
        """The first strategy's learned tokens, if it has any (used on every pass)."""
        make = getattr(self.inner, "prompt_tokens", None)
        return make(sam) if make is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {"params": self.params(), "fitted": {"first": self.inner.state_dict()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        params = dict(state.get("params", {}))
        unknown = sorted(set(params) - set(self.params()))
        if unknown:
            raise ConfigError(f"refine: its saved state names unknown parameters {unknown}")
        self.__init__(**params, build=self._build)  # type: ignore[misc]
        self.inner.load_state_dict(state.get("fitted", {}).get("first", {}))


def _build_builtin(name: str, **params: Any) -> PromptStrategy:
    """First strategies available without the registry."""
    builtins: dict[str, type[BaseStrategy]] = {Learned.name: Learned, MeanPoints.name: MeanPoints}
    if name not in builtins:
        raise ConfigError(
            f"refine: {name!r} is not a built-in strategy; build refine with "
            "samprompt.get_strategy('refine', ...) to refine an installed plugin"
        )
    return builtins[name](**params)
