"""Coordinate frames, and the one name for SAM's 256-pixel low-res side.

- *original*: the image's own pixels ``(H, W)``;
- *input*: the image resized so its longest side is the encoder's ``img_size`` (1024 for SAM, 256
  for LiteMedSAM), padded bottom/right to a square;
- *low-res*: the decoder's output frame, :data:`LOW_RES` = 256 pixels a side (the input frame
  divided by 4 for SAM). Masks are trained and, by default, scored there (the paper's 256x256).

Conversions between the frames go through ``segment_anything``'s ``ResizeLongestSide``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from PIL import Image
from segment_anything.utils.transforms import ResizeLongestSide

from samprompt.errors import ConfigError

__all__ = [
    "LOW_RES",
    "RESOLUTIONS",
    "autocast",
    "check_resolution",
    "low_res_target",
    "resize_probability",
    "target_at",
    "valid_shape",
]

#: Side of the low-res frame masks are trained and (by default) scored in: 256, as in the paper.
LOW_RES = 256
#: Where predictions are scored: ``"low"`` (the low-res frame cropped to the image) or
#: ``"original"`` (each image's own size).
RESOLUTIONS = ("low", "original")


def check_resolution(resolution: str) -> None:
    """Refuse a resolution that is not one of :data:`RESOLUTIONS`."""
    if resolution not in RESOLUTIONS:
        raise ConfigError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")


def valid_shape(height: int, width: int, side: int) -> tuple[int, int]:
    """Size ``(h, w)`` of an ``height x width`` image resized so its longest side is ``side``.

    Examples
    --------
    >>> valid_shape(4020, 4892, LOW_RES)
    (210, 256)
    """
    h, w = ResizeLongestSide.get_preprocess_shape(height, width, side)
    return int(h), int(w)


def low_res_target(mask: np.ndarray, side: int = LOW_RES) -> np.ndarray:
    """The decoder's target: ``mask`` in the low-res frame, ``(side, side)`` bool.

    The mask is resized (box filter, threshold 0.5) so its longest side is ``side`` and padded with
    background at the bottom/right, exactly where SAM pads the image.
    """
    h, w = valid_shape(mask.shape[0], mask.shape[1], side)
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BOX)
    target = np.zeros((side, side), bool)
    target[:h, :w] = np.asarray(small) >= 128
    return target


def target_at(mask: np.ndarray, resolution: str, low_res: int = LOW_RES) -> np.ndarray:
    """Ground truth in the frame a prediction at ``resolution`` is scored in."""
    check_resolution(resolution)
    if resolution == "original":
        return mask
    h, w = valid_shape(mask.shape[0], mask.shape[1], low_res)
    return low_res_target(mask, low_res)[:h, :w]


def resize_probability(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """A float map resized bilinearly to ``(height, width)`` (PIL, float32)."""
    image = Image.fromarray(array.astype(np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def autocast(device: str | torch.device, precision: str) -> AbstractContextManager[object]:
    """bfloat16 autocast on ``device`` for ``precision="bf16"``, else a no-op context."""
    if precision != "bf16":
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
