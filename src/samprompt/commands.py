"""What each ``samprompt`` command does; :mod:`samprompt.cli` parses the arguments.

Each command maps its parsed arguments to one call of a library function
(:mod:`samprompt.workflows`, :mod:`samprompt.reproduce`, :mod:`samprompt.demo`, the exporters)
and prints one line. Kept apart from the parser so that ``samprompt --help`` and argument errors
answer without importing PyTorch, segment_anything and MONAI (several seconds on a small machine).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from samprompt import distributed
from samprompt.baselines import UNetConfig
from samprompt.config import FinetuneConfig, check_device
from samprompt.data.readers import (
    FolderDataset,
    ImageFolder,
    MontgomeryDataset,
    PairedDataset,
    ShenzhenDataset,
)
from samprompt.data.sample import Dataset
from samprompt.data.volumes import NiftiDataset, VolumeReading, Windowing
from samprompt.demo import run_demo
from samprompt.embeddings import EmbeddingCache
from samprompt.errors import SampromptError
from samprompt.evaluate import EvalResult
from samprompt.interop import export_sam_checkpoint
from samprompt.label_efficiency import (
    LabelEfficiencySettings,
    estimate_label_efficiency,
    label_efficiency,
)
from samprompt.locations import default_cache_dir
from samprompt.model import load_sam
from samprompt.onnx_export import export_onnx
from samprompt.plugins import family_table, get_strategy, strategy_table
from samprompt.prompts.strategy import PromptStrategy
from samprompt.reproduce import ReproduceSettings, estimate_reproduce, run_reproduce
from samprompt.saved import read_model_json
from samprompt.workflows import (
    cross_validate_and_report,
    evaluate_model_folder,
    finetune_and_report,
    predict_folder,
    train_unet_and_report,
)

#: Image-folder readers by ``--format`` name (the parser lists :data:`samprompt.cli.FORMAT_NAMES`;
#: ``nifti`` is :class:`~samprompt.data.volumes.NiftiDataset`).
FORMATS: dict[str, Callable[..., PairedDataset]] = {
    "folder": FolderDataset,
    "montgomery": MontgomeryDataset,
    "shenzhen": ShenzhenDataset,
    "dicom": FolderDataset,
}


def _windowing(values: Sequence[str] | None) -> Windowing:
    if not values:
        return Windowing()
    if len(values) == 1:
        return Windowing.named(values[0])
    try:
        level, width = (float(v) for v in values)
    except ValueError:
        raise SampromptError(f"--window {' '.join(values)}: give a name or LEVEL WIDTH") from None
    return Windowing((level, width))


def _reading(args: argparse.Namespace, empty_default: float) -> VolumeReading:
    empty = args.empty_fraction if args.empty_fraction is not None else empty_default
    return VolumeReading(
        axis=args.axis,
        label=args.label,
        windowing=_windowing(args.window),
        empty_fraction=empty,
        seed=getattr(args, "seed", 0),
    )


def _load_dataset(
    args: argparse.Namespace,
    path: str | None = None,
    fmt: str | None = None,
    empty_default: float = 0.1,
) -> Dataset:
    """The dataset ``--data`` (or ``path`` in format ``fmt``) names."""
    path, fmt = path or args.data, fmt or args.format
    if fmt == "nifti":
        return NiftiDataset(path, _reading(args, empty_default))
    return FORMATS[fmt](path, skip_invalid=args.skip_invalid)


def _prediction_images(args: argparse.Namespace) -> Dataset:
    """New images to predict: NIfTI volumes read as the model's training read them, else an
    image folder."""
    reading = read_model_json(args.model).get("reading")
    if reading and reading.get("format") == "nifti":
        return NiftiDataset(args.images, VolumeReading.from_dict(reading), masks=False)
    return ImageFolder(args.images, skip_invalid=args.skip_invalid)


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
        backend=args.encoder_backend,
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


def _inputs(args: argparse.Namespace, *names: str) -> dict[str, str | None]:
    """The command's input paths by option (``--data`` ...); names that are not files or
    folders (``litemedsam``, ``random:tiny``) are left out."""
    found: dict[str, str | None] = {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None and Path(value).exists():
            found["--" + name.replace("_", "-")] = str(value)
    return found


def _scores_line(scores: EvalResult, prior: float | None = None) -> str:
    line = (
        f"F1 {scores.f1_mean:.4f} ± {scores.f1_std:.4f}, "
        f"IoU {scores.iou_mean:.4f} ± {scores.iou_std:.4f}"
    )
    return line + (f" (mean-mask prior F1 {prior:.4f})" if prior is not None else "")


# ---------------------------------------------------------------- commands
def cmd_plugins(args: argparse.Namespace) -> int:
    print("Prompt strategies\n" + strategy_table() + "\n\nModel families\n" + family_table())
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    multi = distributed.init_from_env(args.device)
    model = load_sam(args.checkpoint, seed=args.seed)
    data = _load_dataset(args)
    cache = _cache(args)
    tick = time.perf_counter()
    cache.embed(
        model,
        data,
        device=args.device,
        rank=distributed.rank(),
        world_size=distributed.world_size(),
    )
    s, seconds = cache.stats, time.perf_counter() - tick
    where = f"rank {distributed.rank()}/{distributed.world_size()}: " if multi else ""
    print(
        f"{where}{len(data)} images: {s.hits} cached, {s.encoder_calls} computed "
        f"({seconds:.1f} s) in {cache.root}"
    )
    distributed.barrier()
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    config, strategy = _config(args), _strategy(args)
    check_device(args.device)
    distributed.init_from_env(args.device)
    data = _load_dataset(args)
    model = load_sam(args.checkpoint, seed=args.seed)
    report = finetune_and_report(
        model,
        data,
        strategy,
        config,
        args.out,
        cache=_cache(args),
        seed=args.seed,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        main_rank=distributed.is_main(),
        inputs=_inputs(args, "data", "checkpoint"),
        augment=args.augment,
    )
    if report.scores is not None:
        scores = report.scores
        print(
            f"test {_scores_line(scores.model, scores.prior.f1_mean)}; "
            f"model and report in {report.folder}"
        )
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    config = None if args.zero_shot else _config(args)
    strategy = _strategy(args)
    check_device(args.device)
    data = _load_dataset(args)
    model = load_sam(args.checkpoint, seed=args.seed)
    result = cross_validate_and_report(
        data,
        model,
        strategy,
        config,
        args.out,
        folds=args.folds,
        seed=args.seed,
        cache=_cache(args),
        resolution=args.resolution,
        overwrite=args.overwrite,
        progress=not args.quiet,
        inputs=_inputs(args, "data", "checkpoint"),
        augment=args.augment,
        tta=args.tta,
    )
    s = result.summary()
    print(
        f"F1 {s['f1_mean']:.4f} ± {s['f1_std']:.4f}, IoU {s['iou_mean']:.4f} ± {s['iou_std']:.4f} "
        f"over {args.folds} folds (mean-mask prior F1 {s['prior_f1_mean']:.4f}); "
        f"report in {args.out}"
    )
    return 0


def cmd_label_efficiency(args: argparse.Namespace) -> int:
    check_device(args.device)
    unet = UNetConfig(epochs=args.unet_epochs, seed=args.seed, device=args.device)
    settings = LabelEfficiencySettings(
        sizes=args.sizes, unet=None if args.no_unet else unet, sam=not args.no_sam, k=args.folds,
        seed=args.seed, max_epochs=args.max_epochs,
    )  # fmt: skip
    data = _load_dataset(args)
    strategy = _strategy(args)
    model = load_sam(args.checkpoint, seed=args.seed)
    if args.estimate:
        plan = estimate_label_efficiency(
            data, model, _config(args), args.out, settings, cache=_cache(args)
        )
        print(plan.line(capped=args.patience is not None))
        return 0
    rows = label_efficiency(
        data, model, strategy, _config(args), args.out, settings, cache=_cache(args),
        progress=not args.quiet, overwrite=args.overwrite, log=print,
    )  # fmt: skip
    for row in rows:
        print(f"{row.method}, {row.images} images: F1 {row.f1[0]:.4f} ± {row.f1[1]:.4f}")
    print(f"table: {Path(args.out) / 'table.md'}; plot: {Path(args.out) / 'label_efficiency.png'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    check_device(args.device)
    data = _load_dataset(args, empty_default=1.0)
    result = evaluate_model_folder(
        args.model,
        data,
        args.out,
        cache=_cache(args),
        checkpoint=args.checkpoint,
        threshold=args.threshold,
        resolution=args.resolution,
        device=args.device,
        overwrite=args.overwrite,
        data_name=args.data,
        inputs=_inputs(args, "data", "checkpoint"),
        tta=args.tta,
    )
    print(f"{_scores_line(result)} on {len(data)} images; report in {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    check_device(args.device)
    images = _prediction_images(args)
    count = predict_folder(
        args.model,
        images,
        args.out,
        cache=_cache(args),
        boxes=args.boxes,
        checkpoint=args.checkpoint,
        threshold=args.threshold,
        device=args.device,
        overwrite=args.overwrite,
        inputs=_inputs(args, "images", "checkpoint"),
        tta=args.tta,
    )
    kind = (
        "volume masks (NIfTI, each with its input's affine and header)"
        if isinstance(images, NiftiDataset)
        else "masks (0/255 PNG, each at its image's size)"
    )
    print(f"wrote {count} {kind} to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    sizes = [(int(h), int(w)) for h, w in args.image_size or []]
    if args.format == "onnx":
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
        overwrite=args.overwrite,
    )
    print(f"wrote {weights} (full model, fine-tuned decoder merged) and {side} (how to prompt it)")
    return 0


def _budget_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``reproduce`` options given on the command line (each overrides the budget's)."""
    given = {
        "epochs": args.epochs,
        "folds": args.folds,
        "unet_epochs": args.unet_epochs,
        "patience": args.patience,
        "monitor": args.monitor,
        "control_epochs": args.control_epochs,
    }
    overrides = {k: v for k, v in given.items() if v is not None}
    if args.compare_patience is not None:
        overrides["compare_patience"] = args.compare_patience or None
    if args.patience is not None:
        overrides["compare_patience"] = None
    if args.control is not None:
        overrides["control"] = None if args.control.lower() == "none" else args.control
    return overrides


