"""The epoch loop shared by every trainer, and its epoch-end handlers.

A trainer supplies a :class:`TrainStep` (what one epoch of training and one validation pass do)
and a list of handlers; the loop times each epoch, records it in the :class:`RunState` and calls
the handlers in order. Best-epoch tracking, the early-stopping probe and checkpointing are such
handlers, each with one job.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from samprompt.errors import TrainingDivergedError
from samprompt.training.records import EpochRecord
from samprompt.training.state import RunState

__all__ = [
    "EpochHandler",
    "TrainStep",
    "checkpoint_every",
    "check_finite",
    "observe_probe",
    "run_epochs",
    "track_best",
]

logger = logging.getLogger(__name__)

#: Called after every epoch with the run's state (its last history entry is the new epoch).
EpochHandler = Callable[[RunState], None]


class TrainStep(Protocol):
    """What one epoch of a particular model does; the loop does the rest."""

    def train_epoch(self, epoch: int) -> float:
        """Train one epoch (``epoch`` is 0-based) and return the mean training loss."""
        ...

    def validate(self) -> tuple[float, float]:
        """Validation loss and mean F1 at threshold 0.5."""
        ...


def check_finite(epoch: int, what: str, value: float, lr: float) -> None:
    """Stop training at the first non-finite loss; nothing of that epoch is saved."""
    if not np.isfinite(value):
        raise TrainingDivergedError(
            f"epoch {epoch}: the {what} is {value:.4g}, not finite; training stopped and "
            f"nothing from this epoch was saved (lr={lr:g}: try a lower learning rate)"
        )


def run_epochs(
    step: TrainStep,
    state: RunState,
    *,
    epochs: int,
    handlers: Sequence[EpochHandler],
    patience: int | None = None,
    desc: str = "training",
    progress: bool = True,
) -> RunState:
    """Train from ``state.epoch`` to ``epochs``: ``train_epoch(); validate(); handlers``.

    With ``patience``, stops before an epoch once the best epoch is ``patience`` epochs old
    (``state.stale``, kept by :func:`track_best`).
    """
    bar = tqdm(
        range(state.epoch, epochs),
        desc=desc,
        unit="epoch",
        initial=state.epoch,
        total=epochs,
        disable=not progress,
    )
    for epoch in bar:
        if patience is not None and state.stale >= patience:
            logger.info("early stop after epoch %d: best at epoch %d", epoch, state.best_epoch)
            break
        tick = time.perf_counter()
        train_loss = step.train_epoch(epoch)
        val_loss, val_f1 = step.validate()
        record = EpochRecord(epoch + 1, train_loss, val_loss, val_f1, time.perf_counter() - tick)
        state.record(record)
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}", f1=f"{val_f1:.3f}")
        for handler in handlers:
            handler(state)
    bar.close()
    return state


def track_best(monitor: str) -> EpochHandler:
    """Keep the best epoch by ``monitor`` (``"val_loss"``: lowest; ``"val_f1"``: highest)."""

    def handler(state: RunState) -> None:
        last = state.history[-1]
        score = -last.val_loss if monitor == "val_loss" else last.val_f1
        if score > state.best_score:
            state.best_score, state.best_epoch, state.stale = score, last.epoch, 0
            state.best_weights = copy.deepcopy(state.module.state_dict())
        else:
            state.stale += 1

    return handler


def observe_probe(keep_best: bool) -> EpochHandler:
    """Let the early-stopping probe (if any) see the epoch (after :func:`track_best`)."""

    def handler(state: RunState) -> None:
        if state.probe is not None:
            state.probe.observe(
                state.epoch,
                state.stale,
                state.best_epoch,
                state.best_weights,
                state.module.state_dict(),
                keep_best,
            )

    return handler


def checkpoint_every(every: int, epochs: int, save: Callable[[RunState], None]) -> EpochHandler:
    """Call ``save`` every ``every`` epochs and after the last (never when ``every`` is 0)."""

    def handler(state: RunState) -> None:
        if every and (state.epoch % every == 0 or state.epoch == epochs):
            save(state)

    return handler


def on_record(callbacks: Sequence[Callable[[EpochRecord], None]]) -> EpochHandler:
    """Hand each new :class:`EpochRecord` to user callbacks."""

    def handler(state: RunState) -> None:
        for callback in callbacks:
            callback(state.history[-1])

    return handler


def weights_finite(module: torch.nn.Module) -> list[str]:
    """Names of ``module``'s parameters holding a non-finite value."""
    return [n for n, p in module.named_parameters() if not bool(torch.isfinite(p).all())]
