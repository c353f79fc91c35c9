"""What each ``samprompt`` command does; :mod:`samprompt.cli` parses the arguments.

Kept apart from the parser so that ``samprompt --help`` and argument errors answer without
importing PyTorch, segment_anything and MONAI (several seconds on a small machine).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from PIL import Image

from samprompt import __version__, distributed
from samprompt.config import FinetuneConfig, check_device
from samprompt.data.readers import (
    FolderDataset,
    ImageFolder,
    MontgomeryDataset,
    PairedDataset,
    ShenzhenDataset,
)
from samprompt.data.sample import Dataset
from samprompt.data.splits import train_val_test_split
from samprompt.embeddings import EmbeddingCache
from samprompt.errors import PromptError, SampromptError
from samprompt.evaluate import Evaluator, score_with_prior
from samprompt.finetune import Finetuner
from samprompt.hashing import file_sha256
from samprompt.model import LoadedSam, load_sam
from samprompt.plugins import family_table, get_strategy, strategy_table
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.strategy import PromptStrategy
from samprompt.report import plot_learning_curve, write_metrics
from samprompt.run_identity import claim_run_folder
from samprompt.segmenter import SamSegmenter

#: Dataset readers by ``--format`` name (the parser lists :data:`samprompt.cli.FORMAT_NAMES`).
FORMATS = {"folder": FolderDataset, "montgomery": MontgomeryDataset, "shenzhen": ShenzhenDataset}


def _load_dataset(path: str, fmt: str, skip_invalid: bool) -> PairedDataset:
    return FORMATS[fmt](path, skip_invalid=skip_invalid)


def _parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SampromptError(f"--prompt-param expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def _strategy(args: argparse.Namespace) -> PromptStrategy:
    return get_strategy(args.prompt, **_parse_params(args.prompt_param))


def _cache(args: argparse.Namespace) -> EmbeddingCache:
    return EmbeddingCache(
        args.cache,
        batch_size=args.embed_batch_size,
        precision=args.precision,
        progress=not args.quiet,
    )


def _config(args: argparse.Namespace) -> FinetuneConfig:
    """The training configuration, checked before any model loads (lr None: the model's)."""
    return FinetuneConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        loss=args.loss,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        patience=args.patience,
        monitor=args.monitor,
        eval_resolution=args.resolution,
    )


def _notes(model: LoadedSam, strategy: PromptStrategy, resolution: str) -> list[str]:
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
    notes.append(
        f"evaluation resolution: {'256x256 low-res frame' if resolution == 'low' else 'original image size'}"
    )
    notes.append(f"samprompt {__version__}")
    return notes


# ---------------------------------------------------------------- commands
def cmd_plugins(args: argparse.Namespace) -> int:
    print("Prompt strategies\n" + strategy_table() + "\n\nModel families\n" + family_table())
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    multi = distributed.init_from_env(args.device)
    model = load_sam(args.checkpoint, seed=args.seed)
    data = _load_dataset(args.data, args.format, args.skip_invalid)
    cache = _cache(args)
    tick = time.perf_counter()
    cache.embed(
        model,
        data,
        device=args.device,
        rank=distributed.rank(),
        world_size=distributed.world_size(),
    )
    seconds = time.perf_counter() - tick
    s = cache.stats
    where = f"rank {distributed.rank()}/{distributed.world_size()}: " if multi else ""
    print(
        f"{where}{len(data)} images: {s.hits} cached, {s.encoder_calls} computed ({seconds:.1f} s) in {cache.root}"
    )
    distributed.barrier()
    return 0


def _split(data: Dataset, seed: int) -> tuple[Dataset, Dataset, Dataset]:
    """The paper's 60/20/20 train/validation/test split of ``data``."""
    split = train_val_test_split(len(data), (0.6, 0.2, 0.2), seed)
    return data.subset(split.train), data.subset(split.val), data.subset(split.test)


