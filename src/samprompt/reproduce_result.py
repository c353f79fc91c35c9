"""The typed result of ``samprompt reproduce``: what ``results.json`` holds and ``report.md`` shows.

Every table of the report is rendered from a :class:`ReproduceResult` (see
:mod:`samprompt.reproduce_report`); :meth:`ReproduceResult.to_dict` is the ``results.json``
layout.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from samprompt.metrics import Scores, summarize
from samprompt.phase_clock import PhaseClock
from samprompt.protocols import ProtocolResult

__all__ = [
    "EarlyStopRow",
    "GridPoint",
    "ReproduceMeta",
    "ReproduceResult",
    "SummaryRow",
    "SweepRow",
    "Timing",
]


@attrs.frozen
class SummaryRow:
    """A protocol over its folds: mean ± std of the fold means, the prior's, the thresholds."""

    scores: Scores
    prior: Scores
    thresholds: tuple[float, ...]
    oracle: bool
    seconds: float | None = None

    @classmethod
    def of(cls, result: ProtocolResult, seconds: float | None = None) -> SummaryRow:
        """The row of a finished protocol."""
        summary = result.summary()
        return cls(
            Scores.from_dict(summary),
            Scores.from_dict(summary, "prior_"),
            tuple(f.threshold for f in result.folds),
            bool(result.meta.get("oracle", False)),
            seconds,
        )

    def to_dict(self) -> dict[str, Any]:
        """``f1_mean`` ... ``prior_iou_std``, ``thresholds``, ``oracle`` (and ``seconds``)."""
        data: dict[str, Any] = {
            **self.scores.to_dict(),
            **self.prior.to_dict("prior_"),
            "thresholds": list(self.thresholds),
            "oracle": self.oracle,
        }
        if self.seconds is not None:
            data["seconds"] = self.seconds
        return data


@attrs.frozen
class GridPoint:
    """One point of the learning-rate x weight-decay grid and its validation F1."""

    lr: float
    weight_decay: float
    val_f1: float


@attrs.frozen
class SweepRow:
    """Validation F1 and IoU at one threshold, mean over folds."""

    threshold: float
    f1_mean: float
    iou_mean: float

    @staticmethod
    def table(result: ProtocolResult) -> tuple[SweepRow, ...]:
        """The sweep of every fold of ``result``, averaged per threshold."""
        rows: dict[float, list[dict[str, float]]] = {}
        for fold in result.folds:
            for row in fold.sweep:
                rows.setdefault(float(row["threshold"]), []).append(row)
        return tuple(
            SweepRow(
                t,
                float(np.mean([r["f1_mean"] for r in rs])),
                float(np.mean([r["iou_mean"] for r in rs])),
            )
            for t, rs in sorted(rows.items())
        )


@attrs.frozen
class EarlyStopRow:
    """Early stopping against the fixed epochs over a protocol's folds."""

    patience: int
    monitor: str
    f1_fixed: tuple[float, float]
    f1_early: tuple[float, float]
    f1_difference: float
    epochs_fixed: tuple[int, ...]
    epochs_early: tuple[int, ...]
    training_s_fixed: float
    training_s_early: float

    @classmethod
    def of(cls, result: ProtocolResult) -> EarlyStopRow | None:
        """F1 of each (mean ± std over folds), their mean paired difference, and epochs and
        training seconds of each; None when the folds did not record early stopping."""
        rows = [(f, f.early_stop) for f in result.folds if f.early_stop is not None]
        if not rows or len(rows) != len(result.folds):
            return None
        fixed = [f.test.f1_mean for f, _ in rows]
        early = [float(e["f1_mean"]) for _, e in rows]
        first = rows[0][1]
        return cls(
            int(first["patience"]),
            str(first["monitor"]),
            summarize(fixed),
            summarize(early),
            float(np.mean(np.subtract(early, fixed))),
            tuple(int(e["epochs_fixed"]) for _, e in rows),
            tuple(int(e["epochs_run"]) for _, e in rows),
            sum(float(e["training_s_fixed"]) for _, e in rows),
            sum(float(e["training_s"]) for _, e in rows),
        )


