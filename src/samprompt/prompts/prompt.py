"""The :class:`Prompt` value type: points and boxes in the original image's pixel frame."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
from segment_anything.utils.transforms import ResizeLongestSide

from samprompt.errors import PromptError

__all__ = ["Prompt"]


def _size(value: Any) -> tuple[int, int]:
    return int(value[0]), int(value[1])


def _float_array(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.float64)


def _int_array(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=np.int64)


def _mask_array(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float32)
    return array[0] if array.ndim == 3 and array.shape[0] == 1 else array


@attrs.frozen(eq=False)
class Prompt:
    """Point and box prompts for one image, in the image's own pixel frame.

    Attributes
    ----------
    image_size : tuple of int
        ``(H, W)`` of the image the prompt belongs to.
    points : numpy.ndarray or None
        ``(N, 2)`` float, ``(x, y)`` pixel coordinates, ``0 <= x <= W - 1``, ``0 <= y <= H - 1``.
    point_labels : numpy.ndarray or None
        ``(N,)`` int, 1 for foreground and 0 for background points; given iff ``points`` is.
    boxes : numpy.ndarray or None
        ``(K, 4)`` float, ``(x0, y0, x1, y1)`` pixel corners (XYXY), inside the image,
        ``x0 <= x1`` and ``y0 <= y1``. Several boxes are decoded separately and their masks merged.
    mask_input : numpy.ndarray or None
        ``(S, S)`` float32 mask *logits* in SAM's low-res frame (the padded square input scaled to
        ``S = 4 x`` the embedding side: 256), SAM's dense ``mask_input`` prompt; a self-refining
        strategy passes the previous pass's logits here. Applies to every box of the prompt.

    A prompt with none of the three is allowed: the decoder then sees only what the strategy
    learned (:class:`~samprompt.prompts.tokens.PromptTokens`), or no prompt at all.

    Raises
    ------
    PromptError
        On wrong shapes, non-finite values, labels other than 0/1, or coordinates outside the image.

    Examples
    --------
    >>> p = Prompt((100, 200), points=[[150.0, 40.0]], point_labels=[1])
    >>> p.num_points, p.num_boxes
    (1, 0)
    """

    image_size: tuple[int, int] = attrs.field(converter=_size)
    points: np.ndarray | None = attrs.field(default=None, converter=_float_array)
    point_labels: np.ndarray | None = attrs.field(default=None, converter=_int_array)
    boxes: np.ndarray | None = attrs.field(default=None, converter=_float_array)
    mask_input: np.ndarray | None = attrs.field(default=None, converter=_mask_array, repr=False)

    def __attrs_post_init__(self) -> None:
        h, w = self.image_size
        if h < 1 or w < 1:
            raise PromptError(f"image_size must be positive, got {self.image_size}")
        if (self.points is None) != (self.point_labels is None):
            raise PromptError("points and point_labels must be given together")
        if self.points is not None and self.point_labels is not None:
            _check_points(self.points, self.point_labels, h, w)
        if self.boxes is not None:
            _check_boxes(self.boxes, h, w)
        if self.mask_input is not None:
            _check_mask_input(self.mask_input)

    @property
    def is_empty(self) -> bool:
        """True when the prompt holds no points, boxes or mask input."""
        return self.points is None and self.boxes is None and self.mask_input is None

    @property
    def num_points(self) -> int:
        """Number of points (0 when none)."""
        return 0 if self.points is None else int(self.points.shape[0])

    @property
    def num_boxes(self) -> int:
        """Number of boxes (0 when none)."""
        return 0 if self.boxes is None else int(self.boxes.shape[0])

    def to_input_frame(self, img_size: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Points ``(N, 2)`` and boxes ``(K, 4)`` in SAM's input frame (longest side ``img_size``),
        converted with ``segment_anything``'s ``ResizeLongestSide``."""
        transform = ResizeLongestSide(img_size)
        points = (
            None if self.points is None else transform.apply_coords(self.points, self.image_size)
        )
        boxes = None if self.boxes is None else transform.apply_boxes(self.boxes, self.image_size)
        return points, boxes

    @classmethod
    def merge(cls, prompts: list[Prompt]) -> Prompt:
        """The union of several prompts of the same image (points and boxes concatenated)."""
        if not prompts:
            raise PromptError("nothing to merge")
        size = prompts[0].image_size
        if any(p.image_size != size for p in prompts):
            raise PromptError("cannot merge prompts of different image sizes")
        pts = [p.points for p in prompts if p.points is not None]
        labels = [p.point_labels for p in prompts if p.point_labels is not None]
        boxes = [p.boxes for p in prompts if p.boxes is not None]
        masks = [p.mask_input for p in prompts if p.mask_input is not None]
        if len(masks) > 1:
            raise PromptError("cannot merge prompts that each carry a mask_input")
        return cls(
            size,
            points=np.concatenate(pts) if pts else None,
            point_labels=np.concatenate(labels) if labels else None,
            boxes=np.concatenate(boxes) if boxes else None,
            mask_input=masks[0] if masks else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (lists of floats), read back by :meth:`from_dict`."""
        return {
            "image_size": list(self.image_size),
            "points": None if self.points is None else self.points.tolist(),
            "point_labels": None if self.point_labels is None else self.point_labels.tolist(),
            "boxes": None if self.boxes is None else self.boxes.tolist(),
            "mask_input": None if self.mask_input is None else self.mask_input.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prompt:
        """Build a prompt from :meth:`to_dict` output."""
        return cls(
            data["image_size"],
            points=data.get("points"),
            point_labels=data.get("point_labels"),
            boxes=data.get("boxes"),
            mask_input=data.get("mask_input"),
        )

    def same_as(self, other: Prompt) -> bool:
        """True when both prompts hold exactly the same numbers."""
        return self.to_dict() == other.to_dict()


#: How far outside the image (in pixels) a coordinate may be and still count as inside.
_TOLERANCE = 1e-6


def _check_points(pts: np.ndarray, labels: np.ndarray, h: int, w: int) -> None:
    if pts.ndim != 2 or pts.shape[1] != 2 or labels.shape != (pts.shape[0],):
        raise PromptError(
            f"points must be (N, 2) with labels (N,), got {pts.shape} and {labels.shape}"
        )
    if not np.isfinite(pts).all():
        raise PromptError("points contain NaN or infinite values")
    if not np.isin(labels, (0, 1)).all():
        raise PromptError(f"point labels must be 0 or 1, got {np.unique(labels).tolist()}")
    tol = _TOLERANCE
    inside = (
        (pts >= -tol).all()
        and (pts[:, 0] <= w - 1 + tol).all()
        and (pts[:, 1] <= h - 1 + tol).all()
    )
    if not inside:
        raise PromptError(f"points outside the {w}x{h} image: {pts.tolist()}")


def _check_boxes(boxes: np.ndarray, h: int, w: int) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise PromptError(f"boxes must be (K, 4) XYXY, got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise PromptError("boxes contain NaN or infinite values")
    tol = _TOLERANCE
    bad = (
        (boxes[:, 0] > boxes[:, 2])
        | (boxes[:, 1] > boxes[:, 3])
        | (boxes[:, :2] < -tol).any(axis=1)
        | (boxes[:, 2] > w - 1 + tol)
        | (boxes[:, 3] > h - 1 + tol)
    )
    if bad.any():
        raise PromptError(f"boxes not inside the {w}x{h} image or not XYXY: {boxes[bad].tolist()}")


def _check_mask_input(mask: np.ndarray) -> None:
    if mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        raise PromptError(f"mask_input must be (S, S) low-res logits, got shape {mask.shape}")
    if not np.isfinite(mask).all():
        raise PromptError("mask_input contains NaN or infinite values")
