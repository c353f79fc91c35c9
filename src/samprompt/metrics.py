"""Per-image F1 (Dice) and IoU of binary masks, computed with MONAI's metrics.

Convention for empty masks (MONAI's with ``ignore_empty=False``): when the ground truth is empty,
F1 and IoU are 1 if the prediction is empty too and 0 otherwise, never NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from monai.metrics import compute_dice, compute_iou

__all__ = ["Scores", "f1_iou", "summarize"]


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
    f1 = compute_dice(pred_f, true_f, include_background=True, ignore_empty=False)[:, 0].numpy()
    iou = compute_iou(pred_f, true_f, include_background=True, ignore_empty=False)[:, 0].numpy()
    return f1.astype(np.float64), iou.astype(np.float64)


def summarize(values: np.ndarray | Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (ddof=0), as floats."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std())


@attrs.frozen
class Scores:
    """F1 and IoU as mean ± standard deviation: the one record every summary is written from.

    Examples
    --------
    >>> scores = Scores.of([0.9, 0.7], [0.8, 0.6])
    >>> round(scores.to_dict()["f1_mean"], 6), round(scores.to_dict("prior_")["prior_iou_std"], 6)
    (0.8, 0.1)
    """

    f1_mean: float
    f1_std: float
    iou_mean: float
    iou_std: float

    @classmethod
    def of(cls, f1: Sequence[float] | np.ndarray, iou: Sequence[float] | np.ndarray) -> Scores:
        """Mean ± std (ddof 0) of per-item F1 and IoU values."""
        f1_mean, f1_std = summarize(f1)
        iou_mean, iou_std = summarize(iou)
        return cls(f1_mean, f1_std, iou_mean, iou_std)

    def to_dict(self, prefix: str = "") -> dict[str, float]:
        """``{prefix}f1_mean``, ``{prefix}f1_std``, ``{prefix}iou_mean``, ``{prefix}iou_std``."""
        return {f"{prefix}{key}": value for key, value in attrs.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], prefix: str = "") -> Scores:
        """Inverse of :meth:`to_dict`."""
        return cls(*(float(data[f"{prefix}{f.name}"]) for f in attrs.fields(cls)))
