"""bf16 autocast vs fp32: time per epoch and test F1 of the same phantom fine-tuning run."""

from __future__ import annotations

import tempfile
import time

from _util import parser, run_main, setup, table

from samprompt import EmbeddingCache, Evaluator, FinetuneConfig, Finetuner, get_strategy, load_sam
from samprompt.data import make_phantoms


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--epochs", type=int, default=8)
    args = p.parse_args()
    setup(args)
    data = make_phantoms(40, 128, seed=0)
    train, val, test = data[:24], data[24:32], data[32:]
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for precision in ("fp32", "bf16"):
            model = load_sam("random:tiny")
            config = FinetuneConfig(
                epochs=args.epochs, lr=1e-3, precision=precision, device=args.device
            )
            cache = EmbeddingCache(root, progress=False)
            cache.embed(model, data, device=args.device)
            tick = time.perf_counter()
            result = Finetuner(
                model, get_strategy("mean-points"), config, cache=cache, progress=False
            ).fit(train, val)
            seconds = (time.perf_counter() - tick) / args.epochs
            f1 = Evaluator().evaluate(result.segmenter, test).f1_mean
            rows.append([precision, seconds, f1])
    print(f"\n## Phantom fine-tuning, {args.epochs} epochs, 24 train / 8 val / 8 test")
    table(["precision", "s per epoch", "test F1"], rows)
    print(
        f"speed ratio fp32/bf16: {rows[0][1] / rows[1][1]:.2f}; F1 difference bf16 - fp32: {rows[1][2] - rows[0][2]:+.4f}"
    )


if __name__ == "__main__":
    run_main(main)
