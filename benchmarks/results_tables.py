"""docs/results.rst's tables of a ``samprompt reproduce`` or ``label-efficiency`` folder, as
reStructuredText.

``--run``: reads the reproduce folder's results.json and each fold's own metrics.json (fold F1,
epochs trained, threshold) and prints the list-tables of the results page: zero-shot, the lr x
weight-decay grid, the fine-tuned prompt types, the threshold sweep, the cross-dataset test with
the fold models and the comparison, each with the paper's figure beside ours where the paper has
one (``--paper``). Of a reproduce run still going (no results.json yet), it prints the fine-tuned
prompt types whose folds have all finished. ``--label-efficiency``: one table per method
(fine-tuned decoder, U-Net) with a row per finished training size, from each size's sub-run and
its folds. Every number printed comes from the folder: nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _util import run_main

from samprompt.errors import ConfigError
from samprompt.label_efficiency import LabelEfficiencySettings
from samprompt.report import format_pm

LABELS = {
    "points": "points (``mean-points``)",
    "box": "box (oracle)",
    "both": "points + box (oracle)",
}
FINETUNED = "Fine-tuned mask decoder (paper Tables 7/8)"
ZERO_SHOT_RANGE = "0.72-0.86 (range of its zero-shot figures)"
#: Carvalho & Almeida's figures (SAM ViT-B, their splits); the U-Nets are quoted from other works.
PAPER: dict[str, dict[str, str]] = {
    "montgomery": {"finetuned/points": "0.943 ± 0.007", "unet": "0.973 ± 0.014 (quoted)"},
    "shenzhen": {"unet": "0.941 ± 0.047 (quoted)"},
    "none": {},
}


def list_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """One ``list-table`` directive with a header row."""
    lines = [f".. list-table:: {title}", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines += [f"   * - {row[0]}", *[f"     - {cell}" for cell in row[1:]]]
    return "\n".join(lines) + "\n"


def _folds(run: Path, sub: str) -> list[dict[str, Any]]:
    paths = sorted(run.glob(f"{sub}/fold_*/metrics.json"), key=lambda p: int(p.parent.name[5:]))
    return [json.loads(p.read_text()) for p in paths]


def _pm(row: dict[str, Any], metric: str = "f1", digits: int = 3) -> str:
    return format_pm(row[f"{metric}_mean"], row[f"{metric}_std"], digits=digits)


def _per_fold(folds: Sequence[dict[str, Any]], key: str, fmt: str) -> str:
    return " / ".join(format(f[key] if key != "epochs" else len(f["history"]), fmt) for f in folds)


def zero_shot(results: dict[str, Any], paper: dict[str, str]) -> str:
    rows = [
        [LABELS[k], _pm(v), _pm(v, "iou"), "yes" if v["oracle"] else "no",
         paper.get(f"zero_shot/{k}", ZERO_SHOT_RANGE)]
        for k, v in results["zero_shot"].items()
    ]  # fmt: skip
    return list_table(
        "Zero-shot (paper Tables 1/2)", ["prompt", "F1 (Dice)", "IoU", "oracle", "paper"], rows
    )


def grid(results: dict[str, Any]) -> str:
    points = results["grid"]
    decays = sorted({g["weight_decay"] for g in points})
    chosen = results["chosen"]
    rows = []
    for lr in sorted({g["lr"] for g in points}):
        cells = []
        for wd in decays:
            f1 = next(g["val_f1"] for g in points if (g["lr"], g["weight_decay"]) == (lr, wd))
            best = (lr, wd) == (chosen["lr"], chosen["weight_decay"])
            cells.append(f"**{f1:.4f}** (chosen)" if best else f"{f1:.4f}")
        rows.append([f"{lr:g}", *cells])
    header = ["lr", *[f"weight decay {wd:g}" for wd in decays]]
    return list_table(
        "Learning rate x weight decay, point prompts, fold 0: best validation F1", header, rows
    )


def finetuned(run: Path, paper: dict[str, str], title: str = FINETUNED) -> str:
    """The fine-tuned prompt types whose sub-run has finished (all of them once the run has)."""
    rows = []
    for label in _finished(run, "finetune"):
        summary = json.loads((run / "finetune" / label / "metrics.json").read_text())
        folds = _folds(run, f"finetune/{label}")
        rows.append([
            LABELS.get(label, label), _pm(summary, digits=4), _pm(summary, "iou"),
            _per_fold(folds, "f1_mean", ".4f"), _per_fold(folds, "epochs", "d"),
            _per_fold(folds, "threshold", ".2f"), paper.get(f"finetuned/{label}", "—"),
        ])  # fmt: skip
    header = ["prompt", "F1 (Dice)", "IoU", "folds", "epochs", "thresholds", "paper"]
    return list_table(title, header, rows)


def _finished(run: Path, phase: str) -> list[str]:
    """Labels of the finished sub-runs of one phase, the paper's prompt types first."""
    labels = [p.parent.name for p in (run / phase).glob("*/metrics.json")]
    return sorted(labels, key=lambda k: (list(LABELS).index(k) if k in LABELS else len(LABELS), k))


def sweep(results: dict[str, Any]) -> str:
    labels = list(results["sweep"])
    thresholds = [r["threshold"] for r in results["sweep"][labels[0]]]
    rows = [
        [f"{t:.2f}", *[f"{results['sweep'][k][i]['f1_mean']:.3f}" for k in labels]]
        for i, t in enumerate(thresholds)
    ]
    short = {"points": "points", "box": "box", "both": "points + box"}
    return list_table(
        "Threshold sweep on validation (paper Tables 3/4): mean validation F1",
        ["threshold", *[short.get(k, k) for k in labels]],
        rows,
    )


