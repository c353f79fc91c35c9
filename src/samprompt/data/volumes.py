"""NIfTI volumes as datasets of 2D slices, and predicted slices written back as volumes.

Layouts (``--format nifti``):

- ``ROOT/images/<id>.nii(.gz)`` + ``ROOT/masks/<id>.nii(.gz)``;
- the nnU-Net / Medical Segmentation Decathlon layout ``ROOT/imagesTr/<id>_0000.nii.gz`` +
  ``ROOT/labelsTr/<id>.nii.gz``.

In the first layout ``ROOT/images/<id>/`` may also be a folder of DICOM slices (a CT or MR
series), read with its geometry by :func:`samprompt.data.dicom.read_series`.

Volumes are read with nibabel and reoriented to the closest canonical (RAS+) orientation, so the
``axial`` axis is the third; slice ``k`` along an axis becomes the sample ``<id>#<letter><k>``
(``case1#z12``: axial slice 12), so every result traces back to its volume and slice. Masks are
made binary by ``label`` (default: any non-zero voxel). Which slices take part: every slice with
foreground, plus ``empty_fraction`` of the others (chosen by a seeded draw), so that an empty
target, which must give an empty prediction, is trained and scored too (F1 of an empty target is 1
for an empty prediction, else 0). Intensities become 8-bit per volume by a CT window or by
percentile clipping (:class:`Windowing`), recorded in ``model.json`` so ``predict`` repeats it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import attrs
import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from samprompt.data.dicom import is_series, read_series
from samprompt.data.sample import Dataset, Sample
from samprompt.data.windowing import WINDOWS, Windowing
from samprompt.errors import DatasetError
from samprompt.hashing import file_sha256

__all__ = [
    "AXES",
    "WINDOWS",
    "NiftiDataset",
    "VolumeReading",
    "Windowing",
    "parse_slice_id",
    "write_volume_masks",
]

#: Slicing axes in canonical (RAS+) orientation, and the letter slice ids use.
AXES: dict[str, tuple[int, str]] = {"sagittal": (0, "x"), "coronal": (1, "y"), "axial": (2, "z")}
_SLICE_ID = re.compile(r"^(?P<case>.+)#(?P<axis>[xyz])(?P<index>\d+)$")


def _labels(value: Iterable[int] | None) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(v) for v in value)


@attrs.frozen
class VolumeReading:
    """Everything that decides which slices a volume gives and what their pixels are.

    Recorded in ``model.json`` (:meth:`to_dict`), so ``samprompt predict`` reads new volumes the
    way the model was trained.
    """

    axis: str = "axial"
    label: tuple[int, ...] | None = attrs.field(default=None, converter=_labels)
    windowing: Windowing = attrs.field(factory=Windowing)
    empty_fraction: float = 0.1
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        if self.axis not in AXES:
            raise DatasetError(f"axis must be one of {', '.join(AXES)}, got {self.axis!r}")
        if not 0.0 <= self.empty_fraction <= 1.0:
            raise DatasetError(f"empty fraction must be in [0, 1], got {self.empty_fraction}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "format": "nifti",
            "axis": self.axis,
            "label": list(self.label) if self.label is not None else None,
            "windowing": self.windowing.to_dict(),
            "empty_fraction": self.empty_fraction,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VolumeReading:
        """Inverse of :meth:`to_dict`."""
        windowing = data.get("windowing") or {}
        return cls(
            axis=str(data.get("axis", "axial")),
            label=data.get("label"),
            windowing=Windowing(windowing.get("window"), windowing.get("percentiles", (0.5, 99.5))),
            empty_fraction=float(data.get("empty_fraction", 0.1)),
            seed=int(data.get("seed", 0)),
        )


@lru_cache(maxsize=2)
def _series(path: Path) -> Any:
    volume, affine = read_series(path)
    return nib.Nifti1Image(volume, affine)


def _load(path: Path) -> Any:
    """A NIfTI file, or a DICOM series folder as an in-memory NIfTI image."""
    if path.is_dir():
        return _series(path)
    return nib.load(str(path))


def _to_canonical(affine: np.ndarray, inverse: bool = False) -> np.ndarray:
    """nibabel's orientation transform from a volume's voxel axes to RAS+ (or back)."""
    own, canonical = io_orientation(affine), axcodes2ornt(("R", "A", "S"))
    transform: np.ndarray = (
        ornt_transform(canonical, own) if inverse else ornt_transform(own, canonical)
    )
    return transform


def _canonical(path: Path) -> tuple[np.ndarray, Any]:
    """The volume's voxels in canonical orientation, and the loaded image (affine, header)."""
    try:
        image = _load(path)
        data = np.asanyarray(image.dataobj)
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DatasetError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return apply_orientation(data, _to_canonical(image.affine)), image


