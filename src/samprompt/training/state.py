"""The state of a training run as one value: what is checkpointed is exactly this, whole."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import attrs
import torch

from samprompt.early_stopping import EarlyStopProbe
from samprompt.training.records import EpochRecord

__all__ = ["RunState"]


@attrs.define(eq=False)
class RunState:
    """Everything a run needs to continue where it stopped.

    Attributes
    ----------
    module : torch.nn.Module
        The network being trained (SAM's mask decoder, with a learned prompt a
        :class:`~samprompt.prompts.tokens.DecoderAndPrompt`, or the U-Net); its weights are part of the state.
    optimizer : torch.optim.Optimizer
        Its optimizer (moments included).
    identity : dict
        What this run is (see :mod:`samprompt.run_identity`); a checkpoint of another run is
        refused.
    epoch : int
        Epochs finished.
    history : list of samprompt.EpochRecord
        One record per finished epoch.
    best_score, best_epoch, best_weights
        The best epoch by the monitored metric (higher score is better), and its weights.
    stale : int
        Epochs since the best one (what ``patience`` counts).
    probe : EarlyStopProbe or None
        With ``compare_patience``: what early stopping would have kept.
    extra : dict
        JSON-able state of what trains beside the network (the prompt strategy's fitted state).
    """

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    identity: dict[str, Any] = attrs.field(factory=dict)
    epoch: int = 0
    history: list[EpochRecord] = attrs.field(factory=list)
    best_score: float = -math.inf
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] = attrs.field(factory=dict)
    stale: int = 0
    probe: EarlyStopProbe | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if not self.best_weights:
            self.best_weights = copy.deepcopy(self.module.state_dict())

    def record(self, record: EpochRecord) -> None:
        """Add a finished epoch."""
        self.history.append(record)
        self.epoch = record.epoch

    def to_checkpoint(self) -> dict[str, Any]:
        """The whole state as plain tensors and values (``torch.save``-able, weights-only)."""
        return {
            "epoch": self.epoch,
            "decoder": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": [attrs.asdict(r) for r in self.history],
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_decoder": self.best_weights,
            "stale": self.stale,
            "early_stop_probe": self.probe.state_dict() if self.probe is not None else None,
            "strategy_state": self.extra,
            "identity": self.identity,
        }

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: Mapping[str, Any],
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
    ) -> RunState:
        """Restore :meth:`to_checkpoint`'s value into ``module`` and ``optimizer``."""
        module.load_state_dict(checkpoint["decoder"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        history = [EpochRecord(**r) for r in checkpoint["history"]]
        epoch, best_epoch = int(checkpoint["epoch"]), int(checkpoint["best_epoch"])
        probe = checkpoint.get("early_stop_probe")
        return cls(
            module,
            optimizer,
            dict(checkpoint.get("identity") or {}),
            epoch,
            history,
            float(checkpoint["best_score"]),
            best_epoch,
            dict(checkpoint["best_decoder"]),
            int(checkpoint.get("stale", epoch - best_epoch if history else 0)),
            EarlyStopProbe.from_state_dict(probe) if probe is not None else None,
            dict(checkpoint.get("strategy_state") or {}),
        )
