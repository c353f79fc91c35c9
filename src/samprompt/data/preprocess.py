"""SAM's preprocessing, done with ``segment_anything``'s own ``ResizeLongestSide`` and the
model's normalisation, and the low-resolution target masks the decoder is trained on.

Coordinate frames: the *original* frame is the image's own pixels ``(H, W)``; the *input* frame
is the image resized so its longest side is ``img_size`` (1024 for SAM), padded bottom/right to a
square; the *low-res* frame is the input frame divided by 4 (256x256 for SAM).
"""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from samprompt.frames import low_res_target, valid_shape

__all__ = [
    "PREPROCESSING_VERSION",
    "low_res_target",
    "preprocess_image",
    "to_rgb",
    "valid_shape",
]

#: Bumped whenever preprocessing changes, so cached embeddings of older versions are not reused.
PREPROCESSING_VERSION = "1"


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Return an ``(H, W, 3)`` uint8 view of a grey or RGB image (grey is repeated)."""
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return image


def preprocess_image(sam: Sam, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize, normalise and pad one image for SAM's image encoder.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The model whose ``img_size``, ``pixel_mean`` and ``pixel_std`` are used.
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, 3)`` uint8 in the original frame.

    Returns
    -------
    tensor : torch.Tensor
        ``(1, 3, S, S)`` float32 on the model's device, ``S = img_size``.
    input_size : tuple of int
        ``(h, w)`` of the resized image inside the padded square.
    """
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    resized = transform.apply_image(to_rgb(image))
    tensor = torch.as_tensor(resized, device=sam.device).permute(2, 0, 1)[None].float()
    return sam.preprocess(tensor), (int(resized.shape[0]), int(resized.shape[1]))
