"""Trainable prompt embeddings: what a learned prompt strategy gives the decoder instead of
points and boxes.

SAM's decoder reads *sparse* prompt tokens (``(K, C)``, one per point or box corner) and a
*dense* embedding (``(C, h, w)``, from a low-res mask through the prompt encoder's
``mask_downscaling``, or the constant ``no_mask_embed``). :class:`PromptTokens` holds trainable
values of both: free sparse tokens, and optionally a learned low-res mask (logits) that goes
through the frozen ``mask_downscaling`` like SAM's own ``mask_input``.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam
from torch import nn

__all__ = ["DecoderAndPrompt", "PromptTokens"]


class PromptTokens(nn.Module):
    """Learned sparse prompt tokens and an optional learned mask prompt.

    Parameters
    ----------
    sparse : torch.Tensor
        ``(K, C)`` initial token values (``C`` = the prompt encoder's ``embed_dim``).
    mask_logits : torch.Tensor, optional
        ``(S, S)`` initial mask logits in SAM's low-res frame (``S`` = 4 x the embedding side).

    Examples
    --------
    >>> tokens = PromptTokens(torch.zeros(2, 8))
    >>> tokens.sparse_for(3).shape, tokens.num_tokens
    (torch.Size([3, 2, 8]), 2)
    """

    def __init__(self, sparse: torch.Tensor, mask_logits: torch.Tensor | None = None) -> None:
        super().__init__()
        if sparse.ndim != 2:
            raise ValueError(f"sparse tokens must be (K, C), got {tuple(sparse.shape)}")
        self.sparse = nn.Parameter(sparse.detach().clone().float())
        self.mask_logits = (
            nn.Parameter(mask_logits.detach().clone().float()) if mask_logits is not None else None
        )

    @property
    def num_tokens(self) -> int:
        """``K``, the number of sparse tokens."""
        return int(self.sparse.shape[0])

    def sparse_for(self, batch: int) -> torch.Tensor:
        """``(batch, K, C)``: the tokens for every row of a decoder call."""
        return self.sparse.unsqueeze(0).expand(batch, -1, -1)

    def dense_for(self, sam: Sam, batch: int) -> torch.Tensor | None:
        """``(batch, C, h, w)`` from the learned mask through SAM's (frozen) mask encoder, or
        None without a learned mask."""
        if self.mask_logits is None:
            return None
        dense = sam.prompt_encoder.mask_downscaling(self.mask_logits[None, None])
        return dense.expand(batch, -1, -1, -1)  # type: ignore[no-any-return]

    @classmethod
    def like(cls, state: dict[str, torch.Tensor]) -> PromptTokens:
        """A module shaped for ``state`` (a :meth:`state_dict`), ready for ``load_state_dict``."""
        mask = state.get("mask_logits")
        return cls(
            torch.zeros_like(state["sparse"]), None if mask is None else torch.zeros_like(mask)
        )


class DecoderAndPrompt(nn.Module):
    """The mask decoder and a learned prompt as one module: trained, checkpointed and kept best
    together (state-dict keys ``decoder.*`` and ``prompt.*``)."""

    def __init__(self, decoder: nn.Module, prompt: PromptTokens) -> None:
        super().__init__()
        self.decoder = decoder
        self.prompt = prompt
