"""What each command does beyond parsing, as library functions with typed arguments.

Each workflow claims its output folder (:class:`~samprompt.runs.RunFolder`), does the work,
writes its report and finishes the folder; :mod:`samprompt.commands` maps a parsed command line
to one call here and prints one line, and :mod:`samprompt.demo` uses the same pieces.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from samprompt._version import source_version
from samprompt.atomic import save_png_atomic, write_bytes_atomic
from samprompt.baselines import UNetConfig, UNetSegmenter, load_unet_model, train_unet
from samprompt.config import FinetuneConfig
from samprompt.data.augment import check_flips, with_flips
from samprompt.data.sample import Dataset
from samprompt.data.splits import train_val_test_split
from samprompt.data.volumes import NiftiDataset, write_volume_masks
from samprompt.embeddings import EmbeddingCache
from samprompt.errors import ConfigError, PromptError
from samprompt.evaluate import (
    EvalResult,
    Evaluator,
    PriorComparison,
    score_with_prior,
    volume_scores,
)
from samprompt.finetune import Finetuner, FitResult
from samprompt.hashing import file_sha256
from samprompt.metrics import Scores
from samprompt.model import LoadedSam
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.strategy import PromptStrategy
from samprompt.protocols import ProtocolResult, cross_validate
from samprompt.report import plot_learning_curve, write_metrics
from samprompt.runs import RunFolder, check_apart
from samprompt.saved import read_model_json
from samprompt.segmenter import SamSegmenter, Segmenter
from samprompt.tta import FlipTTA

__all__ = [
    "FinetuneReport",
    "UNetReport",
    "cross_validate_and_report",
    "evaluate_model_folder",
    "finetune_and_report",
    "load_model_folder",
    "predict_folder",
    "read_boxes_file",
    "report_notes",
    "split_60_20_20",
    "train_unet_and_report",
]


@attrs.frozen
class Splits:
    """The train, validation and test parts of a dataset."""

    train: Dataset
    val: Dataset
    test: Dataset

    def sizes(self, seed: int) -> dict[str, int]:
        """``{"train": n, "val": n, "test": n, "seed": seed}`` for reports."""
        return {
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "seed": seed,
        }


def split_60_20_20(data: Dataset, seed: int) -> Splits:
    """The paper's 60/20/20 train/validation/test split of ``data``."""
    split = train_val_test_split(len(data), (0.6, 0.2, 0.2), seed, data.groups)
    return Splits(data.subset(split.train), data.subset(split.val), data.subset(split.test))


def report_notes(model: LoadedSam, strategy: PromptStrategy, resolution: str) -> list[str]:
    """The lines every SAM report starts with: weights, prompts (oracle or not), resolution."""
    notes = []
    if model.is_random:
        notes.append(
            f"**RANDOM WEIGHTS ({model.spec}): these numbers are not meaningful about SAM.**"
        )
    notes.append(f"checkpoint: {model.spec} (SAM {model.variant}, sha256 {model.sha256})")
    oracle = (
        " — ORACLE: prompts built from ground-truth masks at test time"
        if strategy.needs_mask_at_inference
        else ""
    )
    notes.append(f"prompt strategy: {strategy.name}{oracle}")
    where = "256x256 low-res frame" if resolution == "low" else "original image size"
    notes.append(f"evaluation resolution: {where}")
    notes.append(f"samprompt {source_version()}")
    return notes


# ------------------------------------------------------------------ training
@attrs.frozen(eq=False)
class FinetuneReport:
    """What :func:`finetune_and_report` did: the fit, and the test scores beside the prior."""

    fit: FitResult
    scores: PriorComparison | None
    folder: Path


