"""Seconds per fine-tuning epoch (training + validation) through ``Finetuner.fit``, on a folder
dataset read from disk: what the shared epoch loop costs, including reading samples.

Embeddings are cached before timing, so the figure is the loop itself: per-step reads, prompts,
targets, the decoder step and validation. Run it on two versions of samprompt (PYTHONPATH) to
compare them; it prints the epoch seconds from the run's own history.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from _util import parser, run_main, setup, table

from samprompt import EmbeddingCache, FinetuneConfig, Finetuner, get_strategy, load_sam
from samprompt.data import FolderDataset, make_phantoms, write_folder_dataset


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--data", default=None, help="folder dataset (default: 24 phantoms, 512 px)")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--spec", default="litemedsam")
    p.add_argument("--prompt", default="perturbed-box")
    p.add_argument("--cache", default=None, help="embedding cache (default: a temporary one)")
    args = p.parse_args()
    setup(args)
    with tempfile.TemporaryDirectory() as tmp:
        root = (
            Path(args.data)
            if args.data
            else write_folder_dataset(make_phantoms(args.images, 512), Path(tmp) / "data")
        )
        data = FolderDataset(root).subset(range(args.images))
        n_val = max(1, args.images // 3)
        train, val = data.subset(range(n_val, args.images)), data.subset(range(n_val))
        model = load_sam(args.spec)
        cache = EmbeddingCache(args.cache or Path(tmp) / "cache", progress=False)
        cache.embed(model, data, device=args.device)
        config = FinetuneConfig(epochs=args.epochs, batch_size=8, device=args.device)
        tuner = Finetuner(model, get_strategy(args.prompt), config, cache=cache, progress=False)
        result = tuner.fit(train, val)
    seconds = [r.seconds for r in result.history]
    table(
        ["data", "train / val images", "epochs", "s per epoch (median)", "first epoch s"],
        [[str(root) if args.data else "phantoms 512 px", f"{len(train)} / {len(val)}", len(seconds),
          f"{statistics.median(seconds):.2f}", f"{seconds[0]:.2f}"]],
    )  # fmt: skip


if __name__ == "__main__":
    run_main(main)
