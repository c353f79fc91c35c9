"""What one epoch reports, and the loss every trainer uses."""

from __future__ import annotations

import attrs
import torch
from monai.losses import DiceCELoss, DiceFocalLoss

from samprompt.config import FinetuneConfig

__all__ = ["EpochRecord", "loss_function"]


@attrs.frozen
class EpochRecord:
    """Losses and validation F1 (threshold 0.5, low-res) after one epoch.

    Examples
    --------
    >>> EpochRecord(epoch=1, train_loss=0.8, val_loss=0.7, val_f1=0.6, seconds=2.0).val_f1
    0.6
    """

    epoch: int
    train_loss: float
    val_loss: float
    val_f1: float
    seconds: float


def loss_function(config: FinetuneConfig) -> torch.nn.Module:
    """MONAI ``DiceFocalLoss`` (the paper's) or ``DiceCELoss`` on logits, as ``config`` says."""
    if config.loss == "dice_ce":
        return DiceCELoss(
            sigmoid=True, lambda_dice=config.lambda_dice, lambda_ce=config.lambda_other
        )
    return DiceFocalLoss(
        sigmoid=True, lambda_dice=config.lambda_dice, lambda_focal=config.lambda_other
    )