def finetune_and_report(
    model: LoadedSam,
    data: Dataset,
    strategy: PromptStrategy,
    config: FinetuneConfig,
    out: str | Path,
    *,
    cache: EmbeddingCache,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    main_rank: bool = True,
    inputs: Mapping[str, str | Path | None] | None = None,
    augment: Sequence[str] = (),
) -> FinetuneReport:
    """Split 60/20/20, fine-tune, score the test split beside the mean-mask prior, and write the
    model folder with ``metrics.json``, ``summary.md`` and ``learning_curve.png``.

    ``inputs`` names the files and folders the run reads (``{"--data": path}``): ``out`` may not
    overlap any of them (see :meth:`~samprompt.runs.RunFolder.claim`). ``augment`` trains on the
    training images plus their mirrored copies (:func:`~samprompt.data.with_flips`)."""
    parts = split_60_20_20(data, seed)
    train = with_flips(parts.train, augment)
    folder = Path(out)
    if not main_rank:  # other torchrun ranks train and read the checkpoint, never write
        tuner = Finetuner(model, strategy, config, cache=cache, out_dir=folder, progress=False)
        return FinetuneReport(tuner.fit(train, parts.val, resume=resume), None, folder)
    identity = Finetuner(model, strategy, config, cache=cache).run_identity(train, parts.val)
    with RunFolder.claim(folder, identity, overwrite=overwrite, inputs=inputs) as run:
        run.check_resumable(resume)
        tuner = Finetuner(model, strategy, config, cache=cache, out_dir=run, progress=progress)
        result = tuner.fit(train, parts.val, resume=resume)
    plot_learning_curve([attrs.asdict(r) for r in result.history], run.path("learning_curve.png"))
    resolution = tuner.config.eval_resolution
    scores = score_with_prior(result.segmenter, parts.train, parts.test, resolution)
    metrics = scores.to_dict() | {
        "split": parts.sizes(seed),
        "best_epoch": result.best_epoch,
        "oracle": bool(strategy.needs_mask_at_inference),
    }
    notes = [
        *report_notes(model, strategy, resolution),
        f"best epoch {result.best_epoch}, threshold {result.threshold} (chosen on validation)",
        *_mirroring_notes(augment, ()),
    ]
    write_metrics(run, metrics, "Fine-tuned SAM mask decoder: test split", notes)
    run.finish()
    return FinetuneReport(result, scores, folder)


@attrs.frozen(eq=False)
class UNetReport:
    """What :func:`train_unet_and_report` did: the model, and the test scores beside the prior."""

    model: UNetSegmenter
    scores: PriorComparison
    folder: Path


def train_unet_and_report(
    data: Dataset,
    config: UNetConfig,
    out: str | Path,
    *,
    resolution: str = "low",
    overwrite: bool = False,
    progress: bool = True,
    inputs: Mapping[str, str | Path | None] | None = None,
) -> UNetReport:
    """The U-Net baseline on the 60/20/20 split: a model folder that ``evaluate`` and ``predict``
    accept, with ``metrics.json``, ``summary.md`` and ``learning_curve.png``."""
    parts = split_60_20_20(data, config.seed)
    identity = {
        "baseline": "unet",
        "config": attrs.asdict(config),
        "data": data.fingerprint(),
        "resolution": resolution,
    }
    with RunFolder.claim(out, identity, overwrite=overwrite, inputs=inputs) as run:
        run.check_resumable(False)
        fitted = train_unet(parts.train, parts.val, config, out_dir=run.root, progress=progress)
    plot_learning_curve(
        [attrs.asdict(r) for r in fitted.history],
        run.path("learning_curve.png"),
        "U-Net learning curve",
    )
    scores = score_with_prior(fitted.model, parts.train, parts.test, resolution)
    sizes = parts.sizes(config.seed)
    notes = [
        f"MONAI UNet from scratch, {config.epochs} epochs, DiceFocalLoss, Adam lr {config.lr}",
        f"split 60/20/20 seed {config.seed}: {sizes['train']}/{sizes['val']}/{sizes['test']} "
        "images",
    ]
    write_metrics(run, scores.to_dict(), "U-Net baseline: test split", notes)
    run.finish()
    return UNetReport(fitted.model, scores, run.root)


def _mirroring_notes(
    augment: Sequence[str], tta: Sequence[str], *, swept: bool = False
) -> list[str]:
    notes = []
    if augment:
        notes.append(f"training images plus their mirrored copies ({', '.join(augment)})")
    if tta:
        how = "threshold swept with it on validation" if swept else "at the threshold reported"
        notes.append(f"test-time averaging over {', '.join(tta)} ({how})")
    return notes


def cross_validate_and_report(
    data: Dataset,
    model: LoadedSam,
    strategy: PromptStrategy,
    config: FinetuneConfig | None,
    out: str | Path,
    *,
    folds: int,
    seed: int,
    cache: EmbeddingCache,
    resolution: str = "low",
    overwrite: bool = False,
    progress: bool = True,
    inputs: Mapping[str, str | Path | None] | None = None,
    augment: Sequence[str] = (),
    tta: Sequence[str] = (),
) -> ProtocolResult:
    """k-fold cross-validation (``config=None``: zero-shot) with its report in ``out``.

    Zero-shot folds are scored at ``resolution``; fine-tuned ones at ``config.eval_resolution``.
    ``out`` may not overlap ``inputs``. ``augment`` and ``tta``: mirrored training copies and
    test-time averaging (:func:`~samprompt.protocols.run_folds`).
    """
    check_apart(Path(out), inputs or {})
    result = cross_validate(
        data,
        model,
        strategy,
        config,
        k=folds,
        seed=seed,
        cache=cache,
        out_dir=out,
        progress=progress,
        overwrite=overwrite,
        resolution=resolution,
        augment=augment,
        tta=tta,
    )
    kind = "zero-shot" if config is None else "fine-tuned"
    notes = [
        *report_notes(model, strategy, result.to_dict()["resolution"]),
        "mean ± std over folds of the fold means",
        *_mirroring_notes(augment, tta, swept=True),
    ]
    if result.folder is not None:
        write_metrics(
            result.folder, result.to_dict(), f"{folds}-fold cross-validation ({kind})", notes
        )
        result.folder.finish()
    return result


