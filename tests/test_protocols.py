from __future__ import annotations

import json
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch

from samprompt import EmbeddingCache, FinetuneConfig, LoadedSam, get_strategy
from samprompt.data import FolderDataset, make_phantoms
from samprompt.errors import ConfigError
from samprompt.evaluate import EvalResult, ImageScore
from samprompt.protocols import (
    FoldResult,
    ProtocolResult,
    cross_dataset,
    cross_dataset_folds,
    cross_validate,
    zero_shot,
)
from samprompt.runs import RunFolder
from samprompt.saved import load_sam_model
from tests.conftest import count_encoder_calls, shared_dataset


def test_cv_folds_partition_and_encoder_runs_once_per_image(
    tiny: LoadedSam, cache: EmbeddingCache, tmp_path: Path
) -> None:
    data = make_phantoms(10, 64, seed=6)
    calls = count_encoder_calls(tiny)
    config = FinetuneConfig(epochs=1, batch_size=8, lr=1e-3, thresholds=(0.5, 0.6))
    result = cross_validate(
        data,
        tiny,
        get_strategy("mean-points"),
        config,
        k=5,
        cache=cache,
        out_dir=tmp_path / "cv",
        progress=False,
    )
    assert calls[0] == 10  # 5 folds, every image seen by training, validation and test
    tested = [row.id for fold in result.folds for row in fold.test.per_image]
    assert sorted(tested) == sorted(data.ids)
    for fold in result.folds:
        test_ids = {r.id for r in fold.test.per_image}
        assert not test_ids & (set(fold.train_ids) | set(fold.val_ids))
        assert len(fold.train_ids) == 6 and len(fold.val_ids) == 2
    saved = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    fold_means = [f.test.f1_mean for f in result.folds]
    assert saved["f1_mean"] == pytest.approx(np.mean(fold_means)) and saved[
        "f1_std"
    ] == pytest.approx(np.std(fold_means))
    assert len(saved["per_image"]) == 10
    again = cross_validate(
        data,
        tiny,
        get_strategy("mean-points"),
        config,
        k=5,
        cache=cache,
        out_dir=tmp_path / "cv",
        progress=False,
    )
    assert calls[0] == 10 and again.summary() == result.summary()  # finished folds are read back


def test_zero_shot_and_cross_dataset_run(tiny: LoadedSam, cache: EmbeddingCache) -> None:
    data = make_phantoms(6, 64, seed=7)
    zs = zero_shot(data, tiny, get_strategy("perturbed-box"), k=3, cache=cache, progress=False)
    assert zs.name == "zero-shot" and len(zs.folds) == 3 and zs.meta["oracle"] is True
    other = make_phantoms(4, (48, 80), seed=8)
    config = FinetuneConfig(epochs=1, batch_size=8, lr=1e-3)
    cd = cross_dataset(
        data, other, tiny, get_strategy("mean-points"), config, cache=cache, progress=False
    )
    assert [r.id for r in cd.folds[0].test.per_image] == other.ids
    assert 0.0 <= cd.summary()["f1_mean"] <= 1.0