def cross_dataset(run: Path, results: dict[str, Any], paper: dict[str, str]) -> str:
    rows = [
        [LABELS[k], _pm(v), _pm(v, "iou"), _per_fold(_folds(run, f"cross_dataset_folds/{k}"), "f1_mean", ".4f"),
         paper.get(f"cross/{k}", "—")]
        for k, v in results["cross_dataset"].items()
    ]  # fmt: skip
    header = ["prompt", "F1 (Dice)", "IoU", "fold models", "paper"]
    return list_table(
        "Cross-dataset (paper Tables 5/6): each fold model on the second dataset", header, rows
    )


def comparison(run: Path, results: dict[str, Any], paper: dict[str, str]) -> str:
    def seconds(sub: str) -> str:
        total = sum(h["seconds"] for f in _folds(run, sub) for h in f["history"])
        return f"{total:,.0f} s"

    rows = [["mean-mask floor", _pm(results["prior"]), _pm(results["prior"], "iou"), "—", "—"],
            ["U-Net", _pm(results["unet"]), _pm(results["unet"], "iou"), seconds("unet"), paper.get("unet", "—")]]  # fmt: skip
    if "control" in results:
        control = results["control"]
        rows.append(
            ["random-encoder control", _pm(control), _pm(control, "iou"), seconds("control"), "—"]
        )
    for label, row in results["finetuned"].items():
        rows.append([f"fine-tuned, {LABELS[label]}", _pm(row), _pm(row, "iou"),
                     seconds(f"finetune/{label}"), paper.get(f"finetuned/{label}", "—")])  # fmt: skip
    header = ["method", "F1 (Dice)", "IoU", "training time (recorded)", "paper"]
    return list_table("Comparison (paper Table 9)", header, rows)


def tables(run: Path, paper_set: str) -> list[str]:
    """Every table of ``run``, in the results page's order; of a run still going, the fine-tuned
    prompt types finished so far."""
    path = run / "results.json"
    paper = PAPER[paper_set]
    if not path.is_file():
        if not (run / "run.json").is_file() or not _finished(run, "finetune"):
            raise ConfigError(
                f"{path}: not found, nor a finished fine-tuned prompt type; is {run} a "
                "`samprompt reproduce` folder?"
            )
        print(f"{run} is not finished: the fine-tuned prompt types so far", file=sys.stderr)
        return [finetuned(run, paper, f"{FINETUNED}, finished so far")]
    results = json.loads(path.read_text())
    found = [
        zero_shot(results, paper),
        grid(results),
        finetuned(run, paper),
        sweep(results),
    ]
    if results["cross_dataset"]:
        found.append(cross_dataset(run, results, paper))
    return [*found, comparison(run, results, paper)]


def _size_row(sub: Path) -> list[str]:
    identity = json.loads((sub / "run.json").read_text())
    summary = json.loads((sub / "metrics.json").read_text())
    folds = _folds(sub.parent, sub.name)
    size = identity["train_size"]
    full = LabelEfficiencySettings(k=identity["k"]).full(identity["data"]["n"])
    return [
        f"{size} (all)" if size == full else str(size), str(identity["config"]["epochs"]),
        _pm(summary), _pm(summary, "iou"), _per_fold(folds, "f1_mean", ".4f"),
        _per_fold(folds, "threshold", ".2f"),
    ]  # fmt: skip


def label_efficiency(run: Path) -> list[str]:
    """One table per method of a ``samprompt label-efficiency`` folder, a row per finished size."""
    found = []
    for prefix in ("sam", "unet"):
        subs = sorted(
            (p for p in run.glob(f"{prefix}_*") if (p / "metrics.json").is_file()),
            key=lambda p: int(p.name.split("_")[1]),
        )
        if not subs:
            continue
        identity = json.loads((subs[0] / "run.json").read_text())
        method = (
            f"fine-tuned decoder, ``{identity['strategy']['name']}``"
            if prefix == "sam"
            else "U-Net"
        )
        k = len(_folds(run, subs[0].name))
        title = (
            f"{method}: test F1 and IoU against the number of labelled training images, mean ± "
            f"std over {k} folds (256 frame), the threshold chosen on validation per fold"
        )
        header = ["training images", "epochs", "F1 (Dice)", "IoU", "folds", "thresholds"]
        found.append(list_table(title, header, [_size_row(sub) for sub in subs]))
    if not found:
        raise ConfigError(
            f"{run}: no finished sub-run; is it a `samprompt label-efficiency` folder?"
        )
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--run",
        type=Path,
        help="a `samprompt reproduce` folder (unfinished: its finished fine-tuned prompt types)",
    )
    which.add_argument(
        "--label-efficiency",
        type=Path,
        help="a `samprompt label-efficiency` folder (its finished sizes)",
    )
    p.add_argument(
        "--paper",
        choices=sorted(PAPER),
        default="none",
        help="whose paper figures to show beside ours",
    )
    args = p.parse_args()
    if args.label_efficiency is not None:
        print("\n".join(label_efficiency(args.label_efficiency)))
    else:
        print("\n".join(tables(args.run, args.paper)))


if __name__ == "__main__":
    run_main(main)
