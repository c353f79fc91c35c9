"""Every prompt strategy on the same cross-validation folds: F1 at 256 and at image size, and
inference seconds per image (docs/results.rst, "Choosing a prompt strategy").

Runs, resumably, under ``--out``: fine-tuned ``samprompt cv`` for each strategy in
``--finetune``, zero-shot ``samprompt cv --zero-shot`` for each in ``--zero-shot`` (at both
resolutions), the colour U-Net (``unet_cross_validate``) and the mean-mask floor (reported by
every run). Each fine-tuned fold's saved model is then scored again at image size
(``--resolution original``) on its own test fold, and timed on it with cached embeddings (the
decoder's share: the encoder costs the same for every strategy and is timed once). Prints a
Markdown table and writes ``table.json``, updated as each fine-tuned row is measured (rows of
earlier invocations on the same ``--out`` are kept, marked and dated).

    python benchmarks/prompt_strategies.py --data ../shared/data/ph2 --out /work/runs/ph2 \
        --epochs 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from _util import run_main

from samprompt import EmbeddingCache, Evaluator, Finetuner
from samprompt.atomic import write_json_atomic
from samprompt.baselines import UNetConfig, load_unet_model
from samprompt.cli import main as cli
from samprompt.data import Dataset, FolderDataset
from samprompt.metrics import summarize
from samprompt.prompts.calls import refine_passes
from samprompt.protocols import unet_cross_validate
from samprompt.segmenter import SamSegmenter
from samprompt.tta import FlipTTA

ORACLE = {"perturbed-box", "combined"}


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset folder (images/ + masks/)")
    p.add_argument("--out", required=True, type=Path, help="root of the runs (resumable)")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (default 10)")
    p.add_argument("--unet-epochs", type=int, default=30, help="U-Net epochs (default 30)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds (default 0)")
    p.add_argument("--cache", default=None, help="embedding cache (default: the user cache)")
    p.add_argument(
        "--finetune",
        nargs="*",
        default=["mean-points", "learned", "refine", "perturbed-box"],
        help="strategies to fine-tune, NAME or NAME:KEY=VALUE:... (strategy parameters)",
    )
    p.add_argument(
        "--zero-shot",
        nargs="*",
        default=["mean-points", "perturbed-box", "learned"],
        help="strategies to score with no training (give none to skip)",
    )
    p.add_argument("--no-unet", action="store_true", help="skip the colour U-Net")
    p.add_argument("--augment", nargs="+", default=[], help="cv --augment for the fine-tuned runs")
    p.add_argument("--tta", nargs="+", default=[], help="cv --tta for the fine-tuned runs")
    return p.parse_args()


def _mirroring(args: argparse.Namespace) -> tuple[str, list[str], str]:
    """Run-folder suffix, cv arguments and row label of --augment / --tta."""
    suffix, extra, label = "", [], []
    for option, flips, words in (("augment", args.augment, "mirrored training"),
                                 ("tta", args.tta, "TTA")):  # fmt: skip
        if flips:
            suffix += f"_{option}-{'-'.join(flips)}"
            extra += [f"--{option}", *flips]
            label.append(f"{words} {'+'.join(flips)}")
    return suffix, extra, f" ({', '.join(label)})" if label else ""


def _cv(args: argparse.Namespace, out: Path, *extra: str) -> None:
    common = ["cv", "-q", "--data", args.data, "--folds", str(args.folds), "--seed", str(args.seed)]
    cache = ["--cache", args.cache] if args.cache else []
    if cli([*common, *cache, *extra, "--out", str(out)]) != 0:
        raise SystemExit(f"{out}: samprompt cv failed")


def _fold_metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(run.glob("fold_*/metrics.json"))]


def _rescore(
    run: Path, data: FolderDataset, cache: EmbeddingCache, tta: list[str]
) -> dict[str, Any]:
    """Each fold's saved model on its test fold at image size, and its decoder time per image
    (with ``tta``, averaged over the mirrorings: every copy's decoder time counts)."""
    f1_original, seconds, per_pass = [], [], []
    for metrics in _fold_metrics(run):
        ids = [row["id"] for row in metrics["per_image"]]
        test = data.subset([data.ids.index(i) for i in ids])
        folder = run / f"fold_{metrics['fold']}"
        segmenter = Finetuner.load(folder, cache=cache)
        model = FlipTTA(segmenter, tta) if tta else segmenter
        list(model.predict_proba(test.subset([0])))  # warm-up: kernels chosen, mirrors embedded
        tick = time.perf_counter()
        low = Evaluator("low").evaluate(model, test, metrics["threshold"])
        seconds.append((time.perf_counter() - tick) / len(test))
        if abs(low.f1_mean - metrics["f1_mean"]) > 1e-6:
            raise SystemExit(f"{folder}: rescored F1 {low.f1_mean} != saved {metrics['f1_mean']}")
        f1_original.append(
            Evaluator("original").evaluate(model, test, metrics["threshold"]).f1_mean
        )
        per_pass.append(_per_pass(segmenter, model, test, metrics["threshold"]))
    row = {"f1_original": summarize(f1_original), "s_per_image": float(np.median(seconds))}
    if per_pass[0]:
        row["f1_per_pass"] = [summarize(list(f)) for f in zip(*per_pass, strict=True)]
    return row


def _per_pass(
    segmenter: SamSegmenter, model: SamSegmenter | FlipTTA, test: Dataset, threshold: float
) -> list[float]:
    """F1 (256 frame) of ``model`` (``segmenter``, or its average over mirrorings) after each pass
    of a refining strategy; empty for any other."""
    passes = refine_passes(segmenter.strategy)
    scores = []
    for count in range(passes + 1) if passes else ():
        segmenter.passes = count
        scores.append(Evaluator("low").evaluate(model, test, threshold).f1_mean)
    segmenter.passes = None
    return scores


def _unet_rows(args: argparse.Namespace, data: FolderDataset) -> dict[str, Any]:
    run = args.out / "unet"
    config = UNetConfig(epochs=args.unet_epochs, seed=args.seed)  # colour from the images
    suffix, _, _ = _mirroring(args)
    run = run.with_name(run.name + suffix)
    result = unet_cross_validate(
        data, config, k=args.folds, seed=args.seed, out_dir=run, progress=False,
        augment=args.augment, tta=args.tta,
    )  # fmt: skip
    f1_original = []
    for fold in result.folds:
        saved = load_unet_model(run / f"fold_{fold.fold}")
        model = FlipTTA(saved, args.tta) if args.tta else saved
        test = data.subset([data.ids.index(r.id) for r in fold.test.per_image])
        f1_original.append(Evaluator("original").evaluate(model, test, fold.threshold).f1_mean)
    s = result.summary()
    return {"f1_low": (s["f1_mean"], s["f1_std"]), "f1_original": summarize(f1_original),
            "epochs": args.unet_epochs, "oracle": False}  # fmt: skip


def main() -> None:
    args = _args()
    data = FolderDataset(args.data)
    cache = (
        EmbeddingCache(args.cache, progress=False) if args.cache else EmbeddingCache(progress=False)
    )
    rows: dict[str, dict[str, Any]] = {}
    suffix, mirroring, label = _mirroring(args)
    for spec in args.finetune:
        name, *params = spec.split(":")
        run = args.out / ("_".join(["finetune", name, *params, f"e{args.epochs}"]) + suffix)
        print(f"fine-tuning {spec}{label} ({args.epochs} epochs) in {run}", flush=True)
        extra = [a for p in params for a in ("--prompt-param", p)]
        _cv(args, run, "--prompt", name, *extra, "--epochs", str(args.epochs), *mirroring)
        summary = json.loads((run / "metrics.json").read_text())
        rows[f"fine-tuned, {spec}{label}"] = {
            "f1_low": (summary["f1_mean"], summary["f1_std"]),
            **_rescore(run, data, cache, args.tta), "oracle": name in ORACLE,
            "epochs": args.epochs,
        }  # fmt: skip
        _merge_earlier(args.out / "table.json", rows)  # each row kept as soon as it is measured
    for name in args.zero_shot:
        for resolution in ("low", "original"):
            run = args.out / f"zero-shot_{name}_{resolution}"
            _cv(args, run, "--zero-shot", "--prompt", name, "--resolution", resolution)
        low = json.loads((args.out / f"zero-shot_{name}_low" / "metrics.json").read_text())
        orig = json.loads((args.out / f"zero-shot_{name}_original" / "metrics.json").read_text())
        rows[f"zero-shot, {name}"] = {
            "f1_low": (low["f1_mean"], low["f1_std"]),
            "f1_original": (orig["f1_mean"], orig["f1_std"]),
            "oracle": name in ORACLE, "epochs": 0,
        }  # fmt: skip
        rows["mean-mask floor"] = {
            "f1_low": (low["prior_f1_mean"], low["prior_f1_std"]),
            "f1_original": (orig["prior_f1_mean"], orig["prior_f1_std"]),
            "oracle": False, "epochs": 0,
        }  # fmt: skip
    if not args.no_unet:
        rows[f"U-Net (colour, from scratch){label}"] = _unet_rows(args, data)
    rows, earlier = _merge_earlier(args.out / "table.json", rows)
    print(
        f"# {args.data}: {args.folds}-fold CV, seed {args.seed}, LiteMedSAM; mean ± std over folds"
    )
    print(
        "| method | oracle | epochs | F1 (256 frame) | F1 (image size) | inference s/image (embedding cached) |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        for i, (mean, std) in enumerate(row.get("f1_per_pass", [])):
            print(f"# {name}: pass {i} F1 (256 frame) {mean:.3f} ± {std:.3f}")
    for name, row in rows.items():
        low, orig = row["f1_low"], row["f1_original"]
        speed = f"{row['s_per_image']:.3f}" if "s_per_image" in row else "—"
        mark = " (*)" if name in earlier else ""
        print(f"| {name}{mark} | {'yes' if row['oracle'] else 'no'} | {row['epochs'] or '—'} | "
              f"{low[0]:.3f} ± {low[1]:.3f} | {orig[0]:.3f} ± {orig[1]:.3f} | {speed} |")  # fmt: skip
    if earlier:
        print("(*) from an earlier invocation on the same --out (its date in table.json)")


def _merge_earlier(
    path: Path, rows: dict[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """This invocation's rows, dated, added to those earlier invocations wrote to ``table.json``
    (same --out: same data and folds); writes the union and returns it with the kept names."""
    stamp = time.strftime("%Y-%m-%d %H:%M")
    earlier = json.loads(path.read_text()) if path.exists() else {}
    kept = {name: row for name, row in earlier.items() if name not in rows}
    merged = {**kept, **{name: {**row, "measured": stamp} for name, row in rows.items()}}
    write_json_atomic(path, merged)
    return merged, set(kept)


if __name__ == "__main__":
    run_main(main)
