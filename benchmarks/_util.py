"""Helpers shared by the benchmark scripts (timing, tables, the machine's description)."""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence

import attrs
import numpy as np
import torch

from samprompt import LoadedSam, Prompt, RandomWeightsWarning, get_strategy, load_sam
from samprompt.data import low_res_target, make_phantoms
from samprompt.errors import SampromptError

warnings.simplefilter("ignore", RandomWeightsWarning)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return p


def run_main(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``; a bad input (missing data folder, bad checkpoint ...) ends in
    one line naming it, as the ``samprompt`` command does, not a traceback."""
    try:
        main()
    except SampromptError as exc:
        sys.exit(f"error: {exc}")


def setup(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# machine: {machine(args.device)}")


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, repeat: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``fn`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        tick = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    """GFLOP/s of one large square matrix product: the practical peak the step is measured against."""
    n = 4096 if device.startswith("cuda") or dtype == torch.float32 else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device, repeat=3 if device.startswith("cuda") else 1)
    return 2 * n**3 / seconds / 1e9


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in row) + " |")


@attrs.frozen
class StepInputs:
    """What one cached decoder training step consumes, on ``device``."""

    model: LoadedSam
    prompts: list[Prompt]
    embeddings: torch.Tensor
    targets: torch.Tensor


def step_inputs(spec: str, batch: int, device: str) -> StepInputs:
    """A model, mean-point prompts, random embeddings and phantom targets for ``batch`` images."""
    data = make_phantoms(batch, 256, seed=0)
    strategy = get_strategy("mean-points")
    strategy.fit(data)
    prompts = [strategy.inference_prompt(s) for s in data]
    model = load_sam(spec).to(device)
    targets = torch.from_numpy(np.stack([low_res_target(s.mask, model.low_res_size) for s in data]))
    return StepInputs(
        model=model,
        prompts=prompts,
        embeddings=torch.randn(batch, 256, 64, 64, device=device),
        targets=targets[:, None].float().to(device),
    )