@lru_cache(maxsize=4)
def _read(path: Path, windowing: Windowing) -> np.ndarray:
    """A canonical volume as uint8 (cached: its slices are read one after another)."""
    data, _ = _canonical(path)
    return windowing.to_uint8(data)


@lru_cache(maxsize=4)
def _read_mask(path: Path, label: tuple[int, ...] | None) -> np.ndarray:
    data, _ = _canonical(path)
    if label is None:
        return np.asarray(data != 0)
    return np.isin(np.rint(data).astype(np.int64), label)


def _take(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.ascontiguousarray(np.take(volume, index, axis=axis))


def parse_slice_id(ident: str) -> tuple[str, str, int]:
    """``("case1", "z", 12)`` from ``"case1#z12"``; a DatasetError for any other id."""
    match = _SLICE_ID.match(ident)
    if match is None:
        raise DatasetError(f"{ident!r} is not a slice id <case>#<x|y|z><index>")
    return match["case"], match["axis"], int(match["index"])


def _cases(root: Path, with_masks: bool) -> list[tuple[str, Path, Path | None]]:
    """``(case id, image, mask)`` of either layout."""

    def stem(path: Path) -> str:
        return path.name.removesuffix(".gz").removesuffix(".nii")

    if (root / "imagesTr").is_dir():
        images = {
            stem(p).removesuffix("_0000"): p
            for p in (root / "imagesTr").glob("*.nii*")
            if not p.name.startswith(".")
        }
        masks = {stem(p): p for p in (root / "labelsTr").glob("*.nii*")} if with_masks else {}
    else:
        folder = root / "images" if (root / "images").is_dir() else root
        images = {stem(p): p for p in folder.glob("*.nii*") if not p.name.startswith(".")}
        images |= {p.name: p for p in folder.iterdir() if is_series(p)}  # DICOM series folders
        masks = {stem(p): p for p in (root / "masks").glob("*.nii*")} if with_masks else {}
    if not images:
        raise DatasetError(
            f"{root}: no volumes found (images/<id>.nii.gz, images/<id>/ DICOM series, or imagesTr/)"
        )
    if with_masks:
        missing = sorted(set(images) - set(masks))
        if missing:
            raise DatasetError(
                f"{root}: {len(missing)} volume(s) without a mask, e.g. {missing[:3]}"
            )
    return [(case, images[case], masks.get(case)) for case in sorted(images)]


class NiftiDataset(Dataset):
    """2D slices of NIfTI volumes (see the module docs for layouts and rules).

    Parameters
    ----------
    root : str or pathlib.Path
        The dataset folder.
    reading : VolumeReading, optional
        Axis, label, windowing, share of empty slices.
    masks : bool
        Read masks (training and evaluation); False for prediction, which takes every slice.

    Examples
    --------
    >>> data = NiftiDataset("Task06_Lung", VolumeReading(label=(1,)))  # doctest: +SKIP
    >>> data.ids[:2], data.groups[:2]  # doctest: +SKIP
    (['lung_001#z40', 'lung_001#z41'], ['lung_001', 'lung_001'])
    """

    def __init__(
        self, root: str | Path, reading: VolumeReading | None = None, *, masks: bool = True
    ) -> None:
        self.root = Path(root)
        self.reading = reading or VolumeReading()
        self.cases = _cases(self.root, masks)
        axis, letter = AXES[self.reading.axis]
        self._axis, self._letter = axis, letter
        self._slices: list[tuple[int, int]] = []
        self._foreground = 0
        for position, (case, image, mask) in enumerate(self.cases):
            for index in self._chosen(case, image, mask):
                self._slices.append((position, index))
        if masks and not self._foreground:
            wanted = (
                "non-zero" if self.reading.label is None else f"label {list(self.reading.label)}"
            )
            raise DatasetError(f"{self.root}: no mask has a {wanted} voxel: empty label")

    def _chosen(self, case: str, image: Path, mask: Path | None) -> list[int]:
        header = _load(image)
        shape = _canonical_shape(header)
        count = shape[self._axis]
        if mask is None:
            return list(range(count))
        _check_pair(image, header, mask)
        labels = _read_mask(mask, self.reading.label)
        other = tuple(a for a in range(3) if a != self._axis)
        has = labels.any(axis=other)
        self._foreground += int(has.sum())
        empty = np.flatnonzero(~has)
        rng = np.random.default_rng(
            [self.reading.seed, int(hashlib.sha256(case.encode()).hexdigest()[:8], 16)]
        )
        keep = rng.permutation(empty)[: round(len(empty) * self.reading.empty_fraction)]
        return sorted([*np.flatnonzero(has).tolist(), *keep.tolist()])

    @property
    def ids(self) -> list[str]:
        return [f"{self.cases[p][0]}#{self._letter}{i}" for p, i in self._slices]

    @property
    def groups(self) -> list[str]:
        """The volume (case id) of each slice: splits keep a volume's slices together."""
        return [self.cases[p][0] for p, _ in self._slices]

    def load(self, index: int) -> Sample:
        position, k = self._slices[index]
        case, image, mask = self.cases[position]
        pixels = _take(_read(image, self.reading.windowing), self._axis, k)
        labels = (
            None if mask is None else _take(_read_mask(mask, self.reading.label), self._axis, k)
        )
        return Sample(f"{case}#{self._letter}{k}", pixels, labels)

    def _digest(self, index: int) -> str:
        position, k = self._slices[index]
        _, image, mask = self.cases[position]
        parts = [file_sha256(image), file_sha256(mask) if mask else "", repr(self.reading), str(k)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def reading_record(self) -> dict[str, Any]:
        """How these slices were read (recorded in ``model.json``)."""
        return self.reading.to_dict()


def _canonical_shape(image: Any) -> tuple[int, ...]:
    shape = tuple(int(s) for s in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DatasetError(f"{image.get_filename()}: expected a 3D volume, got shape {shape}")
    return tuple(shape[int(a)] for a in _to_canonical(image.affine)[:, 0].argsort())


def _check_pair(image_path: Path, image: Any, mask_path: Path) -> None:
    try:
        mask = nib.load(str(mask_path))
    except Exception as exc:
        raise DatasetError(
            f"{mask_path}: unreadable NIfTI file ({type(exc).__name__}: {exc})"
        ) from exc
    if tuple(mask.shape[:3]) != tuple(image.shape[:3]):
        raise DatasetError(
            f"{mask_path}: mask shape {mask.shape} differs from image {image_path.name} shape {image.shape}"
        )
    if not np.allclose(mask.affine, image.affine, atol=1e-3):
        raise DatasetError(
            f"{mask_path}: mask affine differs from image {image_path.name}'s; they do not overlay"
        )


def write_volume_masks(
    dataset: NiftiDataset, masks: Iterable[tuple[str, np.ndarray]], out: Path, writer: Any
) -> list[Path]:
    """Assemble predicted slices into one ``<id>.nii.gz`` per volume with the input's affine and
    header (and its original orientation), written by ``writer(path, image)``."""
    by_case: dict[str, dict[int, np.ndarray]] = {}
    for ident, mask in masks:
        case, _, k = parse_slice_id(ident)
        by_case.setdefault(case, {})[k] = mask
    written = []
    for case, image_path, _ in dataset.cases:
        image = _load(image_path)
        shape = _canonical_shape(image)
        volume = np.zeros(shape, np.uint8)
        for k, mask in by_case.get(case, {}).items():
            index: list[Any] = [slice(None)] * 3
            index[AXES[dataset.reading.axis][0]] = k
            volume[tuple(index)] = mask.astype(np.uint8)
        back = _to_canonical(image.affine, inverse=True)
        original = apply_orientation(volume, back).astype(np.uint8)
        header = image.header.copy()
        header.set_data_dtype(np.uint8)
        result = nib.Nifti1Image(original, image.affine, header)
        path = out / f"{case}.nii.gz"
        writer(path, result)
        written.append(path)
    return written
