"""Mirrored training copies (``--augment``) and test-time averaging over flips (``--tta``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from samprompt import (
    EmbeddingCache,
    Evaluator,
    FinetuneConfig,
    Finetuner,
    LoadedSam,
    get_strategy,
)
from samprompt.baselines import UNetConfig, load_unet_model
from samprompt.cli import FLIP_NAMES, main
from samprompt.data import (
    FLIPS,
    Dataset,
    FolderDataset,
    Sample,
    check_flips,
    make_phantoms,
    with_flips,
    write_folder_dataset,
)
from samprompt.errors import ConfigError, RunFolderError
from samprompt.frames import valid_shape
from samprompt.protocols import FoldFit, cross_validate, run_folds, unet_cross_validate
from samprompt.segmenter import MeanMaskPrior
from samprompt.tta import FlipTTA
from tests.conftest import count_encoder_calls

MIRROR = {
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1],
    "transpose": lambda a: np.stack([a[:, j] for j in range(a.shape[1])]),  # column j -> row j
}


@settings(max_examples=30, deadline=None)
@given(
    image=arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from([3]))),
    kind=st.sampled_from(FLIPS),
)
def test_a_flipped_sample_is_the_mirror_and_flipping_twice_gives_it_back(
    image: np.ndarray, kind: str
) -> None:
    mask = image[..., 0] > 127
    data = with_flips([Sample("a", image, mask)], [kind])
    original, copy = data[0], data[1]
    assert copy.id == f"a~{kind}"
    np.testing.assert_array_equal(copy.image, MIRROR[kind](image))
    np.testing.assert_array_equal(copy.mask, MIRROR[kind](mask))
    twice = with_flips([copy], [kind])[1]
    np.testing.assert_array_equal(twice.image, original.image)


def test_flipped_copies_follow_the_originals_lazily() -> None:
    base = make_phantoms(3, 32, seed=1)
    data = with_flips(base, ["hflip", "vflip"])
    assert len(data) == 9
    assert data.ids[3:6] == [f"{i}~hflip" for i in base.ids]
    assert data.ids[6:] == [f"{i}~vflip" for i in base.ids]
    np.testing.assert_array_equal(data[7].image, base[1].image[::-1])
    assert with_flips(base, []) is base
    assert data.fingerprint() != base.fingerprint()


def test_bad_flips_are_one_line() -> None:
    with pytest.raises(ConfigError, match="unknown flip 'rot90'"):
        check_flips(["rot90"])
    with pytest.raises(ConfigError, match="must not repeat"):
        check_flips(["hflip", "hflip"])


def test_the_command_line_knows_the_same_flips(capsys: pytest.CaptureFixture[str]) -> None:
    assert FLIP_NAMES == FLIPS
    with pytest.raises(SystemExit) as exit_info:
        main(["cv", "--data", "x", "--out", "y", "--augment", "rot90"])
    assert exit_info.value.code == 2 and "rot90" in capsys.readouterr().err


class LeftHalf:
    """Probability 1 on the left half of every image, 0 elsewhere: not mirror-equivariant."""

    def predict_proba(self, samples: Dataset, *, resolution: str = "low") -> Iterator[np.ndarray]:
        for sample in samples:
            h, w = sample.size if resolution == "original" else valid_shape(*sample.size, 256)
            p = np.zeros((h, w), np.float32)
            p[:, : w // 2] = 1
            yield p


class Brightness:
    """Probability = pixel brightness at image size: mirror-equivariant."""

    def predict_proba(self, samples: Dataset, *, resolution: str = "low") -> Iterator[np.ndarray]:
        for sample in samples:
            yield sample.image.astype(np.float32) / 255


def test_tta_averages_the_mirrored_answers_mirrored_back() -> None:
    data = make_phantoms(2, (40, 30), seed=2)
    (left,) = list(FlipTTA(LeftHalf(), ["hflip"]).predict_proba(data[:1], resolution="original"))
    expected = np.zeros((40, 30))
    expected[:, :15] += 1
    expected[:, 15:] += 1  # the mirrored image's left half is the original's right half
    np.testing.assert_allclose(left, expected / 2)
    both = list(FlipTTA(LeftHalf(), ["hflip", "vflip"]).predict_proba(data, resolution="low"))
    h, w = valid_shape(40, 30, 256)
    assert [p.shape for p in both] == [(h, w)] * 2
    np.testing.assert_allclose(both[0][:, : w // 2], (1 + 0 + 1) / 3)
    for sample, p in zip(data, FlipTTA(Brightness(), FLIPS).predict_proba(data), strict=True):
        np.testing.assert_allclose(p, sample.image / 255, rtol=1e-6)  # equivariant: unchanged


@pytest.mark.parametrize("resolution", ["original", "low"])
def test_tta_transposes_a_tall_image_back_to_its_own_shape(resolution: str) -> None:
    data = make_phantoms(1, (40, 26), seed=4)
    (p,) = list(FlipTTA(LeftHalf(), ["transpose"]).predict_proba(data, resolution=resolution))
    h, w = (40, 26) if resolution == "original" else valid_shape(40, 26, 256)
    expected = np.zeros((h, w))
    expected[:, : w // 2] += 1
    expected[: h // 2, :] += 1  # the transposed image's left half is the original's top half
    np.testing.assert_allclose(p, expected / 2)


def test_tta_masks_use_its_threshold() -> None:
    data = make_phantoms(1, 32, seed=3)
    tta = FlipTTA(LeftHalf(), ["hflip"], threshold=0.6)
    ((_, mask),) = list(tta.predict_masks(data))
    assert not mask.any()  # every pixel averages to 0.5
    tta.threshold = 0.5
    assert next(tta.predict_masks(data))[1].all()


def _prior_fit(seen: list[list[str]]):  # type: ignore[no-untyped-def]
    def fit(train: Dataset, val: Dataset, fold_dir: object) -> FoldFit:
        seen.append(train.ids)
        model = MeanMaskPrior().fit(train)
        sweep = Evaluator("low", (0.3, 0.5, 0.7)).threshold_sweep(model, val)
        return FoldFit(model, sweep.best_threshold, sweep=tuple(sweep.rows()))

    return fit


def test_folds_train_on_mirrored_copies_and_score_with_tta(tmp_path: Path) -> None:
    data = make_phantoms(10, (48, 40), seed=4, jitter=0.2)
    seen: list[list[str]] = []
    common = {"k": 5, "seed": 0, "folds": [0], "resolution": "low", "meta": {}}
    result = run_folds("cv", data, _prior_fit(seen), out_dir=tmp_path / "a", identity={},
                       augment=["hflip"], tta=["vflip"], **common)  # type: ignore[arg-type]  # fmt: skip
    fold = result.folds[0]
    assert seen[0][6:] == [f"{i}~hflip" for i in seen[0][:6]]
    assert list(fold.train_ids) == seen[0][:6]  # the record keeps the original images
    # independent: the prior fitted on train + mirrors, averaged with its vflip at test time,
    # its threshold swept on validation with the averaging
    train = with_flips(data.subset([data.ids.index(i) for i in fold.train_ids]), ["hflip"])
    val = data.subset([data.ids.index(i) for i in fold.val_ids])
    test = data.subset([data.ids.index(r.id) for r in fold.test.per_image])
    averaged = FlipTTA(MeanMaskPrior().fit(train), ["vflip"])
    threshold = Evaluator("low", (0.3, 0.5, 0.7)).threshold_sweep(averaged, val).best_threshold
    assert fold.threshold == threshold
    expected = Evaluator("low").evaluate(averaged, test, threshold)
    assert fold.test.f1_mean == pytest.approx(expected.f1_mean, abs=1e-9)
    floor = Evaluator("low").evaluate(MeanMaskPrior().fit(train[:6]), test, 0.5)
    assert fold.prior.f1_mean == pytest.approx(floor.f1_mean, abs=1e-9)
    record = json.loads((tmp_path / "a" / "run.json").read_text())
    assert record["augment"] == ["hflip"] and record["tta"] == ["vflip"]
    with pytest.raises(RunFolderError):  # a plain run is not read back from a mirrored one
        run_folds("cv", data, _prior_fit([]), out_dir=tmp_path / "a", identity={}, **common)  # type: ignore[arg-type]


def test_cross_validation_encodes_each_mirror_once(
    tiny: LoadedSam, cache: EmbeddingCache, tmp_path: Path
) -> None:
    data = make_phantoms(10, 64, seed=6)
    calls = count_encoder_calls(tiny)
    config = FinetuneConfig(epochs=1, batch_size=8, lr=1e-3, thresholds=(0.5,))
    result = cross_validate(data, tiny, get_strategy("learned"), config, k=5, folds=[0, 1],
                            cache=cache, out_dir=tmp_path / "cv", progress=False,
                            augment=["hflip"], tta=["hflip"])  # fmt: skip
    # every image and its mirror once: training uses the mirrors of the training folds, the
    # averaging those of the validation and test folds
    assert calls[0] == 20
    assert {len(f.train_ids) for f in result.folds} == {6}


def test_evaluate_and_predict_average_a_saved_model(
    tiny: LoadedSam, cache: EmbeddingCache, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_phantoms(8, (64, 48), seed=7)
    write_folder_dataset(data[6:], tmp_path / "data")
    tuner = Finetuner(tiny, get_strategy("learned"), FinetuneConfig(epochs=1, lr=1e-3),
                      cache=cache, out_dir=tmp_path / "model", progress=False)  # fmt: skip
    tuner.fit(data[:4], data[4:6])
    common = ["--model", str(tmp_path / "model"), "--cache", str(cache.root), "-q"]
    args = ["evaluate", *common, "--data", str(tmp_path / "data"), "--tta", "hflip", "vflip"]
    assert main([*args, "--out", str(tmp_path / "eval")]) == 0
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    loaded = Finetuner.load(tmp_path / "model", cache=cache)
    averaged = FlipTTA(loaded, FLIPS, threshold=loaded.threshold)
    expected = Evaluator("low").evaluate(averaged, FolderDataset(tmp_path / "data"))
    plain = Evaluator("low").evaluate(loaded, FolderDataset(tmp_path / "data"))
    assert saved["f1_mean"] == pytest.approx(expected.f1_mean, abs=1e-9)
    assert saved["f1_mean"] != pytest.approx(plain.f1_mean, abs=1e-9)
    args = ["predict", *common, "--images", str(tmp_path / "data"), "--tta", "hflip"]
    assert main([*args, "--out", str(tmp_path / "masks")]) == 0
    for sample_id, mask in FlipTTA(loaded, ["hflip"], loaded.threshold).predict_masks(data[6:]):
        written = np.asarray(Image.open(tmp_path / "masks" / f"{sample_id}.png")) > 0
        np.testing.assert_array_equal(written, mask)
    (tmp_path / "boxes.json").write_text("{}")
    capsys.readouterr()
    assert (
        main([*args, "--boxes", str(tmp_path / "boxes.json"), "--out", str(tmp_path / "m2")]) == 2
    )
    assert "--tta with --boxes" in capsys.readouterr().err


def test_finetune_trains_on_the_mirrored_copies(tmp_path: Path, cache: EmbeddingCache) -> None:
    write_folder_dataset(make_phantoms(10, 48, seed=8), tmp_path / "data")
    args = ["finetune", "--data", str(tmp_path / "data"), "--checkpoint", "random:tiny",
            "--epochs", "1", "--cache", str(cache.root), "-q", "--augment", "vflip"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["data"]["train"]["n"] == 2 * metrics["split"]["train"]
    assert "mirrored copies (vflip)" in (tmp_path / "run" / "summary.md").read_text()


def test_the_unet_baseline_takes_the_same_mirroring(tmp_path: Path) -> None:
    data = make_phantoms(10, 48, seed=9)
    config = UNetConfig(epochs=1, channels=(4, 8), batch_size=4)
    result = unet_cross_validate(data, config, k=5, folds=[0], out_dir=tmp_path / "u",
                                 progress=False, augment=["vflip"], tta=["hflip"])  # fmt: skip
    record = json.loads((tmp_path / "u" / "fold_0" / "run.json").read_text())
    assert record["augment"] == ["vflip"] and record["tta"] == ["hflip"]
    assert record["data"]["train"]["n"] == 6  # the originals; the copies are made inside the fit
    fold = result.folds[0]
    test = data.subset([data.ids.index(r.id) for r in fold.test.per_image])
    model = FlipTTA(load_unet_model(tmp_path / "u" / "fold_0"), ["hflip"])
    expected = Evaluator("low").evaluate(model, test, fold.threshold)
    assert fold.test.f1_mean == pytest.approx(expected.f1_mean, abs=1e-6)
