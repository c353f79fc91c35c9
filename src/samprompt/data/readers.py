"""Readers for folder datasets: the generic layout, official Montgomery and Shenzhen layouts.

Every reader checks all files when it is built and raises one :class:`DatasetError` that lists
every offending file (or skips them, with a warning, when ``skip_invalid=True``). Pixels are then
read lazily, one sample at a time.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np
from PIL import Image

from samprompt.data.dicom import DICOM_SUFFIXES, read_dicom
from samprompt.data.sample import Dataset, Sample
from samprompt.errors import DatasetError
from samprompt.hashing import file_sha256

__all__ = [
    "IMAGE_SUFFIXES",
    "FolderDataset",
    "ImageFolder",
    "MontgomeryDataset",
    "PairedDataset",
    "ShenzhenDataset",
    "read_image",
    "read_mask",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", *DICOM_SUFFIXES)

#: Percentile window that maps 16-bit and float images to 8 bits: values at or below the 0.5th
#: percentile become 0, at or above the 99.5th become 255, linear in between.
WINDOW_PERCENTILES = (0.5, 99.5)


def _window_to_uint8(values: np.ndarray) -> np.ndarray:
    low, high = np.percentile(values, WINDOW_PERCENTILES)
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = (values.astype(np.float64) - low) / (high - low)
    result: np.ndarray = np.round(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)
    return result


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as ``(H, W)`` or ``(H, W, 3)`` uint8.

    8-bit grey and RGB images are returned unchanged (alpha and palettes are dropped). 16-bit and
    float images are mapped to 8 bits by the percentile window :data:`WINDOW_PERCENTILES`. DICOM
    files (``.dcm``) are read by :func:`samprompt.data.dicom.read_dicom`.
    """
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        return read_dicom(path)
    with Image.open(path) as img:
        img.load()
        if img.mode in ("L", "RGB"):
            return np.array(img, dtype=np.uint8)
        if img.mode in ("1", "LA", "La"):
            return np.array(img.convert("L"), dtype=np.uint8)
        if img.mode in ("RGBA", "P", "PA", "CMYK", "YCbCr", "RGBa", "LAB", "HSV"):
            return np.array(img.convert("RGB"), dtype=np.uint8)
        array = np.asarray(img)
    if array.ndim == 3:
        array = array[..., :3] if array.shape[2] >= 3 else array[..., 0]
    return _window_to_uint8(array)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a binary mask as ``(H, W)`` bool.

    Values must be {0, 1}, {0, 255} (8-bit) or {0, 65535} (16-bit). A grey mask saved as RGB or
    RGBA (equal colour channels; alpha ignored) or with an alpha channel (LA) is accepted.

    Raises
    ------
    DatasetError
        When the mask holds other values (e.g. anti-aliased edges or several labels).
    """
    with Image.open(path) as img:
        if img.mode == "P":
            img = img.convert("RGB")
        array = np.asarray(img)
    if array.ndim == 3:
        colour = array[..., : 3 if array.shape[2] >= 3 else 1]  # alpha (LA, RGBA) is not a label
        if not all(np.array_equal(colour[..., 0], colour[..., c]) for c in range(colour.shape[2])):
            raise DatasetError(
                f"{path}: mask has colour channels that differ; expected a grey mask"
            )
        array = colour[..., 0]
    values = set(np.unique(array).tolist())
    if not any(values <= {0, top} for top in (1, 255, 65535)):
        shown = sorted(values)[:6]
        raise DatasetError(
            f"{path}: mask values {shown} are not binary; expected {{0,1}}, {{0,255}} or "
            "{0,65535}"
        )
    return array > 0


@attrs.frozen
class _Pair:
    id: str
    image: Path
    masks: tuple[Path, ...]


class PairedDataset(Dataset):
    """A lazy dataset over ``(id, image file, mask files)`` pairs; several masks are merged (OR).

    Parameters
    ----------
    pairs : sequence of (str, path, sequence of paths)
        Id, image path and mask paths (none for unlabelled images).
    skip_invalid : bool
        Drop invalid pairs with a warning instead of raising.
    problems : sequence of str
        Problems already found by the caller (e.g. images without a mask), reported together.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, Path, Sequence[Path]]],
        *,
        skip_invalid: bool = False,
        problems: Sequence[str] = (),
        source: str = "dataset",
    ) -> None:
        self.source = source
        found = list(problems)
        good: list[_Pair] = []
        for ident, image, masks in pairs:
            error = self._check(ident, Path(image), [Path(m) for m in masks])
            if error:
                found.append(error)
            else:
                good.append(_Pair(ident, Path(image), tuple(Path(m) for m in masks)))
        if found and not skip_invalid:
            listing = "\n  ".join(found)
            raise DatasetError(
                f"{source}: {len(found)} problem(s) found (pass skip_invalid=True, or "
                f"--skip-invalid, to skip these files):\n  {listing}"
            )
        if found:
            warnings.warn(f"{source}: skipped {len(found)} invalid file(s): {found}", stacklevel=2)
        if not good:
            raise DatasetError(f"{source}: no usable image found")
        self._pairs = good

    @staticmethod
    def _check(ident: str, image: Path, masks: list[Path]) -> str | None:
        try:
            pixels = read_image(image)
        except Exception as exc:
            return f"{image}: unreadable image ({exc})"
        for mask_path in masks:
            try:
                mask = read_mask(mask_path)
            except DatasetError as exc:
                return str(exc)
            except Exception as exc:
                return f"{mask_path}: unreadable mask ({exc})"
            if mask.shape != pixels.shape[:2]:
                return (
                    f"{mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image "
                    f"{image.name} size {pixels.shape[1]}x{pixels.shape[0]}"
                )
        return None

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self._pairs]

    def _digest(self, index: int) -> str:
        # The files' bytes identify the sample without decoding it.
        pair = self._pairs[index]
        parts = [file_sha256(pair.image), *(file_sha256(m) for m in pair.masks)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def load(self, index: int) -> Sample:
        pair = self._pairs[index]
        image = read_image(pair.image)
        mask = None
        if pair.masks:
            mask = np.zeros(image.shape[:2], bool)
            for path in pair.masks:
                mask |= read_mask(path)
        return Sample(pair.id, image, mask)


def _images_in(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by id (file stem); two files with one id are an error."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            if path.stem in found:
                raise DatasetError(
                    f"{folder}: {found[path.stem].name} and {path.name} share the id "
                    f"{path.stem!r}; keep one of them"
                )
            found[path.stem] = path
    return found


def _paired(
    images: dict[str, Path], masks: dict[str, list[Path]], expected: str
) -> tuple[list[tuple[str, Path, list[Path]]], list[str]]:
    pairs, problems = [], []
    for ident, image in images.items():
        if ident in masks:
            pairs.append((ident, image, masks[ident]))
        else:
            problems.append(f"{image}: no mask (expected {expected.format(id=ident)})")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        warnings.warn(
            f"{len(orphans)} mask(s) have no image and are ignored: "
            f"{[str(masks[k][0]) for k in orphans[:3]]}",
            stacklevel=3,
        )
    return pairs, problems


class FolderDataset(PairedDataset):
    """The generic layout ``ROOT/images/<id>.<png|jpg|tif|...>`` + ``ROOT/masks/<id>.png``.

    This is the layout of the shared Montgomery and Shenzhen copies. Any binary segmentation task
    fits it: grey or RGB, 8- or 16-bit images; masks {0, 1} or {0, 255}.

    Examples
    --------
    >>> ds = FolderDataset("data/montgomery")  # doctest: +SKIP
    >>> len(ds), ds[0].image.shape, ds[0].mask.dtype  # doctest: +SKIP
    (138, (512, 512), dtype('bool'))
    """

    def __init__(self, root: str | Path, *, skip_invalid: bool = False) -> None:
        root = Path(root)
        self.root = root
        images = _images_in(root / "images")
        masks = {k: [v] for k, v in _images_in(root / "masks").items()}
        pairs, problems = _paired(images, masks, str(root / "masks" / "{id}.png"))
        super().__init__(pairs, skip_invalid=skip_invalid, problems=problems, source=str(root))


class ImageFolder(PairedDataset):
    """Images without masks (``DIR/<id>.<png|jpg|...>``), for prediction on new data."""

    def __init__(self, root: str | Path, *, skip_invalid: bool = False) -> None:
        root = Path(root)
        folder = root / "images" if (root / "images").is_dir() else root
        pairs: list[tuple[str, Path, list[Path]]] = [
            (k, v, []) for k, v in _images_in(folder).items()
        ]
        super().__init__(pairs, skip_invalid=skip_invalid, source=str(root))


class MontgomeryDataset(PairedDataset):
    """The official NLM Montgomery layout: ``CXR_png/<id>.png`` and
    ``ManualMask/leftMask/<id>.png`` + ``ManualMask/rightMask/<id>.png``, merged into one mask."""

    def __init__(self, root: str | Path, *, skip_invalid: bool = False) -> None:
        root = Path(root)
        images = _images_in(root / "CXR_png")
        left = _images_in(root / "ManualMask" / "leftMask")
        right = _images_in(root / "ManualMask" / "rightMask")
        masks = {k: [left[k], right[k]] for k in left if k in right}
        pairs, problems = _paired(
            images, masks, str(root / "ManualMask" / "{{left,right}}Mask" / "{id}.png")
        )
        super().__init__(pairs, skip_invalid=skip_invalid, problems=problems, source=str(root))


class ShenzhenDataset(PairedDataset):
    """The Shenzhen mask layout: images ``CXR_png/<id>.png`` (or ``images/``) and masks
    ``mask/<id>_mask.png`` (or ``masks/``), as published with the Shenzhen lung masks."""

    def __init__(self, root: str | Path, *, skip_invalid: bool = False) -> None:
        root = Path(root)
        image_dir = next(
            (root / d for d in ("CXR_png", "images") if (root / d).is_dir()), root / "CXR_png"
        )
        mask_dir = next((root / d for d in ("mask", "masks") if (root / d).is_dir()), root / "mask")
        images = _images_in(image_dir)
        masks = {
            k.removesuffix("_mask"): [v]
            for k, v in _images_in(mask_dir).items()
            if k.endswith("_mask")
        }
        pairs, problems = _paired(images, masks, str(mask_dir / "{id}_mask.png"))
        super().__init__(pairs, skip_invalid=skip_invalid, problems=problems, source=str(root))
