from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from samprompt import DatasetError, Sample
from samprompt.data import (
    FolderDataset,
    MontgomeryDataset,
    ShenzhenDataset,
    cv_splits,
    kfold_indices,
    low_res_target,
    make_phantoms,
    read_image,
    train_val_test_split,
    write_folder_dataset,
)
from tests.conftest import shared_dataset


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)


def test_sample_validates_types() -> None:
    with pytest.raises(DatasetError, match="'a': image must be"):
        Sample("a", np.zeros((4, 4), np.float32))
    with pytest.raises(DatasetError, match="'b': mask must be a bool array"):
        Sample("b", np.zeros((4, 4), np.uint8), np.zeros((4, 5), bool))


def test_folder_reader_accepts_grey_rgb_16bit_and_both_mask_codings(tmp_path: Path) -> None:
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 5:20] = 1
    _save(tmp_path / "images" / "grey.png", np.full((20, 30), 7, np.uint8))
    _save(tmp_path / "masks" / "grey.png", mask)  # {0, 1}
    _save(tmp_path / "images" / "rgb.png", np.zeros((20, 30, 3), np.uint8))
    _save(tmp_path / "masks" / "rgb.png", mask * 255)  # {0, 255}
    ramp = np.tile(np.linspace(0, 60000, 30).astype(np.uint16), (20, 1))
    Image.fromarray(ramp).save(tmp_path / "images" / "deep.tif")
    _save(tmp_path / "masks" / "deep.png", mask * 255)
    data = FolderDataset(tmp_path)
    assert data.ids == ["deep", "grey", "rgb"]
    deep, grey, rgb = data
    assert grey.image.shape == (20, 30) and rgb.image.shape == (20, 30, 3)
    assert deep.image.dtype == np.uint8 and deep.image.min() == 0 and deep.image.max() == 255
    for sample in data:
        assert np.array_equal(sample.mask, mask.astype(bool))


def test_folder_reader_lists_every_problem_at_once(tmp_path: Path) -> None:
    good = np.zeros((10, 10), np.uint8)
    _save(tmp_path / "images" / "ok.png", good)
    _save(tmp_path / "masks" / "ok.png", good)
    _save(tmp_path / "images" / "nomask.png", good)
    _save(tmp_path / "images" / "grey.png", good)
    _save(tmp_path / "masks" / "grey.png", np.full((10, 10), 128, np.uint8))
    _save(tmp_path / "images" / "size.png", good)
    _save(tmp_path / "masks" / "size.png", np.zeros((12, 10), np.uint8))
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    _save(tmp_path / "masks" / "broken.png", good)
    with pytest.raises(DatasetError) as info:
        FolderDataset(tmp_path)
    message = str(info.value)
    assert "4 problem(s)" in message
    for expected in (
        "nomask.png: no mask",
        "grey.png: mask values [128]",
        "size.png: mask size 10x12",
        "broken.png: unreadable image",
    ):
        assert expected in message
    with pytest.warns(UserWarning, match="skipped 4"):
        data = FolderDataset(tmp_path, skip_invalid=True)
    assert data.ids == ["ok"]


def test_montgomery_and_shenzhen_layouts(tmp_path: Path) -> None:
    left = np.zeros((16, 16), np.uint8)
    left[2:10, 1:6] = 255
    right = np.zeros((16, 16), np.uint8)
    right[2:10, 9:14] = 255
    _save(tmp_path / "mc" / "CXR_png" / "MC_1.png", np.zeros((16, 16), np.uint8))
    _save(tmp_path / "mc" / "ManualMask" / "leftMask" / "MC_1.png", left)
    _save(tmp_path / "mc" / "ManualMask" / "rightMask" / "MC_1.png", right)
    mc = MontgomeryDataset(tmp_path / "mc")
    assert np.array_equal(mc[0].mask, (left | right) > 0)
    _save(tmp_path / "sz" / "CXR_png" / "SZ_1.png", np.zeros((16, 16), np.uint8))
    _save(tmp_path / "sz" / "mask" / "SZ_1_mask.png", left)
    sz = ShenzhenDataset(tmp_path / "sz")
    assert sz.ids == ["SZ_1"] and sz[0].mask.sum() == (left > 0).sum()


def test_write_and_read_back(tmp_path: Path) -> None:
    phantoms = make_phantoms(3, (40, 60), seed=2)
    back = FolderDataset(write_folder_dataset(phantoms, tmp_path))
    for a, b in zip(phantoms, back, strict=True):
        assert a.id == b.id and np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


def test_sixteen_bit_window_is_percentile_based(tmp_path: Path) -> None:
    values = np.arange(1000, dtype=np.uint16).reshape(20, 50) * 50
    values[0, 0] = 65535  # an outlier must not squash the rest
    Image.fromarray(values).save(tmp_path / "x.tif")
    out = read_image(tmp_path / "x.tif")
    low, high = np.percentile(values, (0.5, 99.5))
    expected = np.round(np.clip((values - low) / (high - low), 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(out, expected)


@given(n=st.integers(3, 200), seed=st.integers(0, 10_000))
def test_split_partitions(n: int, seed: int) -> None:
    split = train_val_test_split(n, seed=seed)
    together = np.concatenate([split.train, split.val, split.test])
    assert sorted(together.tolist()) == list(range(n))
    assert len(split.val) == round(0.2 * n) and len(split.test) == round(0.2 * n)
    again = train_val_test_split(n, seed=seed)
    assert np.array_equal(split.train, again.train)


@given(n=st.integers(10, 300), k=st.integers(2, 6), seed=st.integers(0, 1000))
@settings(max_examples=50)
def test_cv_splits_test_each_sample_once_and_never_train_on_test(n: int, k: int, seed: int) -> None:
    splits = cv_splits(n, k, seed)
    tested = np.concatenate([s.test for s in splits])
    assert sorted(tested.tolist()) == list(range(n))
    for s in splits:
        assert not set(s.test) & (set(s.train) | set(s.val))
        assert not set(s.train) & set(s.val)
        assert len(s.train) + len(s.val) + len(s.test) == n
    assert [len(f) for f in kfold_indices(n, k, seed)] == [len(s.test) for s in splits]


def test_low_res_target_pads_like_sam() -> None:
    mask = np.ones((100, 200), bool)
    target = low_res_target(mask, 256)
    assert target.shape == (256, 256)
    assert target[:128].all() and not target[128:].any()


@pytest.mark.realdata
def test_real_montgomery_through_folder_reader() -> None:
    data = FolderDataset(shared_dataset("montgomery"))
    assert len(data) == 138
    for sample in (data[0], data[len(data) // 2], data[-1]):
        assert sample.id.startswith("MCUCXR_")
        assert sample.image.shape == (512, 512) and sample.image.dtype == np.uint8
        assert sample.mask is not None and sample.mask.shape == sample.image.shape
        fraction = sample.mask.mean()
        assert 0.05 < fraction < 0.5
