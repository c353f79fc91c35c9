"""Decoding in passes: a strategy that refines (``refine_passes > 0``) prompts each pass with the
previous pass's answer. Training and inference both decode through :func:`decode_passes`, so the
decoder is trained on the prompts it will see."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segment_anything.modeling import Sam

from samprompt.data.sample import Sample
from samprompt.decoder import decode_low_res
from samprompt.prompts.calls import refine_passes, refine_prompt
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.strategy import PromptStrategy
from samprompt.prompts.tokens import PromptTokens

__all__ = ["decode_passes"]


def decode_passes(
    sam: Sam,
    embeddings: torch.Tensor,
    samples: Sequence[Sample],
    prompts: Sequence[Prompt],
    strategy: PromptStrategy,
    *,
    tokens: PromptTokens | None = None,
    multimask_output: bool = False,
    passes: int | None = None,
) -> list[torch.Tensor]:
    """Low-res logits of the first pass (from ``prompts``) and of each refinement pass.

    Parameters
    ----------
    sam, embeddings, prompts, multimask_output, tokens
        As for :func:`~samprompt.decoder.decode_low_res`.
    samples : sequence of Sample
        The images of the batch (their masks are never handed to the strategy).
    strategy : PromptStrategy
        Makes each further pass's prompt from the previous logits (``refine_prompt``).
    passes : int, optional
        Refinement passes after the first (default: ``strategy.refine_passes``, 0 for a strategy
        that does not refine).

    Returns
    -------
    list of torch.Tensor
        ``1 + passes`` tensors of ``(B, 1, S, S)`` logits; the last is the answer. A later pass
        sees the earlier ones detached: gradients reach each pass's own decoder call only.
    """
    count = refine_passes(strategy) if passes is None else passes
    logits = decode_low_res(
        sam, embeddings, prompts, multimask_output=multimask_output, tokens=tokens
    )
    outputs = [logits]
    for _ in range(count):
        previous = logits.detach().float().cpu().numpy()[:, 0]
        prompts = [refine_prompt(strategy, s, p) for s, p in zip(samples, previous, strict=True)]
        logits = decode_low_res(
            sam, embeddings, prompts, multimask_output=multimask_output, tokens=tokens
        )
        outputs.append(logits)
    return outputs
