"""The price of ``reproduce --budget converged``: each prompt type's test F1 on one fold with the
paper's 100 fixed epochs against what early stopping (the converged budget's rule) gives.

One training per prompt type: a fixed-epoch run records, at the epoch where the patience rule
fires, the decoder early stopping would have kept (:mod:`samprompt.early_stopping`), so both
figures come from the same trajectory and the same test images. When the rule fires only after
the converged budget's epoch cap (or never), the capped run is trained as well (on a CPU its
epochs are exactly the first epochs of the fixed run). Resumable under ``--out``.

    python benchmarks/budget_price.py --data ../shared/data/montgomery --format montgomery \
        --out /work/runs/price
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _util import run_main

from samprompt import EmbeddingCache, load_sam
from samprompt.commands import FORMATS
from samprompt.config import FinetuneConfig
from samprompt.plugins import get_strategy
from samprompt.protocols import cross_validate
from samprompt.reproduce import PROMPT_TYPES, budget_settings


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--format", default="folder", help="dataset layout (as `samprompt cv`)")
    p.add_argument("--out", required=True, type=Path, help="root of the runs (resumable)")
    p.add_argument("--checkpoint", default="litemedsam")
    p.add_argument("--epochs", type=int, default=100, help="the fixed epochs (default 100)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--lr", type=float, default=None, help="default: the model's recommended lr")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--prompts", nargs="+", default=list(PROMPT_TYPES), choices=list(PROMPT_TYPES),
        help="prompt types to run (default all three)",
    )  # fmt: skip
    return p.parse_args()


def main() -> None:
    args = _args()
    torch.set_num_threads(args.threads)
    converged = budget_settings("converged")
    patience, cap = converged["patience"], converged["epochs"]
    data = FORMATS[args.format](args.data)
    model = load_sam(args.checkpoint)
    cache = EmbeddingCache()
    config = FinetuneConfig(epochs=args.epochs, compare_patience=patience, lr=args.lr)
    print(
        f"| prompt | {args.epochs} fixed epochs | converged (patience {patience}, cap {cap}) | "
        "epochs run | difference | training s fixed / converged |"
    )
    print("|---|---|---|---|---|---|")
    for label in args.prompts:
        name = PROMPT_TYPES[label]
        tick = time.perf_counter()
        result = cross_validate(
            data, model, get_strategy(name), config, folds=[args.fold], cache=cache,
            out_dir=args.out / label, progress=False,
        )  # fmt: skip
        fold = result.folds[0]
        early = dict(fold.early_stop or {})
        stopped = early.get("epochs_run")
        if stopped is None or stopped > cap or not early.get("stopped", True):
            capped = config.replace(epochs=cap, patience=patience, compare_patience=None)
            rerun = cross_validate(
                data, model, get_strategy(name), capped, folds=[args.fold], cache=cache,
                out_dir=args.out / f"{label}_converged", progress=False,
            ).folds[0]  # fmt: skip
            seconds = sum(float(h["seconds"]) for h in rerun.history)
            early.update(f1_mean=rerun.test.f1_mean, training_s=seconds)
            stopped = f"{len(rerun.history)} (cap {cap})"
        print(
            f"| {label} | {fold.test.f1_mean:.4f} | {float(early['f1_mean']):.4f} | {stopped} | "
            f"{float(early['f1_mean']) - fold.test.f1_mean:+.4f} | "
            f"{float(early.get('training_s_fixed', 0)):.0f} / {float(early['training_s']):.0f} |",
            flush=True,
        )
        print(f"<!-- {label}: {time.perf_counter() - tick:.0f} s this invocation -->", flush=True)


if __name__ == "__main__":
    run_main(main)