def test_cross_dataset_folds_scores_each_saved_fold_model_on_the_other_set(
    tiny: LoadedSam, cache: EmbeddingCache, tmp_path: Path
) -> None:
    data, other = make_phantoms(8, 64, seed=9), make_phantoms(5, (48, 80), seed=10)
    config = FinetuneConfig(epochs=1, lr=1e-3, thresholds=(0.5, 0.6), eval_resolution="original")
    strategy = get_strategy("mean-points")
    source = cross_validate(
        data, tiny, strategy, config, k=4, cache=cache, out_dir=tmp_path / "cv", progress=False
    )
    before = {k: v.clone() for k, v in tiny.sam.mask_decoder.state_dict().items()}
    calls = count_encoder_calls(tiny)
    cross = cross_dataset_folds(
        source, data, other, tiny, cache=cache, out_dir=tmp_path / "cross", progress=False
    )
    assert [f.fold for f in cross.folds] == [0, 1, 2, 3] and cross.name == "cross-dataset"
    for fold, trained in zip(cross.folds, source.folds, strict=True):
        assert fold.threshold == trained.threshold and fold.train_ids == trained.train_ids
        # independently: the saved fold model's masks, scored by numpy at each image's size
        saved = load_sam_model(tmp_path / "cv" / f"fold_{fold.fold}", cache=cache)
        masks = dict(saved.predict_masks(other))
        dice = [
            2 * (masks[s.id] & s.mask).sum() / (masks[s.id].sum() + s.mask.sum()) for s in other
        ]
        assert [r.id for r in fold.test.per_image] == other.ids
        assert fold.test.f1_mean == pytest.approx(np.mean(dice), abs=1e-6)
    means = [f.test.f1_mean for f in cross.folds]
    assert cross.summary()["f1_mean"] == pytest.approx(np.mean(means))
    assert cross.summary()["f1_std"] == pytest.approx(np.std(means))
    after = tiny.sam.mask_decoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the base decoder is restored
    assert calls[0] == 5  # the other set's images, once
    again = cross_dataset_folds(
        source, data, other, tiny, cache=cache, out_dir=tmp_path / "cross", progress=False
    )
    assert calls[0] == 5 and again.summary() == cross.summary()  # read back, not recomputed
    unsaved = attrs.evolve(source, folder=None)
    with pytest.raises(ConfigError, match="run it with out_dir"):
        cross_dataset_folds(unsaved, data, other, tiny, cache=cache, progress=False)
    assert source.folder is not None
    flipped = RunFolder(source.folder.root, {**source.folder.identity, "tta": ["hflip"]}, "same")
    with pytest.raises(ConfigError, match="test-time flips"):
        cross_dataset_folds(attrs.evolve(source, folder=flipped), data, other, tiny, cache=cache)
    with pytest.raises(ConfigError, match="images this dataset lacks"):
        cross_dataset_folds(source, other, other, tiny, cache=cache, progress=False)


def _fold(fold: int, f1: list[float]) -> FoldResult:
    rows = tuple(ImageScore(f"{fold}-{i}", v, v / 2) for i, v in enumerate(f1))
    prior = tuple(ImageScore(r.id, r.f1 / 4, r.iou / 4) for r in rows)
    result = EvalResult(rows, 0.5, "low")
    return FoldResult(fold, result, EvalResult(prior, 0.5, "low"), 0.5, (), ())


def test_one_fold_summary_spreads_over_its_images_and_several_over_fold_means() -> None:
    single = ProtocolResult("cross-dataset", (_fold(0, [0.9, 0.5, 0.7, 0.8]),)).summary()
    f1 = np.array([0.9, 0.5, 0.7, 0.8])
    assert single["f1_mean"] == pytest.approx(f1.mean())
    assert single["f1_std"] == pytest.approx(f1.std()) and single["f1_std"] > 0
    assert single["iou_std"] == pytest.approx((f1 / 2).std())
    assert single["prior_f1_std"] == pytest.approx((f1 / 4).std())
    folds = (_fold(0, [0.9, 0.5]), _fold(1, [0.6, 0.6]))
    several = ProtocolResult("cross-validation", folds).summary()
    assert several["f1_mean"] == pytest.approx(np.mean([0.7, 0.6]))
    assert several["f1_std"] == pytest.approx(np.std([0.7, 0.6]))


@pytest.mark.realdata
def test_mean_points_fall_inside_real_lungs() -> None:
    from samprompt.data import train_val_test_split

    data = FolderDataset(shared_dataset("montgomery"))
    split = train_val_test_split(len(data), seed=0)
    strategy = get_strategy("mean-points")
    strategy.fit(data.subset(split.train))
    inside = []
    for sample in data.subset(split.test):
        prompt = strategy.inference_prompt(sample)
        fg = prompt.points[prompt.point_labels == 1].round().astype(int)
        inside.append(bool(sample.mask[fg[:, 1], fg[:, 0]].all()))
    fraction = float(np.mean(inside))
    print(
        f"mean-points: all points inside the lungs for {fraction:.1%} of {len(inside)} test images"
    )
    assert fraction >= 0.9
