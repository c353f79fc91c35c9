"""2D DICOM images (X-ray CR/DX and single frames) read with pydicom, as 8-bit pixels.

The stored values go through the modality LUT (rescale slope and intercept) and then the image's
own VOI window (Window Center / Width) when it has one, else percentile clipping (0.5-99.5), as
for 16-bit PNGs; MONOCHROME1 images (bright = low values) are inverted so that bone is bright as
in every other image; colour images stay RGB. A file without pixel data is refused naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from samprompt.data.windowing import Windowing
from samprompt.errors import DatasetError

__all__ = ["DICOM_SUFFIXES", "read_dicom"]

DICOM_SUFFIXES = (".dcm", ".dicom")


def _first(value: object) -> float:
    """A DICOM number that may be multi-valued (several windows): the first one."""
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        return float(value[0])
    return float(value)  # type: ignore[arg-type]


def _windowing(dataset: pydicom.Dataset) -> Windowing:
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None or _first(width) <= 0:
        return Windowing()
    return Windowing((_first(center), _first(width)))


def read_dicom(path: str | Path) -> np.ndarray:
    """A DICOM image as ``(H, W)`` or ``(H, W, 3)`` uint8 (see the module docs).

    Raises
    ------
    DatasetError
        Unreadable file, no pixel data, or more than one frame.
    """
    try:
        dataset = pydicom.dcmread(str(path))
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
    if "PixelData" not in dataset:
        raise DatasetError(f"{path}: DICOM file without pixel data")
    try:
        pixels = dataset.pixel_array
    except Exception as exc:
        raise DatasetError(f"{path}: cannot decode the DICOM pixel data ({exc})") from exc
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if pixels.ndim != 3 or pixels.shape[-1] != 3:
            raise DatasetError(f"{path}: {photometric} image of shape {pixels.shape} not supported")
        return (
            np.asarray(pixels, np.uint8)
            if pixels.dtype == np.uint8
            else Windowing().to_uint8(pixels)
        )
    if pixels.ndim != 2:
        raise DatasetError(f"{path}: {pixels.shape} pixel data; one 2D frame expected")
    values = np.asarray(apply_modality_lut(pixels, dataset), np.float64)
    image = _windowing(dataset).to_uint8(values)
    if photometric == "MONOCHROME1":
        image = 255 - image
    return image


def is_series(path: Path) -> bool:
    """Whether ``path`` is a folder holding a DICOM series (``.dcm`` files)."""
    return path.is_dir() and any(p.suffix.lower() in DICOM_SUFFIXES for p in path.iterdir())


def read_series(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A DICOM series folder (one file per slice, CT or MR) as a volume and its affine.

    Returns the modality-LUT values (Hounsfield units for CT) as ``(columns, rows, slices)``
    float32, and the 4x4 voxel-to-world affine in NIfTI's RAS convention, built from Image
    Position / Orientation (Patient) and Pixel Spacing; slices are ordered along the slice
    normal, so file names and Instance Numbers do not matter.

    Raises
    ------
    DatasetError
        A file without pixel data or geometry, slices of different sizes or orientations.
    """
    folder = Path(folder)
    slices = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in DICOM_SUFFIXES):
        try:
            dataset = pydicom.dcmread(str(path))
            orientation = np.array([float(v) for v in dataset.ImageOrientationPatient])
            position = np.array([float(v) for v in dataset.ImagePositionPatient])
            spacing = [float(v) for v in dataset.PixelSpacing]
            pixels = dataset.pixel_array
        except Exception as exc:
            raise DatasetError(
                f"{path}: not a slice of a DICOM series ({type(exc).__name__}: {exc})"
            ) from exc
        values = np.asarray(apply_modality_lut(pixels, dataset), np.float32)
        slices.append((orientation, position, spacing, values, path))
    if not slices:
        raise DatasetError(f"{folder}: no DICOM files")
    orientation, _, spacing, first, _ = slices[0]
    for other, _, other_spacing, values, path in slices[1:]:
        same = np.allclose(other, orientation, atol=1e-4) and values.shape == first.shape
        if not same or not np.allclose(other_spacing, spacing):
            raise DatasetError(
                f"{path}: orientation, spacing or size differs from the series' first slice"
            )
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    slices.sort(key=lambda s: float(np.dot(s[1], normal)))
    positions = np.array([s[1] for s in slices])
    step = (positions[-1] - positions[0]) / (len(slices) - 1) if len(slices) > 1 else normal
    affine = np.eye(4)
    affine[:3, 0] = row * spacing[1]  # voxel i: along a row, i.e. the column index
    affine[:3, 1] = column * spacing[0]  # voxel j: down a column, i.e. the row index
    affine[:3, 2] = step
    affine[:3, 3] = positions[0]
    affine[:2] *= -1  # DICOM's LPS to NIfTI's RAS
    volume = np.stack([s[3].T for s in slices], axis=-1)
    return volume, affine
