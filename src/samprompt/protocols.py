"""The paper's protocols: k-fold cross-validation, cross-dataset tests and zero-shot SAM.

Every protocol reports the mean-mask prior beside the model, so a result can be read against the
floor any method must beat. With ``out_dir`` each fold is a resumable run folder: a fold whose
``metrics.json`` exists is read back, not recomputed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from samprompt.baselines import UNetConfig, train_unet
from samprompt.config import FinetuneConfig
from samprompt.data.augment import check_flips, with_flips
from samprompt.data.sample import Dataset, as_dataset
from samprompt.data.splits import Split, cv_splits, nested_subset, train_val_test_split
from samprompt.early_stopping import EarlyStopOutcome
from samprompt.embeddings import EmbeddingCache
from samprompt.errors import ConfigError
from samprompt.evaluate import DEFAULT_THRESHOLDS, EvalResult, Evaluator, eval_result_from_dict
from samprompt.finetune import Finetuner
from samprompt.metrics import summarize
from samprompt.model import LoadedSam
from samprompt.prompts.calls import fit_strategy
from samprompt.prompts.strategy import PromptStrategy
from samprompt.run_identity import describe_model, describe_strategy
from samprompt.runs import RunFolder, released_on_error
from samprompt.saved import load_sam_model, read_model_json
from samprompt.segmenter import MeanMaskPrior, SamSegmenter, Segmenter
from samprompt.tta import FlipTTA

__all__ = [
    "FoldFit",
    "FoldResult",
    "ProtocolResult",
    "cross_dataset",
    "cross_dataset_folds",
    "cross_validate",
    "run_folds",
    "unet_cross_validate",
    "zero_shot",
]


@attrs.frozen
class FoldResult:
    """One fold: test scores of the model and of the mean-mask prior, and the chosen threshold."""

    fold: int
    test: EvalResult
    prior: EvalResult
    threshold: float
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    history: tuple[dict[str, float], ...] = ()
    sweep: tuple[dict[str, float], ...] = ()
    early_stop: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON layout (``metrics.json`` of a fold folder)."""
        data = self.test.to_dict()
        data.update(
            {
                "fold": self.fold,
                "prior": self.prior.to_dict(),
                "train_ids": list(self.train_ids),
                "val_ids": list(self.val_ids),
                "history": list(self.history),
                "sweep": list(self.sweep),
            }
        )
        if self.early_stop is not None:
            data["early_stop"] = self.early_stop
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FoldResult:
        """Inverse of :meth:`to_dict`."""
        return cls(
            int(data["fold"]),
            eval_result_from_dict(data),
            eval_result_from_dict(data["prior"]),
            float(data["threshold"]),
            tuple(data["train_ids"]),
            tuple(data["val_ids"]),
            tuple(data.get("history", ())),
            tuple(data.get("sweep", ())),
            data.get("early_stop"),
        )