# --------------------------------------------------------- saved model folders
LoadedModel = SamSegmenter | UNetSegmenter


def load_model_folder(
    folder: str | Path, checkpoint: str | None, cache: EmbeddingCache, device: str
) -> LoadedModel:
    """A saved model folder of either kind (fine-tuned SAM or U-Net), ready to predict."""
    if read_model_json(folder).get("kind") == "unet":
        return load_unet_model(folder, device=device)
    return Finetuner.load(folder, checkpoint, cache=cache, device=device)


def _model_identity(folder: str | Path) -> dict[str, Any]:
    meta = read_model_json(folder)
    return {"folder": str(Path(folder).resolve()), "weights_sha256": meta.get("weights_sha256")}


def evaluate_model_folder(
    model_folder: str | Path,
    data: Dataset,
    out: str | Path,
    *,
    cache: EmbeddingCache,
    checkpoint: str | None = None,
    threshold: float | None = None,
    resolution: str = "low",
    device: str = "cpu",
    overwrite: bool = False,
    data_name: str = "",
    inputs: Mapping[str, str | Path | None] | None = None,
    tta: Sequence[str] = (),
) -> EvalResult:
    """Score a saved model on labelled ``data`` into the report folder ``out`` (with ``tta``,
    averaged over those mirrorings: :class:`~samprompt.tta.FlipTTA`)."""
    identity = {
        "evaluation": _model_identity(model_folder),
        "checkpoint": checkpoint,
        "data": data.fingerprint(),
        "threshold": threshold,
        "resolution": resolution,
        **({"tta": list(check_flips(tta))} if tta else {}),
    }
    inputs = {"--model": model_folder, **(inputs or {})}
    with RunFolder.claim(out, identity, overwrite=overwrite, inputs=inputs) as run:
        loaded = load_model_folder(model_folder, checkpoint, cache, device)
        model = _averaged(loaded, tta)
        result = Evaluator(resolution).evaluate(model, data, threshold)
    notes = [f"model: {model_folder}", f"data: {data_name or 'dataset'} ({len(data)} images)"]
    if isinstance(loaded, SamSegmenter):
        notes = report_notes(loaded.model, loaded.strategy, resolution) + notes
    notes += _mirroring_notes((), tta)
    metrics = result.to_dict()
    if data.groups is not None:
        metrics |= _volume_metrics(model, data, threshold)
        notes.append(
            f"per-volume 3D F1 {metrics['volume_f1_mean']:.4f} ± {metrics['volume_f1_std']:.4f} "
            f"over {len(metrics['volumes'])} volumes (each volume's slices that were read, at "
            "slice size); the per-slice figures are above"
        )
    write_metrics(run, metrics, "Evaluation", notes)
    run.finish()
    return result


def _averaged(model: LoadedModel, tta: Sequence[str]) -> LoadedModel | FlipTTA:
    """``model``, or with ``tta`` its average over those mirrorings (same threshold)."""
    return FlipTTA(model, tta, threshold=model.threshold) if tta else model


def _volume_metrics(model: Segmenter, data: Dataset, threshold: float | None) -> dict[str, Any]:
    rows = volume_scores(model, data, threshold)
    scores = Scores.of([r.f1 for r in rows], [r.iou for r in rows])
    return {**scores.to_dict("volume_"), "volumes": [attrs.asdict(r) for r in rows]}


