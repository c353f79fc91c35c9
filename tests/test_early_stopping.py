"""Best-epoch selection and early stopping on validation loss or F1, checked from the history
and by re-scoring the kept decoder independently (numpy Dice of its logits > 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from samprompt import (
    EmbeddingCache,
    EpochRecord,
    FinetuneConfig,
    Finetuner,
    LoadedSam,
    get_strategy,
    load_sam,
)
from samprompt.data import make_phantoms
from samprompt.data.preprocess import low_res_target
from samprompt.errors import ConfigError
from samprompt.protocols import FoldResult, cross_validate


def _val_f1_at_zero_logit(tuner: Finetuner, result_segmenter: object, val: list) -> float:
    scores = []
    for sample, logits in result_segmenter.low_res_logits(val):  # type: ignore[attr-defined]
        predicted = logits.numpy() > 0
        target = low_res_target(sample.mask, tuner.model.low_res_size)
        total = predicted.sum() + target.sum()
        scores.append(1.0 if total == 0 else 2 * (predicted & target).sum() / total)
    return float(np.mean(scores))


def _expected_stop(values: list[float], patience: int | None, higher_is_better: bool) -> int:
    """Epochs run: stop once the best value is ``patience`` epochs old."""
    best, best_epoch = None, 0
    for epoch, value in enumerate(values, start=1):
        if best is None or (value > best if higher_is_better else value < best):
            best, best_epoch = value, epoch
        if patience is not None and epoch - best_epoch >= patience:
            return epoch
    return len(values)


# val_f1 only: the val_loss default takes the same code path with the sign flipped
@pytest.mark.parametrize("monitor", ["val_f1"])
def test_best_epoch_and_early_stop_follow_the_monitored_metric(
    monitor: str, tiny: LoadedSam, cache: EmbeddingCache
) -> None:
    data = make_phantoms(7, 64, seed=5, jitter=0.1)
    train, val = data[:4], data[4:]
    config = FinetuneConfig(
        epochs=6, batch_size=4, lr=3e-3, patience=2, monitor=monitor, thresholds=(0.5,)
    )
    tuner = Finetuner(tiny, get_strategy("mean-points"), config, cache=cache, progress=False)
    result = tuner.fit(train, val)
    history = result.history
    values = [r.val_f1 if monitor == "val_f1" else r.val_loss for r in history]
    higher = monitor == "val_f1"
    best = int(np.argmax(values) if higher else np.argmin(values)) + 1
    assert result.best_epoch == best
    # every epoch run was allowed by the rule, and the last one triggered it (or epochs ran out)
    assert len(history) == _expected_stop(values, 2, higher)
    if len(history) < config.epochs:
        assert len(history) - best == 2
    kept = _val_f1_at_zero_logit(tuner, result.segmenter, val)
    assert kept == pytest.approx(history[best - 1].val_f1, abs=1e-6)


def test_monitor_is_validated_and_recorded() -> None:
    with pytest.raises(ConfigError, match="monitor must be one of"):
        FinetuneConfig(monitor="val_iou")
    assert FinetuneConfig(monitor="val_f1").to_dict()["monitor"] == "val_f1"


def test_resume_keeps_the_best_score(tmp_path: Path) -> None:
    """Interrupted after epoch 4, resumed from epoch 3's checkpoint: the same best epoch,
    weights and early-stopping record as a whole run."""
    data = make_phantoms(6, 64, seed=6, jitter=0.1)
    config = FinetuneConfig(
        epochs=4,
        batch_size=4,
        lr=1e-2,
        monitor="val_f1",
        compare_patience=1,
        thresholds=(0.5, 0.6),
    )
    cache = EmbeddingCache(tmp_path / "cache", progress=False)

    def tuner(folder: str) -> Finetuner:
        return Finetuner(
            load_sam("random:tiny"),
            get_strategy("mean-points"),
            config,
            cache=cache,
            out_dir=tmp_path / folder,
            progress=False,
        )

    whole = tuner("whole").fit(data[:4], data[4:])
    interrupted = tuner("parts")

    def stop(record: EpochRecord) -> None:
        if record.epoch == 4:
            raise KeyboardInterrupt

    interrupted.on_epoch_end.append(stop)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(data[:4], data[4:])
    resumed = tuner("parts").fit(data[:4], data[4:], resume=True)
    assert [r.val_f1 for r in resumed.history] == [r.val_f1 for r in whole.history]
    assert resumed.best_epoch == whole.best_epoch
    for name, tensor in whole.decoder_state.items():
        assert torch.equal(resumed.decoder_state[name], tensor), name
    # what early stopping would have kept survives the interruption too
    assert whole.early_stop is not None and resumed.early_stop is not None
    # fired after epoch 3: recorded in that epoch's checkpoint and read back from it
    assert (whole.early_stop.epochs_run, whole.early_stop.kept_epoch) == (3, 2)
    assert resumed.early_stop == whole.early_stop
    for name, tensor in whole.early_stop.decoder_state.items():
        assert torch.equal(resumed.early_stop.decoder_state[name], tensor), name


def _short_run(epochs: int, **changes: object) -> FinetuneConfig:
    return FinetuneConfig(
        epochs=epochs, batch_size=4, lr=3e-3, thresholds=(0.5, 0.6, 0.7), **changes
    )


def test_compare_patience_records_exactly_the_early_stopped_run(cache: EmbeddingCache) -> None:
    """A run of all epochs with ``compare_patience=1`` holds what a ``patience=1`` run of the
    same seed ends with: epochs, kept epoch, validation sweep and (bitwise) decoder."""
    data = make_phantoms(7, 64, seed=5, jitter=0.1)

    def fit(config: FinetuneConfig) -> object:
        tuner = Finetuner(
            load_sam("random:tiny"),
            get_strategy("mean-points"),
            config,
            cache=cache,
            progress=False,
        )
        return tuner.fit(data[:4], data[4:])

    full, stopped = fit(_short_run(6, compare_patience=1)), fit(_short_run(6, patience=1))
    outcome = full.early_stop  # type: ignore[attr-defined]
    assert len(full.history) == 6 and outcome.stopped  # type: ignore[attr-defined]
    assert outcome.epochs_run == len(stopped.history) < 6  # type: ignore[attr-defined]
    assert outcome.kept_epoch == stopped.best_epoch  # type: ignore[attr-defined]
    assert outcome.threshold == stopped.threshold  # type: ignore[attr-defined]
    assert outcome.sweep.rows() == stopped.sweep.rows()  # type: ignore[attr-defined]
    for name, tensor in stopped.decoder_state.items():  # type: ignore[attr-defined]
        assert torch.equal(outcome.decoder_state[name], tensor), name
    # the fixed run keeps its own (different) decoder
    assert full.best_epoch != outcome.kept_epoch  # type: ignore[attr-defined]
    assert not all(
        torch.equal(full.decoder_state[n], t)  # type: ignore[attr-defined]
        for n, t in outcome.decoder_state.items()
    )


def test_cross_validation_scores_what_early_stopping_would_keep(cache: EmbeddingCache) -> None:
    """The fold record of a fixed run equals the test scores of a real early-stopped run."""
    data = make_phantoms(9, 64, seed=5, jitter=0.1)

    def fold(config: FinetuneConfig) -> FoldResult:
        model, strategy = load_sam("random:tiny"), get_strategy("mean-points")
        result = cross_validate(
            data, model, strategy, config, k=3, folds=[0], cache=cache, progress=False
        )
        return result.folds[0]

    fixed, early = fold(_short_run(4, compare_patience=1)), fold(_short_run(4, patience=1))
    record = fixed.early_stop
    assert record is not None and record["stopped"]
    assert record["epochs_run"] == len(early.history) < record["epochs_fixed"] == 4
    assert record["threshold"] == early.threshold
    assert (record["f1_mean"], record["iou_mean"]) == (early.test.f1_mean, early.test.iou_mean)
    assert record["f1_mean"] != fixed.test.f1_mean
    seconds = [h["seconds"] for h in fixed.history]
    assert record["training_s"] == pytest.approx(sum(seconds[: record["epochs_run"]]))
    assert record["training_s_fixed"] == pytest.approx(sum(seconds))
    assert FoldResult.from_dict(fixed.to_dict()).early_stop == record


def test_compare_patience_is_validated_and_left_out_of_old_identities() -> None:
    with pytest.raises(ConfigError, match="cannot be combined with patience=3"):
        FinetuneConfig(patience=3, compare_patience=5)
    with pytest.raises(ConfigError, match="compare_patience must be >= 1"):
        FinetuneConfig(compare_patience=0)
    assert "compare_patience" not in FinetuneConfig().to_dict()
    recorded = FinetuneConfig(compare_patience=4).to_dict()
    assert FinetuneConfig.from_dict(recorded).compare_patience == 4
