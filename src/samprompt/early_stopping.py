"""What early stopping would have given, measured inside a run that trains all its epochs.

On a CPU, training is deterministic for a seed and nothing in an epoch depends on the number of
epochs still to come, so a run with ``patience=N`` is exactly the first epochs of the same run
without it. A fixed-epoch run can therefore record, at the epoch where the patience rule would
have fired, the decoder that early stopping would have kept: the F1 difference between early
stopping and the fixed epochs is then measured on the same test images, at the cost of one extra
threshold sweep and test evaluation instead of a second training run. (On a GPU, where kernels
are not bitwise deterministic, the recorded decoder is a close stand-in, not an exact one.)
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs
import torch

from samprompt.evaluate import SweepResult

__all__ = ["EarlyStopOutcome", "EarlyStopProbe"]


@attrs.define
class EarlyStopProbe:
    """Watches a fixed-epoch run for the epoch where ``patience`` would have stopped it.

    Call :meth:`observe` after every epoch with the run's own bookkeeping; the first time the
    best epoch is ``patience`` epochs old, the decoder early stopping would have kept is held.
    """

    patience: int
    epochs_run: int | None = None
    kept_epoch: int | None = None
    decoder_state: dict[str, torch.Tensor] | None = None

    def observe(
        self,
        epochs_done: int,
        stale: int,
        best_epoch: int,
        best_state: Mapping[str, torch.Tensor],
        current_state: Mapping[str, torch.Tensor],
        keep_best: bool,
    ) -> None:
        """Record the stop the first time ``stale`` reaches the patience.

        ``best_state`` must be a snapshot the caller does not modify afterwards (the fine-tuner
        replaces its snapshot on improvement rather than writing into it).
        """
        if self.epochs_run is not None or stale < self.patience:
            return
        self.epochs_run = epochs_done
        self.kept_epoch = best_epoch if keep_best else epochs_done
        self.decoder_state = dict(best_state) if keep_best else copy.deepcopy(dict(current_state))

    def state_dict(self) -> dict[str, Any]:
        """For the resumable checkpoint."""
        return {
            "patience": self.patience,
            "epochs_run": self.epochs_run,
            "kept_epoch": self.kept_epoch,
            "decoder_state": self.decoder_state,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> EarlyStopProbe:
        """Inverse of :meth:`state_dict`."""
        return cls(
            int(state["patience"]),
            state["epochs_run"],
            state["kept_epoch"],
            state["decoder_state"],
        )


@attrs.frozen
class EarlyStopOutcome:
    """What ``patience`` early stopping would have given in a run that trained every epoch.

    Attributes
    ----------
    patience : int
        The patience (epochs) of the rule that was watched.
    monitor : str
        ``"val_loss"`` or ``"val_f1"``, as in :class:`~samprompt.FinetuneConfig`.
    epochs_run : int
        Epochs an early-stopped run would have trained.
    epochs_fixed : int
        Epochs this run trained.
    kept_epoch : int
        The epoch whose decoder early stopping would have kept.
    threshold : float
        The threshold the validation sweep picks for that decoder.
    sweep : SweepResult
        That sweep.
    decoder_state : dict of str to torch.Tensor
        That decoder's weights.
    """

    patience: int
    monitor: str
    epochs_run: int
    epochs_fixed: int
    kept_epoch: int
    threshold: float
    sweep: SweepResult = attrs.field(repr=False)
    decoder_state: dict[str, torch.Tensor] = attrs.field(repr=False, eq=False)

    @property
    def stopped(self) -> bool:
        """True when early stopping would have trained fewer epochs than the run did."""
        return self.epochs_run < self.epochs_fixed

    @contextmanager
    def applied(self, decoder: torch.nn.Module) -> Iterator[None]:
        """Load the early-stopped weights into ``decoder`` for the block, then put its own back."""
        own = copy.deepcopy(decoder.state_dict())
        decoder.load_state_dict(self.decoder_state)
        try:
            yield
        finally:
            decoder.load_state_dict(own)

    def summary(self) -> dict[str, Any]:
        """The JSON-serialisable fields (no weights)."""
        return {
            "patience": self.patience,
            "monitor": self.monitor,
            "epochs_run": self.epochs_run,
            "epochs_fixed": self.epochs_fixed,
            "kept_epoch": self.kept_epoch,
            "threshold": self.threshold,
            "stopped": self.stopped,
        }
