"""The :class:`Evaluator`: per-image F1 and IoU, mean ± std, and the validation threshold sweep."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from samprompt.data.sample import Dataset, as_dataset
from samprompt.errors import ConfigError
from samprompt.frames import check_resolution, target_at
from samprompt.metrics import Scores, f1_iou
from samprompt.segmenter import MeanMaskPrior, Segmenter

__all__ = [
    "DEFAULT_THRESHOLDS",
    "EvalResult",
    "Evaluator",
    "ImageScore",
    "PriorComparison",
    "SweepResult",
    "VolumeScore",
    "score_with_prior",
    "volume_scores",
]

#: The paper's thresholds: 0.50 to 0.70 in steps of 0.05, on sigmoid probabilities.
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7)


@attrs.frozen
class ImageScore:
    """F1 and IoU of one image."""

    id: str
    f1: float
    iou: float


@attrs.frozen
class EvalResult:
    """Scores of a model on a dataset at one threshold and resolution.

    Attributes
    ----------
    per_image : tuple of ImageScore
        One row per image, in dataset order.
    threshold : float
        Probability threshold used.
    resolution : str
        ``"low"`` (256x256, the paper) or ``"original"``.

    Examples
    --------
    >>> result = EvalResult((ImageScore("a", 0.9, 0.8), ImageScore("b", 0.7, 0.6)), 0.5, "low")
    >>> round(result.f1_mean, 3), round(result.f1_std, 3), result.to_dict()["n_images"]
    (0.8, 0.1, 2)
    """

    per_image: tuple[ImageScore, ...]
    threshold: float
    resolution: str

    @property
    def f1(self) -> np.ndarray:
        """Per-image F1, ``(N,)``."""
        return np.array([s.f1 for s in self.per_image])

    @property
    def iou(self) -> np.ndarray:
        """Per-image IoU, ``(N,)``."""
        return np.array([s.iou for s in self.per_image])

    @property
    def scores(self) -> Scores:
        """F1 and IoU, mean ± std over images."""
        return Scores.of(self.f1, self.iou)

    @property
    def f1_mean(self) -> float:
        """Mean F1 over images."""
        return self.scores.f1_mean

    @property
    def f1_std(self) -> float:
        """Standard deviation of F1 over images."""
        return self.scores.f1_std

    @property
    def iou_mean(self) -> float:
        """Mean IoU over images."""
        return self.scores.iou_mean

    @property
    def iou_std(self) -> float:
        """Standard deviation of IoU over images."""
        return self.scores.iou_std

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` layout: summary keys and ``per_image`` rows."""
        return {
            **self.scores.to_dict(),
            "threshold": self.threshold,
            "resolution": self.resolution,
            "n_images": len(self.per_image),
            "per_image": [attrs.asdict(s) for s in self.per_image],
        }


@attrs.frozen
class SweepResult:
    """The validation threshold sweep (the paper's Tables 3/4).

    Attributes
    ----------
    results : tuple of EvalResult
        One result per threshold, in sweep order.
    best_threshold : float
        The threshold with the highest mean F1 (the lowest on ties).

    Examples
    --------
    >>> from samprompt.data import make_phantoms
    >>> from samprompt.segmenter import MeanMaskPrior
    >>> data = make_phantoms(6, 64)
    >>> sweep = Evaluator().threshold_sweep(MeanMaskPrior().fit(data[:4]), data[4:])
    >>> [row["threshold"] for row in sweep.rows()]
    [0.5, 0.55, 0.6, 0.65, 0.7]
    """

    results: tuple[EvalResult, ...]
    best_threshold: float

    def rows(self) -> list[dict[str, float]]:
        """``threshold, f1_mean, f1_std, iou_mean, iou_std`` per threshold."""
        return [{"threshold": r.threshold, **r.scores.to_dict()} for r in self.results]


