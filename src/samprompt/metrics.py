"""Per-image F1 (Dice) and IoU of binary masks, computed with MONAI's metrics.

Convention for empty masks (MONAI's with ``ignore_empty=False``): when the ground truth is empty,
F1 and IoU are 1 if the prediction is empty too and 0 otherwise, never NaN.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from monai.metrics import DiceMetric, MeanIoU

__all__ = ["f1_iou", "summarize"]

_dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
_iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)


def f1_iou(
    prediction: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """F1 (Dice) and IoU of each image in a batch.

    Parameters
    ----------
    prediction, truth : array-like
        ``(B, H, W)`` or ``(H, W)`` binary masks (bool or 0/1).

    Returns
    -------
    f1, iou : numpy.ndarray
        ``(B,)`` float64 each.

    Examples
    --------
    >>> import numpy as np
    >>> f1, iou = f1_iou(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 0]]))
    >>> round(float(f1[0]), 4), round(float(iou[0]), 4)
    (0.6667, 0.5)
    """
    pred = torch.as_tensor(np.array(prediction, dtype=bool))
    true = torch.as_tensor(np.array(truth, dtype=bool))
    if pred.shape != true.shape:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and truth {tuple(true.shape)} differ in shape"
        )
    if pred.ndim == 2:
        pred, true = pred[None], true[None]
    pred_f = pred[:, None].double()
    true_f = true[:, None].double()
    f1 = cast(torch.Tensor, _dice(pred_f, true_f))[:, 0].numpy()
    iou = cast(torch.Tensor, _iou(pred_f, true_f))[:, 0].numpy()
    return f1.astype(np.float64), iou.astype(np.float64)


def summarize(values: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and population standard deviation (ddof=0), as floats."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std())
