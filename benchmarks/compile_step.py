"""torch.compile on the cached decoder step: eager vs compiled, seconds per batch step, the
one-off compile time, the prompt encoder's share of the step, and the logits' difference."""

from __future__ import annotations

import time

import torch
from _util import parser, run_main, setup, step_inputs, table, timed
from monai.losses import DiceFocalLoss

from samprompt.decoder import _decode_rows, _prompt_rows, _sparse_embeddings


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--spec", default="litemedsam")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    setup(args)
    device = args.device
    inputs = step_inputs(args.spec, args.batch, device)
    sam, embeddings, targets = inputs.model.sam, inputs.embeddings, inputs.targets
    rows = _prompt_rows(inputs.prompts, int(sam.image_encoder.img_size))
    loss_fn = DiceFocalLoss(sigmoid=True)
    optimizer = torch.optim.Adam(sam.mask_decoder.parameters(), lr=0.0)  # lr 0: weights unchanged

    def sparse() -> torch.Tensor:
        with torch.no_grad():
            return _sparse_embeddings(sam, rows, torch.device(device))

    compiled_rows = torch.compile(_decode_rows, dynamic=False)

    def step(decode: object) -> None:
        logits = decode(sam, embeddings, sparse(), False)  # type: ignore[operator]
        loss = loss_fn(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        eager_logits = _decode_rows(sam, embeddings, sparse(), False)
    tick = time.perf_counter()
    step(compiled_rows)
    compile_s = time.perf_counter() - tick
    with torch.no_grad():
        compiled_logits = compiled_rows(sam, embeddings, sparse(), False)
    diff = float((compiled_logits - eager_logits).abs().max())
    eager = timed(lambda: step(_decode_rows), device, repeat=args.repeat)
    compiled = timed(lambda: step(compiled_rows), device, repeat=args.repeat)
    prompt_s = timed(sparse, device, repeat=args.repeat * 4)
    table(
        ["path", "s/step", "image-steps/s", "vs eager"],
        [
            ["eager (token layout)", f"{eager:.3f}", f"{args.batch / eager:.1f}", "1.00x"],
            [
                "torch.compile",
                f"{compiled:.3f}",
                f"{args.batch / compiled:.1f}",
                f"{eager / compiled:.2f}x",
            ],
        ],
    )
    print(f"compile (first step): {compile_s:.1f} s; max |logit difference| {diff:.2e}")
    print(
        f"prompt encoder per step: {prompt_s * 1000:.1f} ms ({100 * prompt_s / eager:.2f}% of the "
        "eager step)"
    )


if __name__ == "__main__":
    run_main(main)
