"""``perturbed-box``: bounding boxes from the ground-truth mask, jittered during training."""

from __future__ import annotations

from typing import Any

import numpy as np

from samprompt.data.sample import Sample
from samprompt.errors import ConfigError, PromptError
from samprompt.prompts.geometry import bounding_box, box_coverage, components
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.strategy import BaseStrategy

__all__ = ["PerturbedBox"]


class PerturbedBox(BaseStrategy):
    """Boxes around the ground-truth mask; each side moves at random during training.

    At inference the box is the mask's exact bounding box: it comes from ground truth, so this is
    an **oracle** setting (``needs_mask_at_inference = True``), as in the paper.

    Parameters
    ----------
    max_shift : float
        Each side moves by an offset drawn uniformly from ``[-max_shift, +max_shift]`` times the
        box's width (left/right sides) or height (top/bottom sides). Default 0.1. The box is then
        clipped to the image.
    per_component : bool
        One box per connected component (e.g. one per lung) instead of one box around the whole
        mask; the masks predicted for the boxes are merged. Default False.
    min_component_fraction : float
        With ``per_component``, components smaller than this fraction of the mask are ignored
        (default 0.05).
    min_coverage : float
        A jittered box must keep at least this fraction of its mask (component) inside it; a draw
        that does not is redrawn, up to ``max_tries`` times, then the exact box is used. Default 0.9.
    max_tries : int
        Redraws before falling back to the exact box (default 20).
    """

    name = "perturbed-box"
    needs_mask_at_inference = True

    def __init__(
        self,
        max_shift: float = 0.1,
        per_component: bool = False,
        min_component_fraction: float = 0.05,
        min_coverage: float = 0.9,
        max_tries: int = 20,
    ) -> None:
        if not 0.0 <= max_shift < 0.5:
            raise ConfigError(f"max_shift must lie in [0, 0.5), got {max_shift}")
        if not 0.0 <= min_coverage <= 1.0:
            raise ConfigError(f"min_coverage must lie in [0, 1], got {min_coverage}")
        self.max_shift = float(max_shift)
        self.per_component = bool(per_component)
        self.min_component_fraction = float(min_component_fraction)
        self.min_coverage = float(min_coverage)
        self.max_tries = int(max_tries)

    def params(self) -> dict[str, Any]:
        return {
            "max_shift": self.max_shift,
            "per_component": self.per_component,
            "min_component_fraction": self.min_component_fraction,
            "min_coverage": self.min_coverage,
            "max_tries": self.max_tries,
        }

    def _regions(self, sample: Sample) -> list[np.ndarray]:
        mask = sample.require_mask()
        if not mask.any():
            raise PromptError(
                f"perturbed-box: sample {sample.id!r} has an empty mask, no box to draw"
            )
        if self.per_component:
            return components(mask, self.min_component_fraction)
        return [mask]

    def inference_prompt(self, sample: Sample) -> Prompt:
        """Exact bounding box(es) of the ground-truth mask (oracle)."""
        boxes = np.stack([bounding_box(region) for region in self._regions(sample)])
        return Prompt(sample.size, boxes=boxes)

    def training_prompt(self, sample: Sample, rng: np.random.Generator) -> Prompt:
        """Bounding box(es) with each side jittered by up to ``max_shift`` of the box side."""
        h, w = sample.size
        boxes = []
        for region in self._regions(sample):
            exact = bounding_box(region)
            side = np.array([exact[2] - exact[0] + 1, exact[3] - exact[1] + 1] * 2)
            chosen = exact
            for _ in range(self.max_tries):
                offsets = rng.uniform(-self.max_shift, self.max_shift, 4) * side
                box = exact + offsets
                box = np.clip(box, 0.0, [w - 1, h - 1, w - 1, h - 1])
                box = np.array(
                    [
                        min(box[0], box[2]),
                        min(box[1], box[3]),
                        max(box[0], box[2]),
                        max(box[1], box[3]),
                    ]
                )
                if box_coverage(region, box) >= self.min_coverage:
                    chosen = box
                    break
            boxes.append(chosen)
        return Prompt((h, w), boxes=np.stack(boxes))
