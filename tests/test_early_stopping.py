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
    """Interrupted during epoch 3, resumed: the same best epoch and weights as a whole run."""
    data = make_phantoms(6, 64, seed=6, jitter=0.1)
    config = FinetuneConfig(epochs=4, batch_size=4, lr=3e-3, monitor="val_f1", thresholds=(0.5,))
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
        if record.epoch == 3:
            raise KeyboardInterrupt

    interrupted.on_epoch_end.append(stop)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(data[:4], data[4:])
    resumed = tuner("parts").fit(data[:4], data[4:], resume=True)
    assert [r.val_f1 for r in resumed.history] == [r.val_f1 for r in whole.history]
    assert resumed.best_epoch == whole.best_epoch
    for name, tensor in whole.decoder_state.items():
        assert torch.equal(resumed.decoder_state[name], tensor), name
