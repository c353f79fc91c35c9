"""Test-time augmentation: a segmenter's probabilities averaged over mirrored copies of each image.

Each mirrored copy is predicted as an image of its own (SAM: its own embedding, cached; its own
prompt from the strategy, which is right for prompts that need no position prior, such as
``learned``, ``refine`` and boxes, but leaves a fixed point prior such as ``mean-points``
unmirrored), mirrored back, and averaged with the original's probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from samprompt.data import Dataset, Flipped, as_dataset, check_flips
from samprompt.data.augment import flip_array
from samprompt.segmenter import Segmenter

__all__ = ["FlipTTA"]


class FlipTTA:
    """A :class:`~samprompt.segmenter.Segmenter` that averages ``segmenter`` over flips.

    Parameters
    ----------
    segmenter : Segmenter
        Any model with ``predict_proba`` (a fine-tuned SAM, a U-Net, ...).
    flips : sequence of str
        Mirrorings of :data:`samprompt.data.FLIPS` to average with the image itself.
    threshold : float
        Probability threshold of :meth:`predict_masks` (default 0.5).

    Examples
    --------
    >>> from samprompt import MeanMaskPrior
    >>> from samprompt.data import make_phantoms
    >>> data = make_phantoms(4, 32)
    >>> tta = FlipTTA(MeanMaskPrior().fit(data[:3]), ["hflip"])
    >>> next(tta.predict_proba(data[3:], resolution="original")).shape
    (32, 32)
    """

    def __init__(self, segmenter: Segmenter, flips: Sequence[str], threshold: float = 0.5) -> None:
        self.segmenter = segmenter
        self.flips = check_flips(flips)
        self.threshold = threshold

    def predict_proba(self, samples: Dataset, *, resolution: str = "low") -> Iterator[np.ndarray]:
        """Foreground probabilities, the mean over the image and its mirrored copies."""
        data = as_dataset(samples)
        n = len(data)
        mirrored = Flipped(data, self.flips)
        views = [self.segmenter.predict_proba(data, resolution=resolution)]
        for block in range(1, 1 + len(self.flips)):
            copies = mirrored.subset(range(block * n, (block + 1) * n))
            views.append(self.segmenter.predict_proba(copies, resolution=resolution))
        for original, *others in zip(*views, strict=True):
            total = original.astype(np.float64)
            for kind, probability in zip(self.flips, others, strict=True):
                total += flip_array(probability, kind)
            yield (total / (1 + len(others))).astype(np.float32)

    def predict_masks(
        self, samples: Dataset, *, resolution: str = "original"
    ) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(id, mask)``: the averaged probability at or above ``threshold``."""
        data = as_dataset(samples)
        for sample, probability in zip(
            data, self.predict_proba(data, resolution=resolution), strict=True
        ):
            yield sample.id, probability >= self.threshold
