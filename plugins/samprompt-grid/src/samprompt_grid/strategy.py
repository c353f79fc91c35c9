"""The ``grid-points`` strategy and its pluggy hook implementation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from samprompt import BaseStrategy, Prompt, PromptError, PromptStrategy, Sample
from samprompt.hookspecs import hookimpl


class GridPoints(BaseStrategy):
    """A ``rows x cols`` grid over the training mean mask's bounding box, labelled by the mean.

    Parameters
    ----------
    rows, cols : int
        Grid size (default 3 x 4).
    threshold : float
        Grid points where the mean mask is at least this are foreground (default 0.5).
    """

    name = "grid-points"
    needs_mask_at_inference = False

    def __init__(self, rows: int = 3, cols: int = 4, threshold: float = 0.5) -> None:
        self.rows, self.cols, self.threshold = int(rows), int(cols), float(threshold)
        self.unit_points: np.ndarray | None = None
        self.labels: np.ndarray | None = None

    def params(self) -> dict[str, Any]:
        return {"rows": self.rows, "cols": self.cols, "threshold": self.threshold}

    def fit(self, train: Iterable[Sample]) -> None:
        grid = 128
        masks = [
            np.asarray(Image.fromarray(s.require_mask().astype(np.float32)).resize((grid, grid)))
            for s in train
        ]
        if not masks:
            raise PromptError("grid-points: empty training split")
        mean = np.mean(masks, axis=0)
        rows, cols = np.nonzero(mean >= self.threshold)
        if rows.size == 0:
            raise PromptError("grid-points: the mean mask is empty")
        ys = np.linspace(rows.min(), rows.max(), self.rows)
        xs = np.linspace(cols.min(), cols.max(), self.cols)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        picks = mean[yy.round().astype(int), xx.round().astype(int)]
        self.unit_points = (np.stack([xx.ravel(), yy.ravel()], axis=1) + 0.5) / grid
        self.labels = (picks.ravel() >= self.threshold).astype(np.int64)

    def inference_prompt(self, sample: Sample) -> Prompt:
        if self.unit_points is None or self.labels is None:
            raise PromptError("grid-points is not fitted")
        h, w = sample.size
        xy = np.clip(self.unit_points * [w, h] - 0.5, 0, [w - 1, h - 1])
        return Prompt((h, w), points=xy, point_labels=self.labels)

    def fitted_state(self) -> dict[str, Any]:
        if self.unit_points is None or self.labels is None:
            return {}
        return {"unit_points": self.unit_points.tolist(), "labels": self.labels.tolist()}

    def load_fitted(self, fitted: Mapping[str, Any]) -> None:
        if fitted:
            self.unit_points = np.asarray(fitted["unit_points"], dtype=float)
            self.labels = np.asarray(fitted["labels"], dtype=np.int64)


@hookimpl
def samprompt_prompt_strategies() -> Sequence[type[PromptStrategy]]:
    return [GridPoints]