def _reproduce_cache(args: argparse.Namespace) -> EmbeddingCache | None:
    """``--cache`` (or OUT/cache when the encoder backend is not the default); None: the run
    makes OUT/cache itself."""
    if not args.cache and args.encoder_backend == "torch":
        return None
    return EmbeddingCache(
        args.cache or Path(args.out) / "cache",
        precision=args.precision,
        progress=not args.quiet,
        backend=args.encoder_backend,
    )


def cmd_reproduce(args: argparse.Namespace) -> int:
    check_device(args.device)
    data = _load_dataset(args)
    test_data = _load_dataset(args, args.test_data, args.test_format) if args.test_data else None
    model = load_sam(args.checkpoint, seed=args.seed)
    settings = ReproduceSettings.for_budget(
        "quick" if args.quick else args.budget,
        out=Path(args.out),
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        overwrite=args.overwrite,
        data_path=Path(args.data),
        test_data_path=Path(args.test_data) if args.test_data else None,
        **_budget_overrides(args),
    )
    if args.estimate:  # the probe's few embeddings go to --cache or the user cache, not --out
        probe_cache = EmbeddingCache(
            args.cache or default_cache_dir(), progress=False, backend=args.encoder_backend
        )
        plan = estimate_reproduce(data, model, settings, test_data=test_data, cache=probe_cache)
        print(plan.line(capped=settings.patience is not None))
        return 0
    cache = _reproduce_cache(args)
    run_reproduce(
        data,
        model,
        settings,
        test_data=test_data,
        cache=cache,
        dataset_name=f"{args.format} ({args.data})",
        progress=not args.quiet,
    )
    return 0


def cmd_baseline_unet(args: argparse.Namespace) -> int:
    check_device(args.device)
    data = _load_dataset(args)
    config = UNetConfig(epochs=args.epochs, seed=args.seed, device=args.device)
    report = train_unet_and_report(
        data,
        config,
        args.out,
        resolution=args.resolution,
        overwrite=args.overwrite,
        progress=not args.quiet,
        inputs=_inputs(args, "data"),
    )
    scores = report.scores
    print(
        f"U-Net test F1 {scores.model.f1_mean:.4f} ± {scores.model.f1_std:.4f} "
        f"(mean-mask prior {scores.prior.f1_mean:.4f}); model in {report.folder}"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(
        Path(args.out),
        epochs=args.epochs,
        n_images=args.images,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    return 0
