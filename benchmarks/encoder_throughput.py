"""Image-encoder throughput (images/s), fp32 vs bf16 autocast, batch 1 vs 2, and the cache's
hit path (seconds per image when every embedding is already cached)."""

from __future__ import annotations

import tempfile
import time
from contextlib import nullcontext

import torch
from _util import parser, run_main, setup, table, timed

from samprompt import EmbeddingCache, load_sam
from samprompt.data import make_phantoms, preprocess_image


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--specs", nargs="+", default=["random:tiny", "litemedsam", "random:vit_b"])
    p.add_argument(
        "--images", type=int, default=2, help="images per timing (vit_b is ~10 s each on CPU)"
    )
    args = p.parse_args()
    setup(args)
    rows = []
    for spec in args.specs:
        model = load_sam(spec).to(args.device)
        images = make_phantoms(2, 512, seed=0)
        batch = torch.cat([preprocess_image(model.sam, s.image)[0] for s in images])
        for precision in ("fp32", "bf16"):
            autocast = (
                torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)
                if precision == "bf16"
                else nullcontext()
            )
            for size in (1, 2):

                def run(size: int = size, autocast: object = autocast) -> None:
                    with torch.inference_mode(), autocast:  # type: ignore[attr-defined]
                        for _ in range(max(1, args.images // size)):
                            model.sam.image_encoder(batch[:size])

                seconds = timed(run, args.device, repeat=1 if args.device == "cpu" else 5)
                rows.append([spec, precision, size, (max(1, args.images // size) * size) / seconds])
    print("\n## Image encoder throughput")
    table(["model", "precision", "batch", "images/s"], rows)

    model = load_sam("random:tiny")
    data = make_phantoms(50, 512, seed=1)
    with tempfile.TemporaryDirectory() as root:
        EmbeddingCache(root, progress=False).embed(model, data, device=args.device)
        cache = EmbeddingCache(root, progress=False)
        tick = time.perf_counter()
        index = cache.embed(model, data, device=args.device)
        hit = (time.perf_counter() - tick) / len(data)
        tick = time.perf_counter()
        for start in range(0, len(index), 8):
            index.load(range(start, min(start + 8, len(index))), args.device)
        read = (time.perf_counter() - tick) / len(index)
    print("\n## Cache hit path (512x512 images, 64x64x256 fp16 entries)")
    table(
        ["step", "ms per image"],
        [
            ["embed() on a fully cached dataset (hash + lookup)", 1000 * hit],
            ["read a batch of 8 into a float32 tensor", 1000 * read],
        ],
    )


if __name__ == "__main__":
    run_main(main)
