"""Deterministic splits: 60/20/20 train/val/test and k-fold cross-validation."""

from __future__ import annotations

import attrs
import numpy as np

from samprompt.errors import ConfigError

__all__ = ["Split", "cv_splits", "kfold_indices", "nested_subset", "train_val_test_split"]


@attrs.frozen(eq=False)
class Split:
    """Positions of the train, validation and test samples of one split (disjoint)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _by_group(split: Split, groups: list[str], names: list[str]) -> Split:
    """A split of the distinct group ``names`` as a split of the samples in ``groups``."""
    index = {name: i for i, name in enumerate(names)}
    of = np.array([index[g] for g in groups])
    parts = (np.flatnonzero(np.isin(of, part)) for part in (split.train, split.val, split.test))
    return Split(*parts)


def train_val_test_split(
    n: int,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    groups: list[str] | None = None,
) -> Split:
    """Split ``range(n)`` at random (seeded) into train/val/test by ``fractions``.

    The sizes are ``round(n * val)`` and ``round(n * test)``; train takes the rest. With
    ``groups`` (one name per sample, e.g. its volume) the groups are split, never the samples of
    one group.

    Examples
    --------
    >>> s = train_val_test_split(10, seed=0)
    >>> len(s.train), len(s.val), len(s.test)
    (6, 2, 2)
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(
            f"fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    if groups is not None:
        names = sorted(set(groups))
        return _by_group(train_val_test_split(len(names), fractions, seed), groups, names)
    if n < 3:
        raise ConfigError(f"need at least 3 samples to split, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(n * fractions[1]), round(n * fractions[2])
    return Split(
        train=np.sort(order[n_val + n_test :]),
        val=np.sort(order[:n_val]),
        test=np.sort(order[n_val : n_val + n_test]),
    )


def kfold_indices(n: int, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Partition ``range(n)`` into ``k`` seeded folds of near-equal size (sorted positions)."""
    if k < 2 or k > n:
        raise ConfigError(f"k must be between 2 and the number of samples ({n}), got {k}")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(fold) for fold in np.array_split(order, k)]


def cv_splits(n: int, k: int = 5, seed: int = 0, groups: list[str] | None = None) -> list[Split]:
    """The k-fold protocol: fold ``i`` tests on fold ``i``, validates on fold ``(i + 1) % k`` and
    trains on the other ``k - 2`` folds.

    With ``k = 5`` every split is 60/20/20, each sample is tested exactly once and validated
    exactly once over the five splits. ``k = 2`` keeps half for testing and splits the other half
    80/20 into train and validation. With ``groups`` (one name per sample, e.g. its volume) the
    folds are made of whole groups: no volume has slices in both training and test.
    """
    if groups is not None:
        names = sorted(set(groups))
        return [_by_group(split, groups, names) for split in cv_splits(len(names), k, seed)]
    folds = kfold_indices(n, k, seed)
    splits = []
    for i, test in enumerate(folds):
        if k == 2:
            rest = folds[1 - i]
            n_val = max(1, round(len(rest) * 0.2))
            order = np.random.default_rng(seed + 1 + i).permutation(rest)
            splits.append(Split(np.sort(order[n_val:]), np.sort(order[:n_val]), test))
            continue
        val = folds[(i + 1) % k]
        train = np.sort(
            np.concatenate([f for j, f in enumerate(folds) if j not in (i, (i + 1) % k)])
        )
        splits.append(Split(train, val, test))
    return splits


def nested_subset(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of ``size`` of ``n`` items: the first ``size`` of one seeded permutation,
    so that for one seed every smaller subset lies inside every larger one (8 in 16 in 32 ...).

    >>> bool(set(nested_subset(20, 4)) <= set(nested_subset(20, 8)))
    True
    """
    if not 1 <= size <= n:
        raise ConfigError(f"a subset of {n} items holds 1 to {n} of them, not {size}")
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])
