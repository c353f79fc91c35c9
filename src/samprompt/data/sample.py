"""The :class:`Sample` value type and the dataset types every reader returns."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import attrs
import numpy as np

from samprompt.errors import DatasetError
from samprompt.hashing import array_sha256

__all__ = ["Dataset", "Sample", "SampleList", "Subset"]


def _check_image(
    instance: Sample, attribute: attrs.Attribute[np.ndarray], value: np.ndarray
) -> None:
    if (
        value.dtype != np.uint8
        or value.ndim not in (2, 3)
        or (value.ndim == 3 and value.shape[2] != 3)
    ):
        raise DatasetError(
            f"sample {instance.id!r}: image must be HxW or HxWx3 uint8, got {value.dtype} "
            f"{value.shape}"
        )


def _check_mask(
    instance: Sample, attribute: attrs.Attribute[np.ndarray | None], value: np.ndarray | None
) -> None:
    if value is None:
        return
    if value.dtype != np.bool_ or value.shape != instance.image.shape[:2]:
        raise DatasetError(
            f"sample {instance.id!r}: mask must be a bool array of the image's size "
            f"{instance.image.shape[:2]}, got {value.dtype} {value.shape}"
        )


@attrs.frozen(eq=False)
class Sample:
    """One image and, when known, its binary mask.

    Attributes
    ----------
    id : str
        Identifier, unique within its dataset (a file stem for folder datasets).
    image : numpy.ndarray
        ``(H, W)`` greyscale or ``(H, W, 3)`` RGB, ``uint8``, in the image's own pixel frame.
    mask : numpy.ndarray or None
        ``(H, W)`` bool, True on the structure; None for images without ground truth.

    Examples
    --------
    >>> import numpy as np
    >>> sample = Sample("case1", np.zeros((4, 6), np.uint8), np.zeros((4, 6), bool))
    >>> sample.size
    (4, 6)
    """

    id: str
    image: np.ndarray = attrs.field(validator=_check_image)
    mask: np.ndarray | None = attrs.field(default=None, validator=_check_mask)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the image in pixels."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def require_mask(self) -> np.ndarray:
        """Return the mask, or raise a clear error when the sample has none."""
        if self.mask is None:
            raise DatasetError(f"sample {self.id!r} has no mask, but this step needs one")
        return self.mask


class Dataset(Sequence[Sample]):
    """A sized, iterable, position-indexable collection of :class:`Sample`.

    Subclasses implement :attr:`ids` and :meth:`load`; samples may be read lazily from disk, so a
    dataset of any size costs little memory.

    Examples
    --------
    >>> from samprompt.data import make_phantoms
    >>> data = make_phantoms(5, 32)
    >>> len(data), data.subset([4, 0]).ids
    (5, ['chest_0004', 'chest_0000'])
    """

    @property
    def ids(self) -> list[str]:
        """Sample ids, in order, without loading any pixels."""
        raise NotImplementedError

    def load(self, index: int) -> Sample:
        """Return the sample at ``index`` (0 <= index < len)."""
        raise NotImplementedError

    @property
    def groups(self) -> list[str] | None:
        """The group of each sample (the volume a slice comes from), or None when every sample
        stands alone. Splits never put one group's samples on both sides."""
        return None

    def reading_record(self) -> dict[str, Any] | None:
        """How the samples' pixels were read, when that must be repeated at prediction
        (a volume's axis, label and windowing); None for plain images."""
        return None

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> Dataset: ...

    def __getitem__(self, index: int | slice) -> Sample | Dataset:
        if isinstance(index, slice):
            return self.subset(range(len(self))[index])
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        return self.load(index % n)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self.load(i)

    def subset(self, indices: Iterable[int]) -> Subset:
        """Return a view holding the samples at ``indices`` (in that order)."""
        return Subset(self, [int(i) for i in indices])

    def content_digest(self, index: int) -> str:
        """sha256 of the sample at ``index`` (image and mask); computed once per dataset object."""
        memo: dict[int, str] = self.__dict__.setdefault("_content_digests", {})
        if index not in memo:
            memo[index] = self._digest(index)
        return memo[index]

    def _digest(self, index: int) -> str:
        sample = self.load(index)
        parts = [array_sha256(sample.image)]
        if sample.mask is not None:
            parts.append(array_sha256(sample.mask))
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def fingerprint(self) -> dict[str, Any]:
        """Identity of this dataset for run records: size, and sha256 of the ids and contents.

        Examples
        --------
        >>> from samprompt.data import make_phantoms
        >>> a, b = make_phantoms(3, 32, seed=0), make_phantoms(3, 32, seed=1)
        >>> a.fingerprint() == make_phantoms(3, 32, seed=0).fingerprint()
        True
        >>> a.fingerprint()["content_sha256"] == b.fingerprint()["content_sha256"]
        False
        """
        ids = self.ids
        contents = [self.content_digest(i) for i in range(len(ids))]
        return {
            "n": len(ids),
            "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
            "content_sha256": hashlib.sha256("\n".join(contents).encode()).hexdigest(),
        }


class SampleList(Dataset):
    """An in-memory dataset over a list of samples (ids must be unique)."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        self._samples = list(samples)
        ids = [s.id for s in self._samples]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise DatasetError(f"duplicate sample ids: {dupes}")
        self._ids = ids

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def load(self, index: int) -> Sample:
        return self._samples[index]


class Subset(Dataset):
    """A view on some positions of another dataset."""

    def __init__(self, parent: Dataset, indices: Sequence[int]) -> None:
        self.parent = parent
        self.indices = list(indices)

    @property
    def ids(self) -> list[str]:
        parent_ids = self.parent.ids
        return [parent_ids[i] for i in self.indices]

    def load(self, index: int) -> Sample:
        return self.parent.load(self.indices[index])

    @property
    def groups(self) -> list[str] | None:
        parent = self.parent.groups
        return None if parent is None else [parent[i] for i in self.indices]

    def reading_record(self) -> dict[str, Any] | None:
        return self.parent.reading_record()

    def content_digest(self, index: int) -> str:
        return self.parent.content_digest(self.indices[index])


def as_dataset(samples: Iterable[Sample]) -> Dataset:
    """Return ``samples`` as a :class:`Dataset` (unchanged if it is one already)."""
    return samples if isinstance(samples, Dataset) else SampleList(samples)