def read_boxes_file(path: str | Path, data: Dataset) -> dict[str, Prompt]:
    """Prompts by image id from ``{"<id>": [[x0, y0, x1, y1], ...]}`` or
    ``{"<id>": {"boxes": ..., "points": ..., "point_labels": ...}}``."""
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise PromptError(f"{path}: cannot read the boxes file ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise PromptError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise PromptError(f"{path}: expected a JSON object {{id: [[x0, y0, x1, y1], ...]}}")
    sizes = {s.id: s.size for s in data}
    prompts = {}
    for ident, boxes in raw.items():
        if ident not in sizes:
            raise PromptError(f"{path}: id {ident!r} is not among the images")
        prompts[ident] = _boxes_entry(path, ident, boxes, sizes[ident])
    return prompts


def _boxes_entry(path: str | Path, ident: str, entry: Any, size: tuple[int, int]) -> Prompt:
    """One id's prompt; anything malformed is one error naming the file and the id."""
    fields = entry if isinstance(entry, dict) else {"boxes": entry}
    unknown = sorted(set(fields) - {"boxes", "points", "point_labels"})
    try:
        if unknown:
            raise PromptError(f"unknown keys {unknown} (expected boxes, points, point_labels)")
        arrays = {k: _numbers(k, v) for k, v in fields.items() if v is not None}
        if "boxes" not in arrays and "points" not in arrays:
            raise PromptError("gives neither boxes nor points")
        return Prompt(size, **arrays)
    except PromptError as exc:
        raise PromptError(f"{path}: id {ident!r}: {exc}") from exc


def _numbers(key: str, value: Any) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.empty(0)
    if array.size == 0 or array.dtype == object:
        raise PromptError(f"{key} must be numbers, e.g. [[x0, y0, x1, y1]], got {value!r:.80}")
    if key == "boxes" and array.ndim == 1:
        array = array[None]
    return array


def _give_prompts(model: Segmenter, prompts: Mapping[str, Prompt], ids: Sequence[str]) -> None:
    if not isinstance(model, SamSegmenter):
        return
    model.prompts = dict(prompts)
    missing = [i for i in ids if i not in model.prompts]
    if model.strategy.needs_mask_at_inference and missing:
        raise PromptError(
            f"strategy {model.strategy.name!r} takes its boxes from ground-truth masks, which new "
            f"images do not have; pass --boxes FILE.json with boxes for {len(missing)} image(s), "
            f"e.g. {missing[:3]}"
        )


def write_masks(
    run: RunFolder, data: Dataset, model: Segmenter, threshold: float | None = None
) -> int:
    """Write ``<id>.png`` (0/255, at each image's size) for every image, or for slices of NIfTI
    volumes one ``<id>.nii.gz`` per volume with the input's affine and header; returns how many
    files were written."""
    cut = model.threshold if threshold is None else threshold
    if isinstance(data, NiftiDataset):
        probabilities = model.predict_proba(data, resolution="original")
        masks = ((s, p >= cut) for s, p in zip(data.ids, probabilities, strict=True))
        return len(write_volume_masks(data, masks, run.root, _save_nifti))
    count = 0
    for sample, prob in zip(data, model.predict_proba(data, resolution="original"), strict=True):
        save_png_atomic(run.path(f"{sample.id}.png"), (prob >= cut).astype(np.uint8) * 255)
        count += 1
    return count


def _save_nifti(path: Path, image: Any) -> None:
    write_bytes_atomic(path, gzip.compress(image.to_bytes(), mtime=0))


def predict_folder(
    model_folder: str | Path,
    images: Dataset,
    out: str | Path,
    *,
    cache: EmbeddingCache,
    boxes: str | Path | None = None,
    checkpoint: str | None = None,
    threshold: float | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    inputs: Mapping[str, str | Path | None] | None = None,
    tta: Sequence[str] = (),
) -> int:
    """Masks of a saved model for new ``images`` into ``out``; returns how many were written.

    ``out`` may not overlap the model folder, the boxes file or ``inputs`` (e.g. the images).
    ``tta`` averages the model over those mirrorings (not with ``boxes``, which are the
    images')."""
    if tta and boxes is not None:
        raise ConfigError("--tta with --boxes: the boxes are the images', not their mirrors'")
    prompts = read_boxes_file(boxes, images) if boxes is not None else {}
    loaded = load_model_folder(model_folder, checkpoint, cache, device)
    _give_prompts(loaded, prompts, images.ids)
    model = _averaged(loaded, tta)
    identity = {
        "prediction": _model_identity(model_folder),
        "checkpoint": checkpoint,
        "images": images.fingerprint(),
        "boxes": None if boxes is None else file_sha256(boxes),
        "threshold": threshold,
        **({"tta": list(check_flips(tta))} if tta else {}),
    }
    inputs = {"--model": model_folder, "--boxes": boxes, **(inputs or {})}
    with RunFolder.claim(out, identity, overwrite=overwrite, inputs=inputs) as run:
        count = write_masks(run, images, model, threshold)
    run.finish()
    return count
