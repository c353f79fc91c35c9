"""What dominates a cached decoder training step (torch profiler, top operators by self time)."""

from __future__ import annotations

import numpy as np
import torch
from _util import parser, run_main, setup
from monai.losses import DiceFocalLoss

from samprompt import get_strategy, load_sam
from samprompt.data import low_res_target, make_phantoms
from samprompt.decoder import decode_low_res


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    setup(args)
    data = make_phantoms(8, 256, seed=0)
    strategy = get_strategy("mean-points")
    strategy.fit(data)
    model = load_sam("random:tiny").to(args.device)
    embeddings = torch.randn(8, 256, 64, 64, device=args.device)
    targets = (
        torch.from_numpy(np.stack([low_res_target(s.mask) for s in data]))[:, None]
        .float()
        .to(args.device)
    )
    prompts = [strategy.inference_prompt(s) for s in data]
    optimizer = torch.optim.Adam(model.sam.mask_decoder.parameters(), lr=1e-5)
    loss_fn = DiceFocalLoss(sigmoid=True)

    def step() -> None:
        loss = loss_fn(decode_low_res(model.sam, embeddings, prompts), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            step()
    key = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=12))


if __name__ == "__main__":
    run_main(main)
