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

from samprompt.data.volumes import Windowing
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
