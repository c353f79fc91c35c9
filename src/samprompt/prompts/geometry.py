"""Mask geometry shared by the built-in strategies: components, boxes, well-inside points."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def components(mask: np.ndarray, min_fraction: float = 0.0) -> list[np.ndarray]:
    """Connected components (8-connectivity) of ``mask``, largest first; components smaller than
    ``min_fraction`` of the mask's area are dropped."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")
    total = sizes.sum()
    return [labels == (i + 1) for i in order if sizes[i] >= min_fraction * total]


def bounding_box(mask: np.ndarray) -> np.ndarray:
    """``(x0, y0, x1, y1)`` of the True pixels (inclusive pixel indices)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)


def box_coverage(mask: np.ndarray, box: np.ndarray) -> float:
    """Fraction of the mask's pixels inside ``box`` (XYXY, inclusive)."""
    ys, xs = np.nonzero(mask)
    inside = (xs >= box[0]) & (xs <= box[2]) & (ys >= box[1]) & (ys <= box[3])
    return float(inside.mean()) if xs.size else 0.0


def spaced_peaks(
    score: np.ndarray, region: np.ndarray, count: int, spacing: float
) -> list[tuple[int, int]]:
    """Up to ``count`` ``(row, col)`` positions of ``region`` with the highest ``score``, each at
    least ``spacing * sqrt(region area)`` pixels from those chosen before (deterministic: ties go
    to the first position in raster order)."""
    remaining = np.where(region, score, -np.inf)
    radius = spacing * float(np.sqrt(region.sum()))
    rows, cols = np.mgrid[: score.shape[0], : score.shape[1]]
    chosen: list[tuple[int, int]] = []
    while len(chosen) < count and np.isfinite(remaining).any():
        row, col = (int(v) for v in np.unravel_index(int(np.argmax(remaining)), remaining.shape))
        chosen.append((row, col))
        remaining[(rows - row) ** 2 + (cols - col) ** 2 < radius * radius] = -np.inf
    return chosen