def _fit_and_report(
    args: argparse.Namespace,
    model: LoadedSam,
    data: Dataset,
    out: Path,
    strategy: PromptStrategy,
    config: FinetuneConfig,
) -> int:
    train, val, test = _split(data, args.seed)
    cache = _cache(args)
    main_rank = distributed.is_main()
    tuner = Finetuner(
        model, strategy, config, cache=cache, out_dir=out, progress=not args.quiet and main_rank
    )
    result = tuner.fit(train, val, resume=args.resume, overwrite=args.overwrite)
    config = tuner.config
    if not main_rank:
        return 0
    plot_learning_curve([attrs.asdict(r) for r in result.history], out / "learning_curve.png")
    scores, prior, metrics = score_with_prior(result.segmenter, train, test, config.eval_resolution)
    metrics |= {
        "split": {"train": len(train), "val": len(val), "test": len(test), "seed": args.seed},
        "best_epoch": result.best_epoch,
        "oracle": bool(strategy.needs_mask_at_inference),
    }
    write_metrics(
        out,
        metrics,
        "Fine-tuned SAM mask decoder: test split",
        [
            *_notes(model, strategy, config.eval_resolution),
            f"best epoch {result.best_epoch}, threshold {result.threshold} (chosen on validation)",
        ],
    )
    print(
        f"test F1 {scores.f1_mean:.4f} ± {scores.f1_std:.4f}, IoU {scores.iou_mean:.4f} ± {scores.iou_std:.4f} "
        f"(mean-mask prior F1 {prior.f1_mean:.4f}); model and report in {out}"
    )
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    config, strategy = _config(args), _strategy(args)
    check_device(args.device)
    distributed.init_from_env(args.device)
    data = _load_dataset(args.data, args.format, args.skip_invalid)
    model = load_sam(args.checkpoint, seed=args.seed)
    return _fit_and_report(args, model, data, Path(args.out), strategy, config)


