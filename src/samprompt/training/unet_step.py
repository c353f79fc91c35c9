"""One epoch of the U-Net baseline on in-memory tensors: the U-Net side of the shared loop."""

from __future__ import annotations

import numpy as np
import torch

from samprompt.errors import TrainingDivergedError
from samprompt.metrics import f1_iou
from samprompt.training.loop import check_finite, weights_finite

__all__ = ["UNetStep"]


class UNetStep:
    """Trains a network on ``(x, y)`` tensors for an epoch and validates it (a ``TrainStep``).

    Parameters
    ----------
    net : torch.nn.Module
        Maps ``(B, C, S, S)`` images to ``(B, 1, S, S)`` logits.
    train, val : tuple of torch.Tensor
        ``(images, targets)`` on the CPU; batches are moved to ``device``.
    optimizer : torch.optim.Optimizer
        Over ``net``'s parameters.
    loss_fn : torch.nn.Module
        On logits.
    batch_size, seed, device, lr
        Shuffling (``seed * 100003 + epoch``, as for SAM), placement and the lr for messages.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        loss_fn: torch.nn.Module,
        *,
        batch_size: int,
        seed: int,
        device: str,
        lr: float,
    ) -> None:
        self.net = net
        self.train, self.val = train, val
        self.optimizer, self.loss_fn = optimizer, loss_fn
        self.batch_size, self.seed, self.device, self.lr = batch_size, seed, device, lr
        self._epoch = 0

    def train_epoch(self, epoch: int) -> float:
        self._epoch = epoch + 1
        x, y = self.train
        self.net.train()
        order = torch.randperm(
            len(x), generator=torch.Generator().manual_seed(self.seed * 100003 + epoch)
        )
        total = 0.0
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            loss = self.loss_fn(self.net(x[idx].to(self.device)), y[idx].to(self.device))
            check_finite(self._epoch, "training loss", float(loss.detach()), self.lr)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * len(idx)
        self.net.eval()
        bad = weights_finite(self.net)
        if bad:
            raise TrainingDivergedError(
                f"epoch {self._epoch}: non-finite U-Net weights ({', '.join(bad[:3])}); "
                f"training stopped (lr={self.lr:g})"
            )
        return total / len(x)

    def validate(self) -> tuple[float, float]:
        x, y = self.val
        with torch.inference_mode():
            logits = torch.cat(
                [self.net(x[i : i + 16].to(self.device)).cpu() for i in range(0, len(x), 16)]
            )
            val_loss = float(self.loss_fn(logits, y))
        check_finite(self._epoch, "validation loss", val_loss, self.lr)
        f1, _ = f1_iou(logits[:, 0] > 0, y[:, 0] > 0)
        return val_loss, float(np.mean(f1))
