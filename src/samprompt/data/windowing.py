"""Intensities to 8 bits the way the field does it: CT windows and percentile clipping."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import numpy as np

from samprompt.errors import DatasetError

__all__ = ["WINDOWS", "Windowing"]

#: Named CT windows (level, width) in Hounsfield units, as radiology viewers define them.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "soft-tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


def _pair(value: Iterable[float]) -> tuple[float, float]:
    first, second = (float(v) for v in value)
    return first, second


def _optional_pair(value: Iterable[float] | None) -> tuple[float, float] | None:
    return None if value is None else _pair(value)


@attrs.frozen
class Windowing:
    """How a volume's intensities become 8 bits.

    Attributes
    ----------
    window : tuple of float or None
        ``(level, width)``: values at or below ``level - width / 2`` become 0, at or above
        ``level + width / 2`` become 255, linear in between (CT). None: percentile clipping.
    percentiles : tuple of float
        Per-volume percentiles clipped to 0 and 255 when ``window`` is None (0.5, 99.5).

    Examples
    --------
    >>> Windowing.named("lung").window
    (-600.0, 1500.0)
    >>> Windowing((40.0, 400.0)).to_uint8(np.array([-200.0, 40.0, 240.0])).tolist()
    [0, 128, 255]
    """

    window: tuple[float, float] | None = attrs.field(default=None, converter=_optional_pair)
    percentiles: tuple[float, float] = attrs.field(default=(0.5, 99.5), converter=_pair)

    def __attrs_post_init__(self) -> None:
        if self.window is not None and not (np.isfinite(self.window).all() and self.window[1] > 0):
            raise DatasetError(
                f"window (level, width) needs a finite level and width > 0, got {self.window}"
            )
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise DatasetError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}"
            )

    @classmethod
    def named(cls, name: str) -> Windowing:
        """A CT window by name (:data:`WINDOWS`)."""
        if name not in WINDOWS:
            raise DatasetError(
                f"unknown window {name!r}; known: {', '.join(WINDOWS)} or LEVEL WIDTH"
            )
        return cls(WINDOWS[name])

    def to_uint8(self, volume: np.ndarray) -> np.ndarray:
        """``volume`` as uint8 by this window (rounded to the nearest level)."""
        values = volume.astype(np.float64)
        if self.window is not None:
            level, width = self.window
            low, high = level - width / 2, level + width / 2
        else:
            low, high = (float(v) for v in np.percentile(values, self.percentiles))
        if high <= low:
            return np.zeros(values.shape, np.uint8)
        scaled = np.clip((values - low) / (high - low), 0.0, 1.0)
        result: np.ndarray = np.round(scaled * 255).astype(np.uint8)
        return result

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for ``model.json``)."""
        return {
            "window": list(self.window) if self.window else None,
            "percentiles": list(self.percentiles),
        }
