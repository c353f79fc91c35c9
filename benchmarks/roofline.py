"""Roofline of the decoder training step: FLOPs counted by torch, achieved GFLOP/s next to the
device's measured matrix-multiply peak, and image-steps/s, for SAM's official per-image decoder
loop and for samprompt's batched token-layout path, in fp32 and bf16 autocast."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from _util import matmul_peak, parser, run_main, setup, step_inputs, sync, table, timed
from monai.losses import DiceFocalLoss
from torch.utils.flop_counter import FlopCounterMode

from samprompt import Prompt
from samprompt.decoder import decode_low_res


def official_logits(
    sam: torch.nn.Module, embeddings: torch.Tensor, prompts: list[Prompt]
) -> torch.Tensor:
    """SAM's own path, one image at a time (prompt encoder + ``MaskDecoder.forward``)."""
    outs = []
    for embedding, prompt in zip(embeddings, prompts, strict=True):
        points, _ = prompt.to_input_frame(int(sam.image_encoder.img_size))
        coords = torch.as_tensor(points[None], dtype=torch.float32, device=embeddings.device)
        labels = torch.as_tensor(prompt.point_labels[None], device=embeddings.device)
        sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        masks, _ = sam.mask_decoder(
            image_embeddings=embedding[None],
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        outs.append(masks)
    return torch.cat(outs)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--spec", default="litemedsam")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "bf16"],
        choices=["fp32", "bf16"],
        help="bf16 autocast is emulated (very slow) on CPUs without AVX-512 BF16/AMX",
    )
    args = p.parse_args()
    setup(args)
    device = args.device
    inputs = step_inputs(args.spec, args.batch, device)
    sam, embeddings, targets, prompts = (
        inputs.model.sam,
        inputs.embeddings,
        inputs.targets,
        inputs.prompts,
    )
    optimizer = torch.optim.Adam(sam.mask_decoder.parameters(), lr=0.0)  # lr 0: weights unchanged
    loss_fn = DiceFocalLoss(sigmoid=True)
    paths: dict[str, Callable[[], torch.Tensor]] = {
        "official per-image loop": lambda: official_logits(sam, embeddings, prompts),
        "samprompt batched": lambda: decode_low_res(sam, embeddings, prompts),
    }
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {p: matmul_peak(device, dtypes[p]) for p in args.precisions}
    rows = []
    for precision in args.precisions:
        for name, forward in paths.items():

            def step(
                forward: Callable[[], torch.Tensor] = forward, precision: str = precision
            ) -> None:
                autocast = (
                    torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
                    if precision == "bf16"
                    else nullcontext()
                )
                with autocast:
                    logits = forward()
                loss = loss_fn(logits.float(), targets)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            with FlopCounterMode(display=False) as counter:
                step()
            sync(device)
            gflop = counter.get_total_flops() / 1e9
            seconds = timed(step, device, repeat=args.repeat)
            rows.append(
                [
                    name,
                    precision,
                    seconds,
                    args.batch / seconds,
                    gflop,
                    gflop / seconds,
                    f"{100 * gflop / seconds / peaks[precision]:.0f}%",
                ]
            )
            print(f"{name} {precision}: {seconds:.3f} s", flush=True)
    print(
        f"\n## Decoder training step, {args.spec}, batch {args.batch} "
        "(matmul peak measured: "
        + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in peaks.items())
        + ")"
    )
    table(
        ["path", "precision", "s/step", "image-steps/s", "GFLOP/step", "GFLOP/s", "of peak"],
        rows,
    )
    by = {(r[0], r[1]): r[2] for r in rows}
    for precision in args.precisions:
        ratio = by[("official per-image loop", precision)] / by[("samprompt batched", precision)]
        print(f"batched vs official loop, {precision}: {ratio:.2f}x")


if __name__ == "__main__":
    run_main(main)