@attrs.frozen
class Timing:
    """Wall time per phase of this invocation and of all invocations on the run folder together
    (:class:`~samprompt.phase_clock.PhaseClock`), and the training throughput of the whole run.

    ``all_timed`` is False when invocations before the first timed one worked on the folder:
    ``all_phases_s`` then leaves their time out.
    """

    total_s: float
    phases_s: dict[str, float]
    training_image_steps: int
    training_s: float
    image_steps_per_s: float | None
    all_phases_s: dict[str, float] = attrs.field(factory=dict)
    invocations: int = 1
    all_timed: bool = True

    @classmethod
    def of(cls, trained: list[ProtocolResult], clock: PhaseClock, total: float) -> Timing:
        """Image-steps and training seconds as recorded per epoch by every fine-tuning fold (so
        folds reused from an earlier invocation still count)."""
        steps = sum(len(f.history) * len(f.train_ids) for r in trained for f in r.folds)
        seconds = sum(float(h["seconds"]) for r in trained for f in r.folds for h in f.history)
        rate = steps / seconds if seconds > 0 else None
        return cls(
            total, dict(clock.spent), steps, seconds, rate, clock.totals(), clock.invocations,
            clock.complete,
        )  # fmt: skip

    def line(self) -> str:
        """One line: total and per-phase wall time, and the training throughput."""
        line = f"wall time {self.total_s:.0f} s ({_phases(self.phases_s)})"
        if self.invocations > 1:
            untimed = "" if self.all_timed else ", the earliest not timed"
            line += (
                f"; over {self.invocations} invocations{untimed}: "
                f"{sum(self.all_phases_s.values()):.0f} s ({_phases(self.all_phases_s)})"
            )
        if self.image_steps_per_s:
            line += (
                f"; training {self.training_image_steps} image-steps in {self.training_s:.0f} s "
                f"({self.image_steps_per_s:.1f}/s, validation included)"
            )
        return line


def _phases(seconds: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())


@attrs.frozen
class ReproduceMeta:
    """What the run was: model, data, protocol size, encoder calls, version."""

    samprompt_version: str
    dataset: str
    n_images: int
    test_dataset_images: int | None
    checkpoint: str
    sha256: str
    random_weights: bool
    variant: str
    seed: int
    folds: int
    epochs: int
    quick: bool
    encoder_calls: int
    seconds: float
    resolution: str = "low (256x256)"
    oracle_prompts: tuple[str, ...] = ("box", "both")
    budget: str = "paper"


@attrs.frozen
class ReproduceResult:
    """Every table and figure of a reproduction run."""

    zero_shot: dict[str, SummaryRow]
    grid: tuple[GridPoint, ...]
    chosen: GridPoint
    finetuned: dict[str, SummaryRow]
    sweep: dict[str, tuple[SweepRow, ...]]
    unet: SummaryRow
    prior: Scores
    cross_dataset: dict[str, SummaryRow]
    early_stopping: dict[str, EarlyStopRow]
    figures: dict[str, str]
    meta: ReproduceMeta
    timing: Timing
    #: The random-encoder control (point prompts, random-weights SAM), None when not run.
    control: SummaryRow | None = None
    control_checkpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` layout."""
        data: dict[str, Any] = {
            "zero_shot": {k: v.to_dict() for k, v in self.zero_shot.items()},
            "finetuned": {k: v.to_dict() for k, v in self.finetuned.items()},
            "sweep": {k: [attrs.asdict(r) for r in v] for k, v in self.sweep.items()},
            "cross_dataset": {k: v.to_dict() for k, v in self.cross_dataset.items()},
            "grid": [attrs.asdict(g) for g in self.grid],
            "chosen": {"lr": self.chosen.lr, "weight_decay": self.chosen.weight_decay},
            "unet": self.unet.to_dict(),
            "prior": self.prior.to_dict(),
        }
        if self.control is not None:
            data["control"] = {**self.control.to_dict(), "checkpoint": self.control_checkpoint}
        if self.early_stopping:
            data["early_stopping"] = {k: attrs.asdict(v) for k, v in self.early_stopping.items()}
        data["figures"] = dict(self.figures)
        data["meta"] = attrs.asdict(self.meta)
        data["timing"] = attrs.asdict(self.timing)
        return data
