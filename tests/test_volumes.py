"""NIfTI volumes and DICOM images, built here while the tests run: slicing with a non-identity
affine and anisotropic spacing, windowing against numpy, splits by volume, masks written back
with the input's geometry, DICOM MONOCHROME1 and rescale, and bad files refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from samprompt.cli import main
from samprompt.data import read_image
from samprompt.data.splits import cv_splits, train_val_test_split
from samprompt.data.volumes import (
    NiftiDataset,
    VolumeReading,
    Windowing,
    parse_slice_id,
    write_volume_masks,
)
from samprompt.errors import DatasetError

#: Voxel axes (i, j, k) -> world (-y, x, z): a permuted, flipped, anisotropic (0.9, 0.7, 2.5 mm)
#: affine, so the canonical reorientation has real work to do.
AFFINE = np.array(
    [[0.0, 0.7, 0.0, 10.0], [-0.9, 0.0, 0.0, 5.0], [0.0, 0.0, 2.5, -3.0], [0.0, 0.0, 0.0, 1.0]]
)
SHAPE = (36, 40, 12)


def _phantom(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """CT-like intensities (HU) with an ellipsoid (label 1) and a small cube (label 2)."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    centre = np.array(SHAPE) / 2 + rng.uniform(-3, 3, 3)
    radii = np.array([9.0, 11.0, 3.5]) * rng.uniform(0.8, 1.2, 3)
    inside = ((i - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2
    inside = inside + ((k - centre[2]) / radii[2]) ** 2 <= 1
    labels = inside.astype(np.int16)
    labels[2:5, 2:5, 1:3] = 2
    volume = rng.normal(-700, 60, SHAPE) + inside * 750
    return volume.astype(np.float32), labels


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, AFFINE), str(path))


def write_volumes(root: Path, n: int = 5, layout: str = "images") -> Path:
    for case in range(n):
        volume, labels = _phantom(case)
        if layout == "images":
            _save(volume, root / "images" / f"case{case}.nii.gz")
            _save(labels, root / "masks" / f"case{case}.nii.gz")
        else:
            _save(volume, root / "imagesTr" / f"case{case}_0000.nii.gz")
            _save(labels, root / "labelsTr" / f"case{case}.nii.gz")
    return root


def _canonical(path: Path) -> np.ndarray:
    return np.asanyarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)


@pytest.mark.parametrize("layout", ["images", "nnunet"])
def test_slices_trace_back_to_their_volume_and_round_trip(tmp_path: Path, layout: str) -> None:
    root = write_volumes(tmp_path / "vol", 2, layout)
    data = NiftiDataset(root, VolumeReading(label=(1,), empty_fraction=0.0))
    assert data.groups == [parse_slice_id(i)[0] for i in data.ids]
    image_dir = "images" if layout == "images" else "imagesTr"
    mask_dir = "masks" if layout == "images" else "labelsTr"
    suffix = "" if layout == "images" else "_0000"
    for sample in data:
        case, axis, k = parse_slice_id(sample.id)
        assert axis == "z"
        labels = _canonical(root / mask_dir / f"{case}.nii.gz")[:, :, k]
        np.testing.assert_array_equal(sample.mask, labels == 1)
        assert sample.mask.any()  # empty_fraction 0: only slices with foreground
        pixels = _canonical(root / image_dir / f"{case}{suffix}.nii.gz")
        expected = Windowing().to_uint8(pixels)[:, :, k]
        np.testing.assert_array_equal(sample.image, expected)
    # the true masks, written back through the volume writer, are the input label volume
    out = tmp_path / "out"
    out.mkdir()
    every = NiftiDataset(root, VolumeReading(label=(1,)), masks=False)
    truth = NiftiDataset(root, VolumeReading(label=(1,), empty_fraction=1.0))

    def save(path: Path, image: object) -> None:
        nib.save(image, str(path))

    written = write_volume_masks(every, ((s.id, s.mask) for s in truth), out, save)
    for path in written:
        back = nib.load(str(path))
        source = nib.load(str(root / mask_dir / path.name))
        np.testing.assert_allclose(back.affine, AFFINE)
        assert back.shape == SHAPE
        np.testing.assert_array_equal(
            np.asanyarray(back.dataobj), np.asanyarray(source.dataobj) == 1
        )


def test_windowing_equals_numpy() -> None:
    values = np.random.default_rng(0).normal(0, 500, (20, 30))
    level, width = 40.0, 400.0
    expected = np.round(np.clip((values - (level - width / 2)) / width, 0, 1) * 255)
    np.testing.assert_array_equal(Windowing((level, width)).to_uint8(values), expected)
    low, high = np.percentile(values, (0.5, 99.5))
    expected = np.round(np.clip((values - low) / (high - low), 0, 1) * 255)
    np.testing.assert_array_equal(Windowing().to_uint8(values), expected)
    assert Windowing.named("lung").window == (-600.0, 1500.0)
    with pytest.raises(DatasetError, match="unknown window"):
        Windowing.named("liver")


