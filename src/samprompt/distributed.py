"""Multi-process runs with ``torch.distributed`` (launched by ``torchrun``).

Under ``torchrun`` (``WORLD_SIZE > 1``) the embedding cache shards missing images by rank (each
image is computed and written once), the finetuner wraps the mask decoder in
``DistributedDataParallel`` and splits every global batch between ranks, validation metrics are
gathered from all ranks, and only rank 0 writes checkpoints and reports. CPU runs use the gloo
backend, CUDA runs NCCL. The cache folder must be shared by all ranks (one machine, or a shared
file system).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from samprompt.decoder import decode_low_res
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.tokens import PromptTokens

__all__ = [
    "DecoderModule",
    "all_gather",
    "barrier",
    "init_from_env",
    "is_main",
    "rank",
    "world_size",
    "wrap_decoder",
]


def world_size() -> int:
    """Number of processes (1 outside ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_world_size())
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 outside ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True on rank 0, which alone writes files."""
    return rank() == 0


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group ``torchrun`` describes; return whether this is a multi-process run.

    With CUDA each rank uses the GPU ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def barrier() -> None:
    """Wait for all ranks (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


class DecoderModule(nn.Module):
    """SAM's prompt encoder + mask decoder as one module, so ``DistributedDataParallel`` can wrap
    it. Only the mask decoder and a learned prompt's ``tokens`` are registered (the frozen parts
    are not synchronised)."""

    def __init__(
        self, sam: nn.Module, multimask_output: bool = False, tokens: PromptTokens | None = None
    ) -> None:
        super().__init__()
        self.mask_decoder = sam.mask_decoder
        self.tokens = tokens
        self._sam = [sam]  # a list keeps the frozen model out of the module tree
        self.multimask_output = multimask_output

    def forward(self, embeddings: torch.Tensor, prompts: list[Prompt]) -> torch.Tensor:
        return decode_low_res(
            self._sam[0],
            embeddings,
            prompts,
            multimask_output=self.multimask_output,
            tokens=self.tokens,
        )


def wrap_decoder(
    sam: nn.Module, multimask_output: bool, device: str, tokens: PromptTokens | None = None
) -> nn.Module | None:
    """SAM's decoder (and a learned prompt's tokens) in ``DistributedDataParallel`` under
    torchrun; None in a single process."""
    if world_size() <= 1:
        return None
    return DistributedDataParallel(
        DecoderModule(sam, multimask_output, tokens),
        find_unused_parameters=True,
        device_ids=[torch.device(device).index or 0] if device.startswith("cuda") else None,
    )
