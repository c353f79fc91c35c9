"""Write a dataset in the generic folder layout (``ROOT/images`` + ``ROOT/masks``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from samprompt.data.sample import Sample

__all__ = ["write_folder_dataset"]


def write_folder_dataset(samples: Iterable[Sample], root: str | Path) -> Path:
    """Save samples as ``ROOT/images/<id>.png`` and ``ROOT/masks/<id>.png`` (0/255).

    Samples without a mask get only their image. Returns ``root``.

    Examples
    --------
    >>> from samprompt.data import make_phantoms, FolderDataset
    >>> import tempfile
    >>> root = write_folder_dataset(make_phantoms(3, 32), tempfile.mkdtemp())
    >>> len(FolderDataset(root))
    3
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for sample in samples:
        Image.fromarray(sample.image).save(root / "images" / f"{sample.id}.png")
        if sample.mask is not None:
            Image.fromarray(sample.mask.astype(np.uint8) * 255).save(
                root / "masks" / f"{sample.id}.png"
            )
    return root