def test_splits_never_mix_a_volumes_slices(tmp_path: Path) -> None:
    data = NiftiDataset(write_volumes(tmp_path / "vol", 5), VolumeReading(empty_fraction=0.5))
    groups = data.groups
    assert groups is not None and len(set(groups)) == 5
    splits = [
        *cv_splits(len(data), 5, 0, groups),
        train_val_test_split(len(data), seed=1, groups=groups),
    ]
    for split in splits:
        sides = [{groups[i] for i in part} for part in (split.train, split.val, split.test)]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        assert sum(map(len, (split.train, split.val, split.test))) == len(data)
    # and the subset of a split still knows its volumes
    assert set(data.subset(splits[0].test).groups or []) == {groups[splits[0].test[0]]}


def test_bad_volumes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    volume, labels = _phantom(0)
    cases = {
        "shape": (volume, labels[:, :, :-1], AFFINE, "differs from image"),
        "affine": (volume, labels, AFFINE * np.array([[2], [1], [1], [1]]), "affine differs"),
        "4d": (np.stack([volume, volume], axis=-1), labels, AFFINE, "expected a 3D volume"),
        "empty": (volume, np.zeros_like(labels), AFFINE, "empty label"),
    }
    for name, (image, mask, mask_affine, message) in cases.items():
        root = tmp_path / name
        _save(image, root / "images" / "c.nii.gz")
        (root / "masks").mkdir()
        nib.save(nib.Nifti1Image(mask, mask_affine), str(root / "masks" / "c.nii.gz"))
        argv = ["embed", "--data", str(root), "--format", "nifti", "--checkpoint", "random:tiny"]
        assert main([*argv, "--cache", str(tmp_path / "cache")]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("samprompt: error:") and message in err and "\n" not in err, err


def _dicom(path: Path, stored: np.ndarray, photometric: str, **extra: object) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def test_dicom_monochrome1_rescale_and_window(tmp_path: Path) -> None:
    stored = np.random.default_rng(1).integers(0, 4096, (24, 32))
    path = tmp_path / "xray.dcm"
    _dicom(path, stored, "MONOCHROME1", RescaleSlope=2, RescaleIntercept=-100,
           WindowCenter=3000, WindowWidth=4000)  # fmt: skip
    values = stored * 2.0 - 100
    expected = np.round(np.clip((values - 1000) / 4000, 0, 1) * 255)
    np.testing.assert_array_equal(read_image(path), 255 - expected)  # MONOCHROME1 inverted
    plain = tmp_path / "plain.dcm"
    _dicom(plain, stored, "MONOCHROME2")  # no window: percentile clipping, not inverted
    np.testing.assert_array_equal(read_image(plain), Windowing().to_uint8(stored.astype(float)))
    empty = tmp_path / "empty.dcm"
    _dicom(empty, stored, "MONOCHROME2")
    from pydicom import dcmread

    ds = dcmread(str(empty))
    del ds.PixelData
    ds.save_as(str(empty))
    with pytest.raises(DatasetError, match="without pixel data"):
        read_image(empty)


def test_dicom_folder_trains_like_png(tmp_path: Path) -> None:
    from samprompt.data import FolderDataset

    root = tmp_path / "dcm"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for n in range(3):
        stored = np.random.default_rng(n).integers(0, 4096, (24, 32))
        _dicom(root / "images" / f"x{n}.dcm", stored, "MONOCHROME2")
        mask = np.zeros((24, 32), np.uint8)
        mask[5:15, 8:20] = 255
        from PIL import Image

        Image.fromarray(mask).save(root / "masks" / f"x{n}.png")
    data = FolderDataset(root)
    assert data.ids == ["x0", "x1", "x2"] and data[0].image.shape == (24, 32)


@pytest.mark.slow
def test_finetune_predict_evaluate_on_phantom_volumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_volumes(tmp_path / "vol", 6)
    cache = str(tmp_path / "cache")
    common = ["--format", "nifti", "--label", "1", "--window", "soft-tissue", "--cache", cache]
    train = ["finetune", "--data", str(root), *common, "--checkpoint", "random:tiny"]
    assert (
        main([*train, "--epochs", "3", "--lr", "1e-3", "--out", str(tmp_path / "run"), "-q"]) == 0
    )
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["reading"]["windowing"]["window"] == [40.0, 400.0]
    assert meta["reading"]["label"] == [1]
    # predict reads new volumes as training did and writes one volume per input
    new = tmp_path / "new"
    (new / "images").mkdir(parents=True)
    for case in ("case4", "case5"):
        (new / "images" / f"{case}.nii.gz").write_bytes(
            (root / "images" / f"{case}.nii.gz").read_bytes()
        )
    argv = ["predict", "--model", str(tmp_path / "run"), "--images", str(new), "--cache", cache]
    assert main([*argv, "--out", str(tmp_path / "pred"), "-q"]) == 0
    assert "volume masks (NIfTI" in capsys.readouterr().out
    reading = VolumeReading.from_dict(meta["reading"])
    slices = NiftiDataset(new, reading, masks=False)
    from samprompt import EmbeddingCache, Finetuner

    segmenter = Finetuner.load(tmp_path / "run", cache=EmbeddingCache(cache, progress=False))
    predicted = dict(segmenter.predict_masks(slices))
    for case in ("case4", "case5"):
        out = nib.load(str(tmp_path / "pred" / f"{case}.nii.gz"))
        np.testing.assert_allclose(out.affine, AFFINE)
        assert out.shape == SHAPE
        canonical = np.asanyarray(nib.as_closest_canonical(out).dataobj)
        for k in range(SHAPE[2]):
            np.testing.assert_array_equal(canonical[:, :, k] > 0, predicted[f"{case}#z{k}"])
    # evaluate reports per-volume 3D F1 beside the per-slice figures
    evaluate = ["evaluate", "--model", str(tmp_path / "run"), "--data", str(root), *common]
    assert main([*evaluate, "--out", str(tmp_path / "eval"), "-q"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert len(metrics["volumes"]) == 6 and 0 < metrics["volume_f1_mean"] <= 1
    assert all(v["slices"] == SHAPE[2] for v in metrics["volumes"])  # every slice evaluated
    assert "per-volume 3D F1" in (tmp_path / "eval" / "summary.md").read_text()


def _series(
    folder: Path, hu: np.ndarray, spacing: tuple[float, float, float], origin: np.ndarray
) -> None:
    """Write ``hu`` (columns, rows, slices) as an axial CT series, files named in reverse order."""
    folder.mkdir(parents=True)
    dx, dy, dz = spacing
    n = hu.shape[2]
    for k in range(n):
        path = folder / f"slice{n - k:03d}.dcm"
        _dicom(path, (hu[:, :, k].T + 1024), "MONOCHROME2", RescaleSlope=1, RescaleIntercept=-1024,
               ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
               ImagePositionPatient=[float(origin[0]), float(origin[1]), float(origin[2] + k * dz)],
               PixelSpacing=[dy, dx], SliceThickness=dz, InstanceNumber=k + 1)  # fmt: skip


def test_dicom_series_is_a_volume_with_its_geometry(tmp_path: Path) -> None:
    from samprompt.data.dicom import read_series

    volume, labels = _phantom(3)
    hu = np.clip(np.rint(volume), -1024, 3000).astype(np.int16)
    spacing, origin = (0.7, 0.9, 2.5), np.array([-120.0, -80.0, 30.0])
    root = tmp_path / "ct"
    _series(root / "images" / "case0", hu, spacing, origin)
    values, affine = read_series(root / "images" / "case0")
    expected = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    expected[:3, 3] = [-origin[0], -origin[1], origin[2]]  # DICOM LPS -> NIfTI RAS
    np.testing.assert_allclose(affine, expected)
    np.testing.assert_array_equal(values, hu)
    (root / "masks").mkdir()
    nib.save(nib.Nifti1Image(labels, affine), str(root / "masks" / "case0.nii.gz"))
    reference = tmp_path / "ref"
    (reference / "images").mkdir(parents=True)
    nib.save(
        nib.Nifti1Image(hu.astype(np.float32), affine), str(reference / "images" / "case0.nii.gz")
    )
    (reference / "masks").mkdir()
    nib.save(nib.Nifti1Image(labels, affine), str(reference / "masks" / "case0.nii.gz"))
    reading = VolumeReading(label=(1,), windowing=Windowing.named("soft-tissue"))
    series, nifti = NiftiDataset(root, reading), NiftiDataset(reference, reading)
    assert series.ids == nifti.ids
    for a, b in zip(series, nifti, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
    out = tmp_path / "out"
    out.mkdir()
    written = write_volume_masks(
        NiftiDataset(root, reading, masks=False),
        ((s.id, s.mask) for s in NiftiDataset(root, VolumeReading(label=(1,), empty_fraction=1.0))),
        out,
        lambda path, image: nib.save(image, str(path)),
    )
    back = nib.load(str(written[0]))
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), labels == 1)