@attrs.frozen
class ProtocolResult:
    """Folds of a protocol and their aggregate: mean ± std over folds of the fold means (as the
    paper reports; over the test images when there is one fold), plus every per-image row."""

    name: str
    folds: tuple[FoldResult, ...]
    meta: dict[str, Any] = attrs.field(factory=dict)
    #: The root folder the protocol claimed (None without ``out_dir``); a command finishes it
    #: after writing its report.
    folder: RunFolder | None = attrs.field(default=None, eq=False, repr=False)

    def _over_folds(self, key: str, prior: bool = False) -> tuple[float, float]:
        values = [getattr(f.prior if prior else f.test, key) for f in self.folds]
        return summarize(values)

    def summary(self) -> dict[str, float]:
        """``f1_mean``, ``f1_std``, ``iou_mean``, ``iou_std`` over folds, and the prior's.

        With a single fold (a hold-out or cross-dataset test) the spread is over that fold's test
        images: a spread over one fold would read 0 whatever the scores."""
        if len(self.folds) == 1:
            only = self.folds[0]
            return {**only.test.scores.to_dict(), **only.prior.scores.to_dict("prior_")}
        f1, iou = self._over_folds("f1_mean"), self._over_folds("iou_mean")
        pf1, piou = self._over_folds("f1_mean", True), self._over_folds("iou_mean", True)
        return {
            "f1_mean": f1[0],
            "f1_std": f1[1],
            "iou_mean": iou[0],
            "iou_std": iou[1],
            "prior_f1_mean": pf1[0],
            "prior_f1_std": pf1[1],
            "prior_iou_mean": piou[0],
            "prior_iou_std": piou[1],
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` layout: summary keys, ``per_image`` rows (with fold) and folds."""
        per_image = [
            dict(attrs.asdict(s), fold=f.fold) for f in self.folds for s in f.test.per_image
        ]
        thresholds = [f.threshold for f in self.folds]
        return {
            "protocol": self.name,
            **self.summary(),
            "threshold": thresholds[0] if len(set(thresholds)) == 1 else thresholds,
            "resolution": self.folds[0].test.resolution,
            "n_folds": len(self.folds),
            "meta": self.meta,
            "per_image": per_image,
            "folds": [f.to_dict() for f in self.folds],
        }


@attrs.frozen
class FoldFit:
    """What fitting one fold gives :func:`run_folds`: the model, its validation threshold, the
    training history and the validation sweep, and (with ``compare_patience``) what early
    stopping would have kept."""

    segmenter: Segmenter
    threshold: float
    history: tuple[dict[str, float], ...] = ()
    sweep: tuple[dict[str, float], ...] = ()
    early_stop: EarlyStopOutcome | None = None


FitFn = Callable[[Dataset, Dataset, "RunFolder | None"], FoldFit]


def _sam_fit(
    model: LoadedSam,
    strategy: PromptStrategy,
    config: FinetuneConfig | None,
    cache: EmbeddingCache,
    progress: bool,
    initial_decoder: dict[str, Any],
) -> FitFn:
    """How one fold trains (or, with ``config=None``, only fits the prompts of) SAM."""

    def fit(train: Dataset, val: Dataset, fold_dir: RunFolder | None) -> FoldFit:
        fold_strategy = copy.deepcopy(strategy)
        model.sam.mask_decoder.load_state_dict(initial_decoder)
        if config is not None:
            tuner = Finetuner(
                model, fold_strategy, config, cache=cache, out_dir=fold_dir, progress=progress
            )
            result = tuner.fit(train, val, resume=True)
            return FoldFit(
                result.segmenter,
                result.threshold,
                tuple(attrs.asdict(r) for r in result.history),
                tuple(result.sweep.rows()),
                result.early_stop,
            )
        fit_strategy(fold_strategy, train)
        segmenter = SamSegmenter(
            model,
            fold_strategy,
            cache,
            multimask_output=model.family_info.zero_shot_multimask,
        )
        sweep = Evaluator("low", DEFAULT_THRESHOLDS).threshold_sweep(segmenter, val)
        return FoldFit(segmenter, sweep.best_threshold, (), tuple(sweep.rows()))

    return fit


def _run_fold(
    fold: int,
    train: Dataset,
    val: Dataset,
    test: Dataset,
    fit: FitFn,
    fold_dir: Path | None,
    resolution: str,
    identity: Mapping[str, Any],
    overwrite: bool = False,
) -> FoldResult:
    """Fit, pick the threshold on ``val``, score ``test`` and the mean-mask prior; resumable.

    ``fold_dir`` is claimed for ``identity`` plus the fold's data: its results are reused only
    when they were produced by this same run and the fold finished."""
    folder = None
    if fold_dir is not None:
        fold_identity = {
            **identity,
            "fold": fold,
            "resolution": resolution,
            "data": {
                "train": train.fingerprint(),
                "val": val.fingerprint(),
                "test": test.fingerprint(),
            },
        }
        folder = RunFolder.claim(fold_dir, fold_identity, overwrite=overwrite)
        if folder.status == "same" and folder.finished:
            return FoldResult.from_dict(folder.read_json("metrics.json"))
    with released_on_error(folder):
        fitted = fit(train, val, folder)
    evaluator = Evaluator(resolution)
    test_result = evaluator.evaluate(fitted.segmenter, test, fitted.threshold)
    prior = evaluator.evaluate(MeanMaskPrior().fit(train), test, 0.5)
    out = FoldResult(
        fold,
        test_result,
        prior,
        fitted.threshold,
        tuple(train.ids),
        tuple(val.ids),
        fitted.history,
        fitted.sweep,
        _early_stop_scores(fitted, test, test_result, evaluator),
    )
    if folder is not None:
        folder.write_json("metrics.json", out.to_dict())
        folder.finish()
    return out


def _early_stop_scores(
    fitted: FoldFit, test: Dataset, fixed: EvalResult, evaluator: Evaluator
) -> dict[str, Any] | None:
    """Test scores of the decoder early stopping would have kept, beside the fixed run's, and
    the training seconds each spent (every epoch's time as measured in this run)."""
    outcome = fitted.early_stop
    if outcome is None:
        return None
    if outcome.stopped:
        segmenter = fitted.segmenter
        sam = segmenter.segmenter if isinstance(segmenter, FlipTTA) else segmenter
        if not isinstance(sam, SamSegmenter):
            raise TypeError("early-stopping scores need a SamSegmenter")
        with outcome.applied(sam.trained_module):
            early = evaluator.evaluate(segmenter, test, outcome.threshold)
    else:
        early = fixed
    seconds = [float(h["seconds"]) for h in fitted.history]
    return {
        **outcome.summary(),
        "f1_mean": early.f1_mean,
        "f1_std": early.f1_std,
        "iou_mean": early.iou_mean,
        "iou_std": early.iou_std,
        "training_s": sum(seconds[: outcome.epochs_run]),
        "training_s_fixed": sum(seconds),
    }


def run_folds(
    name: str,
    dataset: Dataset,
    fit: FitFn,
    *,
    k: int,
    seed: int,
    folds: Sequence[int] | None,
    out_dir: str | Path | None,
    resolution: str,
    meta: dict[str, Any],
    identity: Mapping[str, Any],
    overwrite: bool = False,
    on_fold: Callable[[int], None] | None = None,
    train_size: int | None = None,
    augment: Sequence[str] = (),
    tta: Sequence[str] = (),
) -> ProtocolResult:
    """Run ``fit`` on every fold of :func:`~samprompt.data.cv_splits` (any model, e.g. a U-Net).

    ``identity`` describes the run (model, strategy, config; see :mod:`samprompt.run_identity`):
    ``out_dir`` and each fold folder are reused only by a run that describes itself the same way
    (``overwrite=True`` empties ``out_dir`` first). ``on_fold(i)`` is called after fold ``i``
    finished (or was read back). ``train_size`` trains each fold on that many of its training
    images (:func:`~samprompt.data.nested_subset`, seeded by ``seed`` and the fold), validation
    and test folds unchanged. ``augment`` adds mirrored copies of each training image
    (:func:`~samprompt.data.with_flips`); ``tta`` scores the fold's model averaged over those
    mirrorings (:class:`~samprompt.tta.FlipTTA`), its threshold swept again on validation."""
    identity = {"protocol": name, **identity}
    if train_size is not None:
        identity["train_size"] = train_size
    for key, flips in (("augment", check_flips(augment)), ("tta", check_flips(tta))):
        if flips:
            identity[key] = list(flips)
    folder = None
    if out_dir is not None:
        root_identity = {**identity, "k": k, "seed": seed, "resolution": resolution}
        root_identity["data"] = dataset.fingerprint()
        folder = RunFolder.claim(out_dir, root_identity, overwrite=overwrite)
    fold_fit = _mirrored(fit, augment, tta, resolution)
    with released_on_error(folder):
        results = []
        for i, split in enumerate(cv_splits(len(dataset), k, seed, dataset.groups)):
            if folds is not None and i not in folds:
                continue
            fold_dir = folder.path(f"fold_{i}") if folder is not None else None
            train, val, test = _fold_parts(dataset, split, train_size, seed + i)
            results.append(_run_fold(i, train, val, test, fold_fit, fold_dir, resolution, identity))
            if on_fold is not None:
                on_fold(i)
    result = ProtocolResult(name, tuple(results), {"k": k, "seed": seed, **meta}, folder)
    if folder is not None:
        folder.write_json("metrics.json", result.to_dict())
    return result


def _fold_parts(
    dataset: Dataset, split: Split, train_size: int | None, seed: int
) -> tuple[Dataset, Dataset, Dataset]:
    """A fold's train, validation and test sets; only ``train_size`` of the training images."""
    train = split.train
    if train_size is not None:
        train = train[nested_subset(len(train), min(train_size, len(train)), seed)]
    return dataset.subset(train), dataset.subset(split.val), dataset.subset(split.test)


def _mirrored(fit: FitFn, augment: Sequence[str], tta: Sequence[str], resolution: str) -> FitFn:
    """``fit`` on the training images plus their ``augment`` mirrorings; with ``tta``, its model
    averaged over those mirrorings and the threshold swept again on validation with the averaged
    probabilities (over the thresholds the fit swept). The floor and the fold's records keep the
    original training images."""
    if not augment and not tta:
        return fit

    def mirrored_fit(train: Dataset, val: Dataset, fold_dir: RunFolder | None) -> FoldFit:
        fitted = fit(with_flips(train, augment), val, fold_dir)
        if not tta:
            return fitted
        thresholds = [row["threshold"] for row in fitted.sweep] or list(DEFAULT_THRESHOLDS)
        averaged = FlipTTA(fitted.segmenter, tta)
        sweep = Evaluator(resolution, thresholds).threshold_sweep(averaged, val)
        averaged.threshold = sweep.best_threshold
        return attrs.evolve(
            fitted, segmenter=averaged, threshold=sweep.best_threshold, sweep=tuple(sweep.rows())
        )

    return mirrored_fit


def _sam_meta(model: LoadedSam, strategy: PromptStrategy) -> dict[str, Any]:
    return {
        "strategy": strategy.name,
        "oracle": bool(strategy.needs_mask_at_inference),
        "checkpoint": model.spec,
        "sha256": model.sha256,
        "random_weights": model.is_random,
    }


def _sam_identity(
    model: LoadedSam, strategy: PromptStrategy, config: FinetuneConfig | None
) -> dict[str, Any]:
    return {
        "model": describe_model(model),
        "strategy": describe_strategy(strategy),
        "config": None if config is None else config.to_dict(),
    }


def cross_validate(
    dataset: Dataset | Sequence[Any],
    model: LoadedSam,
    strategy: PromptStrategy,
    config: FinetuneConfig | None,
    *,
    k: int = 5,
    seed: int = 0,
    folds: Sequence[int] | None = None,
    cache: EmbeddingCache | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    resolution: str = "low",
    on_fold: Callable[[int], None] | None = None,
    train_size: int | None = None,
    augment: Sequence[str] = (),
    tta: Sequence[str] = (),
) -> ProtocolResult:
    """k-fold cross-validation (:func:`samprompt.data.cv_splits`): fold ``i`` tests on fold ``i``,
    validates (threshold sweep, best epoch) on fold ``i + 1`` and trains on the rest.

    ``config=None`` evaluates the unmodified model (zero-shot) on the same folds, scored at
    ``resolution``; a fine-tuned run is scored at ``config.eval_resolution``. Each fold starts
    from the model's decoder weights as they are when this is called. With ``out_dir``, finished
    folds of the same run are reused and an interrupted one resumes; a folder holding another run
    is refused unless ``overwrite`` (see :mod:`samprompt.run_identity`). ``on_fold``,
    ``train_size``, ``augment`` and ``tta``: see :func:`run_folds`.
    """
    data = as_dataset(dataset)
    if config is not None and config.lr is None:
        config = config.replace(lr=model.recommended_lr)
    cache = cache or EmbeddingCache(progress=progress)
    initial = copy.deepcopy(model.sam.mask_decoder.state_dict())
    fit = _sam_fit(model, strategy, config, cache, progress, initial)
    try:
        return run_folds(
            "zero-shot" if config is None else "cross-validation",
            data,
            fit,
            k=k,
            seed=seed,
            folds=folds,
            out_dir=out_dir,
            resolution=config.eval_resolution if config else resolution,
            meta=_sam_meta(model, strategy),
            identity=_sam_identity(model, strategy, config),
            overwrite=overwrite,
            on_fold=on_fold,
            train_size=train_size,
            augment=augment,
            tta=tta,
        )
    finally:
        model.sam.mask_decoder.load_state_dict(initial)


def zero_shot(
    dataset: Dataset | Sequence[Any], model: LoadedSam, strategy: PromptStrategy, **kwargs: Any
) -> ProtocolResult:
    """The unmodified SAM with ``strategy``'s prompts on the cross-validation folds (the strategy
    is still fitted on each fold's training split). Takes :func:`cross_validate`'s keywords."""
    return cross_validate(dataset, model, strategy, None, **kwargs)


def cross_dataset(
    train_dataset: Dataset | Sequence[Any],
    test_dataset: Dataset | Sequence[Any],
    model: LoadedSam,
    strategy: PromptStrategy,
    config: FinetuneConfig,
    *,
    seed: int = 0,
    cache: EmbeddingCache | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> ProtocolResult:
    """Train on one dataset (80% train, 20% validation) and test on all of another.

    ``out_dir`` is reused only by the same run, unless ``overwrite`` (see :func:`cross_validate`).
    """
    data, test = as_dataset(train_dataset), as_dataset(test_dataset)
    if config.lr is None:
        config = config.replace(lr=model.recommended_lr)
    split = train_val_test_split(len(data), (0.8, 0.2, 0.0), seed, data.groups)
    cache = cache or EmbeddingCache(progress=progress)
    initial = copy.deepcopy(model.sam.mask_decoder.state_dict())
    fit = _sam_fit(model, strategy, config, cache, progress, initial)
    root = Path(out_dir) if out_dir is not None else None
    try:
        fold = _run_fold(
            0,
            data.subset(split.train),
            data.subset(split.val),
            test,
            fit,
            root,
            config.eval_resolution,
            {"protocol": "cross-dataset", **_sam_identity(model, strategy, config), "seed": seed},
            overwrite,
        )
    finally:
        model.sam.mask_decoder.load_state_dict(initial)
    meta = {
        "seed": seed,
        "strategy": strategy.name,
        "oracle": bool(strategy.needs_mask_at_inference),
        "train_size": len(data),
        "test_size": len(test),
    }
    return ProtocolResult("cross-dataset", (fold,), meta)


def cross_dataset_folds(
    source: ProtocolResult,
    train_dataset: Dataset | Sequence[Any],
    test_dataset: Dataset | Sequence[Any],
    model: LoadedSam,
    *,
    cache: EmbeddingCache | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    on_fold: Callable[[int], None] | None = None,
) -> ProtocolResult:
    """Cross-dataset test without training again: every fold model of a fine-tuned
    cross-validation on ``train_dataset`` (``source``, run with ``out_dir``, which saved them)
    scored on all of ``test_dataset`` at the threshold its own validation chose, beside the
    mean-mask prior of its own training images. The summary is mean ± std over the fold models,
    so the spread is that of training runs, as in the cross-validation itself.

    ``out_dir`` is reused only by the same fold models and test data; ``model`` is the base
    checkpoint the folds were trained from (its decoder is restored afterwards).
    """
    if source.folder is None:
        raise ConfigError(
            f"cross_dataset_folds needs the fold models of {source.name!r}: run it with out_dir"
        )
    if source.folder.identity.get("tta"):
        raise ConfigError(
            f"{source.folder.root}: its folds were scored with test-time flips (tta), which the "
            "saved fold models do not hold; cross_dataset_folds scores the decoders alone"
        )
    data, test = as_dataset(train_dataset), as_dataset(test_dataset)
    cache = cache or EmbeddingCache(progress=progress)
    model_dirs = [source.folder.path(f"fold_{fold.fold}") for fold in source.folds]
    weights = [read_model_json(path)["weights_sha256"] for path in model_dirs]
    identity = {"protocol": "cross-dataset folds", "model": describe_model(model)}
    folder = None
    if out_dir is not None:
        root = {**identity, "weights": weights, "test": test.fingerprint()}
        folder = RunFolder.claim(out_dir, root)
    initial = copy.deepcopy(model.sam.mask_decoder.state_dict())
    results = []
    try:
        with released_on_error(folder):
            for fold, model_dir, sha in zip(source.folds, model_dirs, weights, strict=True):
                train, val = (_by_ids(data, ids) for ids in (fold.train_ids, fold.val_ids))
                fit = _saved_fit(model_dir, model, cache, fold.threshold)
                fold_dir = folder.path(f"fold_{fold.fold}") if folder is not None else None
                fold_id, res = {**identity, "weights": sha}, fold.test.resolution
                results.append(_run_fold(fold.fold, train, val, test, fit, fold_dir, res, fold_id))
                if on_fold is not None:
                    on_fold(fold.fold)
    finally:
        model.sam.mask_decoder.load_state_dict(initial)
    meta = {**source.meta, "train_size": len(data), "test_size": len(test)}
    result = ProtocolResult("cross-dataset", tuple(results), meta, folder)
    if folder is not None:
        folder.write_json("metrics.json", result.to_dict())
    return result


def _by_ids(data: Dataset, ids: Sequence[str]) -> Dataset:
    index = {ident: i for i, ident in enumerate(data.ids)}
    missing = [ident for ident in ids if ident not in index]
    if missing:
        raise ConfigError(
            f"the fold models were trained on images this dataset lacks: {', '.join(missing[:3])}"
        )
    return data.subset([index[ident] for ident in ids])


def _saved_fit(model_dir: Path, model: LoadedSam, cache: EmbeddingCache, threshold: float) -> FitFn:
    """A "fit" that loads the fold model saved in ``model_dir`` instead of training one."""

    def fit(train: Dataset, val: Dataset, fold_dir: RunFolder | None) -> FoldFit:
        return FoldFit(load_sam_model(model_dir, model, cache=cache), threshold)

    return fit


def unet_cross_validate(
    dataset: Dataset | Sequence[Any],
    config: UNetConfig | None = None,
    *,
    k: int = 5,
    seed: int = 0,
    folds: Sequence[int] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    on_fold: Callable[[int], None] | None = None,
    train_size: int | None = None,
    augment: Sequence[str] = (),
    tta: Sequence[str] = (),
) -> ProtocolResult:
    """The U-Net baseline (:func:`samprompt.baselines.train_unet`) on the same folds as
    :func:`cross_validate` (same ``k`` and ``seed`` give the same splits); ``augment`` and
    ``tta`` as there, so that a comparison gives both models the same mirrored images."""
    unet_config = config or UNetConfig(seed=seed)

    def fit(train: Dataset, val: Dataset, fold_dir: RunFolder | None) -> FoldFit:
        fitted = train_unet(train, val, unet_config, out_dir=fold_dir, progress=progress)
        history = tuple(attrs.asdict(r) for r in fitted.history)
        return FoldFit(fitted.model, fitted.model.threshold, history, tuple(fitted.sweep.rows()))

    return run_folds(
        "unet",
        as_dataset(dataset),
        fit,
        k=k,
        seed=seed,
        folds=folds,
        out_dir=out_dir,
        resolution="low",
        meta={"model": "MONAI UNet", "config": attrs.asdict(unet_config)},
        identity={"model": {"name": "MONAI UNet"}, "config": attrs.asdict(unet_config)},
        overwrite=overwrite,
        on_fold=on_fold,
        train_size=train_size,
        augment=augment,
        tta=tta,
    )