def cmd_cv(args: argparse.Namespace) -> int:
    from samprompt.protocols import cross_validate

    config = None if args.zero_shot else _config(args)
    strategy = _strategy(args)
    check_device(args.device)
    data = _load_dataset(args.data, args.format, args.skip_invalid)
    model = load_sam(args.checkpoint, seed=args.seed)
    out = Path(args.out)
    result = cross_validate(
        data,
        model,
        strategy,
        config,
        k=args.folds,
        seed=args.seed,
        cache=_cache(args),
        out_dir=out,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    metrics = result.to_dict()
    title = (
        f"{args.folds}-fold cross-validation ({'zero-shot' if config is None else 'fine-tuned'})"
    )
    write_metrics(
        out,
        metrics,
        title,
        [*_notes(model, strategy, args.resolution), "mean ± std over folds of the fold means"],
    )
    s = result.summary()
    print(
        f"F1 {s['f1_mean']:.4f} ± {s['f1_std']:.4f}, IoU {s['iou_mean']:.4f} ± {s['iou_std']:.4f} over "
        f"{args.folds} folds (mean-mask prior F1 {s['prior_f1_mean']:.4f}); report in {out}"
    )
    return 0


def _load_any_model(folder: str, checkpoint: str | None, cache: EmbeddingCache, device: str) -> Any:
    from samprompt.saved import read_model_json

    kind = read_model_json(folder).get("kind")
    if kind == "unet":
        from samprompt.baselines import load_unet_model

        return load_unet_model(folder, device=device)
    return Finetuner.load(folder, checkpoint, cache=cache, device=device)


def _model_identity(folder: str) -> dict[str, Any]:
    from samprompt.saved import read_model_json

    meta = read_model_json(folder)
    return {"folder": str(Path(folder).resolve()), "weights_sha256": meta.get("weights_sha256")}


def cmd_evaluate(args: argparse.Namespace) -> int:
    check_device(args.device)
    data = _load_dataset(args.data, args.format, args.skip_invalid)
    claim_run_folder(
        args.out,
        {
            "evaluation": _model_identity(args.model),
            "checkpoint": args.checkpoint,
            "data": data.fingerprint(),
            "threshold": args.threshold,
            "resolution": args.resolution,
        },
        overwrite=args.overwrite,
    )
    model = _load_any_model(args.model, args.checkpoint, _cache(args), args.device)
    result = Evaluator(args.resolution).evaluate(model, data, args.threshold)
    notes = [f"model: {args.model}", f"data: {args.data} ({len(data)} images)"]
    if isinstance(model, SamSegmenter):
        notes = _notes(model.model, model.strategy, args.resolution) + notes
    write_metrics(args.out, result.to_dict(), "Evaluation", notes)
    print(
        f"F1 {result.f1_mean:.4f} ± {result.f1_std:.4f}, IoU {result.iou_mean:.4f} ± {result.iou_std:.4f} "
        f"on {len(data)} images; report in {args.out}"
    )
    return 0


def _boxes(path: str | None, data: Dataset) -> dict[str, Prompt]:
    if path is None:
        return {}
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
        entry = boxes if isinstance(boxes, dict) else {"boxes": boxes}
        prompts[ident] = Prompt(
            sizes[ident],
            boxes=entry.get("boxes"),
            points=entry.get("points"),
            point_labels=entry.get("point_labels"),
        )
    return prompts


def cmd_predict(args: argparse.Namespace) -> int:
    check_device(args.device)
    data = ImageFolder(args.images, skip_invalid=args.skip_invalid)
    boxes = _boxes(args.boxes, data)
    out = Path(args.out)
    model = _load_any_model(args.model, args.checkpoint, _cache(args), args.device)
    if isinstance(model, SamSegmenter):
        model.prompts = boxes
        missing = [i for i in data.ids if i not in model.prompts]
        if model.strategy.needs_mask_at_inference and missing:
            raise PromptError(
                f"strategy {model.strategy.name!r} takes its boxes from ground-truth masks, which new "
                f"images do not have; pass --boxes FILE.json with boxes for {len(missing)} image(s), "
                f"e.g. {missing[:3]}"
            )
    claim_run_folder(
        out,
        {
            "prediction": _model_identity(args.model),
            "checkpoint": args.checkpoint,
            "images": data.fingerprint(),
            "boxes": None if args.boxes is None else file_sha256(args.boxes),
            "threshold": args.threshold,
        },
        overwrite=args.overwrite,
    )
    count = 0
    for sample, prob in zip(data, model.predict_proba(data, resolution="original"), strict=True):
        mask = (prob >= (args.threshold if args.threshold is not None else model.threshold)).astype(
            np.uint8
        ) * 255
        tmp = out / f".{sample.id}.png.tmp"
        Image.fromarray(mask).save(tmp, format="PNG")
        tmp.replace(out / f"{sample.id}.png")
        count += 1
    print(f"wrote {count} masks (0/255 PNG, each at its image's size) to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from samprompt.interop import export_sam_checkpoint

    sizes = [tuple(size) for size in args.image_size or []]
    if args.format == "onnx":
        from samprompt.onnx_export import export_onnx

        folder = export_onnx(
            args.model,
            args.out,
            checkpoint=args.checkpoint,
            image_sizes=sizes,
            encoder=not args.decoder_only,
        )
        written = ", ".join(sorted(p.name for p in folder.iterdir()))
        print(f"wrote {folder}/ ({written}); run them with onnxruntime, see export.json")
        return 0
    if args.decoder_only:
        raise SampromptError("--decoder-only applies to --format onnx")
    weights, side = export_sam_checkpoint(
        args.model,
        args.out,
        checkpoint=args.checkpoint,
        image_sizes=sizes,
    )
    print(f"wrote {weights} (full model, fine-tuned decoder merged) and {side} (how to prompt it)")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from samprompt.reproduce import ReproduceSettings, run_reproduce

    check_device(args.device)
    data = _load_dataset(args.data, args.dataset, args.skip_invalid)
    test_data = (
        _load_dataset(args.test_data, args.test_format, args.skip_invalid)
        if args.test_data
        else None
    )
    model = load_sam(args.checkpoint, seed=args.seed)
    settings = ReproduceSettings(
        out=Path(args.out),
        epochs=args.epochs,
        folds=args.folds,
        seed=args.seed,
        unet_epochs=args.unet_epochs,
        patience=args.patience,
        monitor=args.monitor,
        compare_patience=args.compare_patience or None,
        device=args.device,
        precision=args.precision,
        quick=args.quick,
    )
    cache = (
        EmbeddingCache(args.cache, precision=args.precision, progress=not args.quiet)
        if args.cache
        else None
    )
    run_reproduce(
        data,
        model,
        settings,
        test_data=test_data,
        cache=cache,
        dataset_name=f"{args.dataset} ({args.data})",
        progress=not args.quiet,
    )
    return 0


def cmd_baseline_unet(args: argparse.Namespace) -> int:
    from samprompt.baselines import UNetConfig, train_unet

    check_device(args.device)
    data = _load_dataset(args.data, args.format, args.skip_invalid)
    train, val, test = _split(data, args.seed)
    config = UNetConfig(epochs=args.epochs, seed=args.seed, device=args.device)
    out = Path(args.out)
    model, history = train_unet(train, val, config, out_dir=out, progress=not args.quiet)
    plot_learning_curve(
        [attrs.asdict(r) for r in history], out / "learning_curve.png", "U-Net learning curve"
    )
    scores, prior, metrics = score_with_prior(model, train, test, args.resolution)
    write_metrics(
        out,
        metrics,
        "U-Net baseline: test split",
        [
            f"MONAI UNet from scratch, {args.epochs} epochs, DiceFocalLoss, Adam lr {config.lr}",
            f"split 60/20/20 seed {args.seed}: {len(train)}/{len(val)}/{len(test)} images",
        ],
    )
    print(
        f"U-Net test F1 {scores.f1_mean:.4f} ± {scores.f1_std:.4f} (mean-mask prior {prior.f1_mean:.4f}); "
        f"model in {out}"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from samprompt.demo import run_demo

    run_demo(Path(args.out), epochs=args.epochs, n_images=args.images, progress=not args.quiet)
    return 0