class Evaluator:
    """Scores any :class:`~samprompt.segmenter.Segmenter` on labelled samples.

    Parameters
    ----------
    resolution : {"low", "original"}
        ``low``: in SAM's 256x256 low-res frame (the paper); ``original``: at each image's size.
    thresholds : sequence of float
        Thresholds on sigmoid probabilities swept on validation (default 0.50-0.70, step 0.05).

    Notes
    -----
    F1 (Dice) and IoU come from MONAI. An image with an empty ground truth scores 1 when the
    prediction is empty too, else 0.

    Examples
    --------
    >>> from samprompt.data import make_phantoms
    >>> from samprompt.segmenter import MeanMaskPrior
    >>> data = make_phantoms(6, 64, seed=0)
    >>> prior = MeanMaskPrior().fit(data[:4])
    >>> result = Evaluator().evaluate(prior, data[4:], threshold=0.5)
    >>> 0.5 < result.f1_mean <= 1.0
    True
    """

    def __init__(
        self, resolution: str = "low", thresholds: Sequence[float] = DEFAULT_THRESHOLDS
    ) -> None:
        check_resolution(resolution)
        if not thresholds or any(not 0.0 < t < 1.0 for t in thresholds):
            raise ConfigError(f"thresholds must be in (0, 1), got {thresholds}")
        self.resolution = resolution
        self.thresholds = tuple(float(t) for t in thresholds)

    def _scores(
        self, model: Segmenter, dataset: Dataset, thresholds: Sequence[float]
    ) -> tuple[list[str], np.ndarray]:
        """``(ids, scores)`` with scores ``(N, T, 2)``: F1 and IoU per image and threshold."""
        ids, rows = [], []
        for sample, prob in zip(
            dataset, model.predict_proba(dataset, resolution=self.resolution), strict=True
        ):
            truth = target_at(sample.require_mask(), self.resolution)
            if prob.shape != truth.shape:
                raise ConfigError(
                    f"sample {sample.id!r}: prediction {prob.shape} vs truth {truth.shape}"
                )
            preds = np.stack([prob >= t for t in thresholds])
            f1, iou = f1_iou(preds, np.broadcast_to(truth, preds.shape))
            ids.append(sample.id)
            rows.append(np.stack([f1, iou], axis=1))
        return ids, np.stack(rows) if rows else np.zeros((0, len(thresholds), 2))

    @staticmethod
    def _result(
        ids: list[str], scores: np.ndarray, threshold: float, resolution: str
    ) -> EvalResult:
        rows = tuple(
            ImageScore(i, float(f), float(u)) for i, (f, u) in zip(ids, scores, strict=True)
        )
        return EvalResult(rows, threshold, resolution)

    def evaluate(
        self, model: Segmenter, samples: Dataset, threshold: float | None = None
    ) -> EvalResult:
        """F1 and IoU of ``model`` on ``samples`` at ``threshold`` (default: the model's own)."""
        dataset = as_dataset(samples)
        chosen = float(model.threshold if threshold is None else threshold)
        ids, scores = self._scores(model, dataset, [chosen])
        return self._result(ids, scores[:, 0], chosen, self.resolution)

    def threshold_sweep(self, model: Segmenter, val: Dataset) -> SweepResult:
        """Score ``model`` on validation at every threshold; the best mean F1 wins."""
        dataset = as_dataset(val)
        ids, scores = self._scores(model, dataset, self.thresholds)
        results = tuple(
            self._result(ids, scores[:, k], t, self.resolution)
            for k, t in enumerate(self.thresholds)
        )
        best = max(results, key=lambda r: (r.f1_mean, -r.threshold))
        return SweepResult(results, best.threshold)


@attrs.frozen
class VolumeScore:
    """3D F1 (Dice) and IoU of one volume, over the slices that were read."""

    id: str
    f1: float
    iou: float
    slices: int


def volume_scores(
    model: Segmenter, samples: Dataset, threshold: float | None = None
) -> tuple[VolumeScore, ...]:
    """Per-volume 3D F1 and IoU (the field's standard for volumes) at each slice's full size.

    ``samples`` must have :attr:`~samprompt.data.Dataset.groups` (slices of volumes, e.g. a
    :class:`~samprompt.data.volumes.NiftiDataset`); each volume's predicted and true slices are
    stacked and scored by MONAI as one mask. Read every slice (``empty_fraction=1``) for the
    whole-volume figure.
    """
    dataset = as_dataset(samples)
    groups = dataset.groups
    if groups is None:
        raise ConfigError("volume scores need slices of volumes (a dataset with groups)")
    cut = float(model.threshold if threshold is None else threshold)
    stacks: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    predictions = model.predict_proba(dataset, resolution="original")
    for group, sample, prob in zip(groups, dataset, predictions, strict=True):
        preds, truths = stacks.setdefault(group, ([], []))
        preds.append(prob >= cut)
        truths.append(sample.require_mask())
    scores = []
    for group, (preds, truths) in stacks.items():
        width = preds[0].shape[1]
        f1, iou = f1_iou(
            np.concatenate(preds).reshape(1, -1, width),
            np.concatenate(truths).reshape(1, -1, width),
        )
        scores.append(VolumeScore(group, float(f1[0]), float(iou[0]), len(preds)))
    return tuple(scores)


def eval_result_from_dict(data: dict[str, Any]) -> EvalResult:
    """Rebuild an :class:`EvalResult` from :meth:`EvalResult.to_dict` output."""
    rows = tuple(
        ImageScore(str(r["id"]), float(r["f1"]), float(r["iou"])) for r in data["per_image"]
    )
    return EvalResult(rows, float(data["threshold"]), str(data["resolution"]))


@attrs.frozen
class PriorComparison:
    """A model's test scores beside those of the mean-mask prior fitted on the training split."""

    model: EvalResult
    prior: EvalResult

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` dict: the model's summary and per-image rows plus ``prior_*``."""
        return self.model.to_dict() | self.prior.scores.to_dict("prior_")


def score_with_prior(
    model: Segmenter, train: Dataset, test: Dataset, resolution: str = "low"
) -> PriorComparison:
    """Score ``model`` and the mean-mask prior fitted on ``train`` on ``test``."""
    evaluator = Evaluator(resolution)
    scores = evaluator.evaluate(model, test)
    prior = evaluator.evaluate(MeanMaskPrior().fit(train), test, 0.5)
    return PriorComparison(scores, prior)
