"""Decoder training step (batch 8): cached embeddings vs the naive loop that runs the image encoder
inside every step (what the usual fine-tuning notebooks do), measured side by side."""

from __future__ import annotations

import tempfile
from contextlib import nullcontext

import numpy as np
import torch
from _util import parser, run_main, setup, table, timed
from monai.losses import DiceFocalLoss

from samprompt import EmbeddingCache, get_strategy, load_sam
from samprompt.data import low_res_target, make_phantoms, preprocess_image
from samprompt.decoder import decode_low_res


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--specs", nargs="+", default=["random:tiny", "random:vit_b"])
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    setup(args)
    data = make_phantoms(args.batch, 512, seed=0)
    strategy = get_strategy("mean-points")
    strategy.fit(data)
    prompts = [strategy.inference_prompt(s) for s in data]
    loss_fn = DiceFocalLoss(sigmoid=True)
    rows = []
    for spec in args.specs:
        model = load_sam(spec).to(args.device)
        sam = model.sam
        targets = torch.from_numpy(
            np.stack([low_res_target(s.mask, model.low_res_size) for s in data])
        )
        targets = targets[:, None].float().to(args.device)
        optimizer = torch.optim.Adam(sam.mask_decoder.parameters(), lr=1e-5)
        with tempfile.TemporaryDirectory() as root:
            index = EmbeddingCache(root, progress=False).embed(model, data, device=args.device)

            def step(embeddings: torch.Tensor, precision: str) -> None:
                autocast = (
                    torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)
                    if precision == "bf16"
                    else nullcontext()
                )
                with autocast:
                    loss = loss_fn(decode_low_res(sam, embeddings, prompts).float(), targets)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            def cached(precision: str = "fp32") -> None:
                step(index.load(range(args.batch), args.device), precision)

            def naive() -> None:
                with torch.no_grad():
                    embeddings = torch.cat(
                        [sam.image_encoder(preprocess_image(sam, s.image)[0]) for s in data]
                    )
                step(embeddings, "fp32")

            t_cached = timed(cached, args.device, repeat=3)
            t_bf16 = timed(lambda: cached("bf16"), args.device, repeat=3)
            t_naive = timed(naive, args.device, repeat=1, warmup=0 if args.device == "cpu" else 1)
        rows.append([spec, t_naive, t_cached, t_bf16, t_naive / t_cached])
    print(f"\n## Decoder training step, batch {args.batch} (seconds)")
    table(
        ["model", "naive (encoder in the step)", "cached fp32", "cached bf16", "naive / cached"],
        rows,
    )


if __name__ == "__main__":
    run_main(main)
