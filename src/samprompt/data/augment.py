"""Mirror images: more training images for a frozen encoder, and test-time averaging.

With SAM's image encoder frozen and its embeddings cached, the usual on-the-fly augmentation
does not apply: every distinct image costs one encoder call. Mirrored copies are distinct images
that stay valid wherever the target has no preferred side (a skin lesion, a polyp, a nodule), so
they are the augmentation worth an encoder call each: :func:`with_flips` adds them to a training
set, lazily (a copy is read from its original when needed), and :class:`samprompt.tta.FlipTTA`
averages a model's answers on them at test time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from samprompt.data.sample import Dataset, Sample, as_dataset
from samprompt.errors import ConfigError

__all__ = ["FLIPS", "Flipped", "check_flips", "flip_array", "flip_sample", "with_flips"]

#: The mirrorings: ``hflip`` left <-> right, ``vflip`` top <-> bottom, ``transpose`` across the
#: main diagonal (rows become columns: a 2x3 image becomes 3x2). Each is its own inverse.
FLIPS = ("hflip", "vflip", "transpose")
_AXIS = {"hflip": 1, "vflip": 0}


def check_flips(kinds: Iterable[str]) -> tuple[str, ...]:
    """``kinds`` as a tuple, each one of :data:`FLIPS` and none twice; a clear error otherwise.

    Examples
    --------
    >>> check_flips(["vflip", "hflip"])
    ('vflip', 'hflip')
    """
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in FLIPS]
    if unknown:
        raise ConfigError(f"unknown flip {unknown[0]!r}; choose from {', '.join(FLIPS)}")
    if len(set(kinds)) != len(kinds):
        raise ConfigError(f"flips must not repeat, got {list(kinds)}")
    return kinds


def flip_array(array: np.ndarray, kind: str) -> np.ndarray:
    """``array`` (``(H, W)`` or ``(H, W, C)``) mirrored; its own inverse."""
    if kind == "transpose":
        return np.ascontiguousarray(np.swapaxes(array, 0, 1))
    return np.ascontiguousarray(np.flip(array, axis=_AXIS[kind]))


def flip_sample(sample: Sample, kind: str) -> Sample:
    """The mirrored image (and mask), id ``"<id>~<kind>"``."""
    mask = None if sample.mask is None else flip_array(sample.mask, kind)
    return Sample(f"{sample.id}~{kind}", flip_array(sample.image, kind), mask)


class Flipped(Dataset):
    """``base`` followed by its mirrored copies, one block per kind (read lazily from ``base``).

    Examples
    --------
    >>> from samprompt.data import make_phantoms
    >>> data = with_flips(make_phantoms(2, 16), ["hflip"])
    >>> data.ids
    ['chest_0000', 'chest_0001', 'chest_0000~hflip', 'chest_0001~hflip']
    """

    def __init__(self, base: Dataset | Iterable[Sample], kinds: Sequence[str]) -> None:
        self.base = as_dataset(base)
        self.kinds = check_flips(kinds)

    @property
    def ids(self) -> list[str]:
        ids = self.base.ids
        return ids + [f"{i}~{kind}" for kind in self.kinds for i in ids]

    def _source(self, index: int) -> tuple[int, str | None]:
        block, position = divmod(index, len(self.base))
        return position, None if block == 0 else self.kinds[block - 1]

    def load(self, index: int) -> Sample:
        position, kind = self._source(index)
        sample = self.base.load(position)
        return sample if kind is None else flip_sample(sample, kind)

    @property
    def groups(self) -> list[str] | None:
        groups = self.base.groups
        return None if groups is None else groups * (1 + len(self.kinds))

    def reading_record(self) -> dict[str, Any] | None:
        return self.base.reading_record()


def with_flips(samples: Dataset | Iterable[Sample], kinds: Sequence[str]) -> Dataset:
    """``samples`` plus a mirrored copy of each for every kind in ``kinds`` (none: the samples
    as a dataset, unchanged)."""
    return Flipped(samples, kinds) if kinds else as_dataset(samples)
