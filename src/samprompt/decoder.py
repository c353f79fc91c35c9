"""A batched forward of SAM's prompt encoder and mask decoder over cached embeddings.

The official ``MaskDecoder.predict_masks`` repeats one image's embedding for each of its prompts,
so it cannot take a batch of several images each with its own prompt, and ``Sam.forward`` runs
under ``torch.no_grad()``. This module runs the same submodules (so the weights, and the numbers,
are SAM's) on a batch of images with one or more prompt rows each; a test checks it against the
official per-image call.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
import torch
from segment_anything.modeling import Sam

from samprompt.fast_forward import decoder_tokens_forward
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.tokens import PromptTokens

__all__ = ["decode_low_res"]


@attrs.frozen
class _Row:
    """One decoder row: an image with its points, one of its boxes and its mask input."""

    image: int
    points: np.ndarray | None
    labels: np.ndarray | None
    box: np.ndarray | None
    mask: np.ndarray | None

    @property
    def shape_key(self) -> tuple[int, bool, bool]:
        return (0 if self.points is None else len(self.points), self.box is not None,
                self.mask is not None)  # fmt: skip


def _prompt_rows(prompts: Sequence[Prompt], img_size: int) -> list[_Row]:
    """One row per (image, box): every box of an image is decoded with all of its points."""
    rows: list[_Row] = []
    for index, prompt in enumerate(prompts):
        points, boxes = prompt.to_input_frame(img_size)
        labels, mask = prompt.point_labels, prompt.mask_input
        if boxes is None or len(boxes) == 0:
            rows.append(_Row(index, points, labels, None, mask))
        else:
            rows.extend(_Row(index, points, labels, box, mask) for box in boxes)
    return rows


def _groups(rows: list[_Row]) -> list[list[int]]:
    """Rows with the same number of points, boxes and mask inputs: each group runs in one decoder
    call, since padding prompts to a common length would change SAM's attention and its output."""
    groups: dict[tuple[int, bool, bool], list[int]] = {}
    for r, row in enumerate(rows):
        groups.setdefault(row.shape_key, []).append(r)
    return list(groups.values())


def _stack(
    arrays: list[np.ndarray | None], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    return torch.as_tensor(
        np.stack([a for a in arrays if a is not None]), dtype=dtype, device=device
    )


def _sparse_embeddings(
    sam: Sam, rows: list[_Row], tokens: PromptTokens | None, device: torch.device
) -> torch.Tensor:
    """Encode same-shaped rows with the (frozen) prompt encoder in one call, then append the
    learned tokens."""
    first = rows[0]
    point_arg = box_arg = None
    if first.points is not None:
        point_arg = (
            _stack([r.points for r in rows], torch.float32, device),
            _stack([r.labels for r in rows], torch.int64, device),
        )
    if first.box is not None:
        box_arg = _stack([r.box for r in rows], torch.float32, device)
    if point_arg is None and box_arg is None:
        # The prompt encoder would return a batch of one here; an empty prompt is (R, 0, C).
        sparse = torch.empty(len(rows), 0, sam.prompt_encoder.embed_dim, device=device)
    else:
        sparse, _ = sam.prompt_encoder(points=point_arg, boxes=box_arg, masks=None)
    if tokens is not None:
        sparse = torch.cat([sparse, tokens.sparse_for(len(rows)).to(sparse.dtype)], dim=1)
    return sparse


def _dense_embeddings(
    sam: Sam, rows: list[_Row], tokens: PromptTokens | None, device: torch.device
) -> torch.Tensor:
    """``(R, C, h, w)`` or ``(1, C, 1, 1)``: the rows' mask inputs through SAM's mask encoder,
    else the learned mask prompt, else SAM's ``no_mask_embed``."""
    if rows[0].mask is not None:
        masks = _stack([r.mask for r in rows], torch.float32, device)[:, None]
        return sam.prompt_encoder.mask_downscaling(masks)  # type: ignore[no-any-return]
    learned = tokens.dense_for(sam, len(rows)) if tokens is not None else None
    if learned is not None:
        return learned
    return sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)  # type: ignore[no-any-return]


def _decode_rows(
    sam: Sam,
    src: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    multimask_output: bool,
) -> torch.Tensor:
    """SAM's mask decoder on one image embedding per row (no repeat_interleave), ``(R, 1, S, S)``."""
    h, w = src.shape[-2:]
    image_tokens = (src + dense.to(src.dtype)).flatten(2).transpose(1, 2).contiguous()
    pos_tokens = sam.prompt_encoder.get_dense_pe().flatten(2).transpose(1, 2).contiguous()
    return decoder_tokens_forward(
        sam.mask_decoder, image_tokens, pos_tokens, sparse, h, w, multimask_output
    )


def _decode_group(
    sam: Sam,
    embeddings: torch.Tensor,
    rows: list[_Row],
    tokens: PromptTokens | None,
    multimask_output: bool,
) -> torch.Tensor:
    device = embeddings.device
    sparse = _sparse_embeddings(sam, rows, tokens, device).to(embeddings.dtype)
    dense = _dense_embeddings(sam, rows, tokens, device)
    return _decode_rows(sam, embeddings, sparse, dense, multimask_output)


def decode_low_res(
    sam: Sam,
    embeddings: torch.Tensor,
    prompts: Sequence[Prompt],
    *,
    multimask_output: bool = False,
    tokens: PromptTokens | None = None,
) -> torch.Tensor:
    """Low-resolution mask logits for a batch of images.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The model (its prompt encoder and mask decoder are used; gradients flow into the decoder).
    embeddings : torch.Tensor
        ``(B, 256, h, w)`` image embeddings (``64x64`` for SAM), on the model's device.
    prompts : sequence of Prompt
        One prompt per image, in each image's original pixel frame; a prompt's ``mask_input``
        goes through SAM's mask encoder as its dense prompt.
    multimask_output : bool
        False (default): SAM's single-mask output. True: of SAM's three masks, the one with the
        highest predicted IoU (useful for zero-shot single-point prompts).
    tokens : PromptTokens, optional
        A learned prompt: its tokens follow every row's own prompt tokens, and its learned mask
        (if any) is the dense prompt of rows without a mask input. Gradients flow into it.

    Returns
    -------
    torch.Tensor
        ``(B, 1, 4h, 4w)`` logits in the low-res frame (``256x256`` for SAM). An image with several
        boxes gets the element-wise maximum of its boxes' logits (the union of their masks).
    """
    if embeddings.shape[0] != len(prompts):
        raise ValueError(f"{embeddings.shape[0]} embeddings but {len(prompts)} prompts")
    device = embeddings.device
    rows = _prompt_rows(prompts, int(sam.image_encoder.img_size))
    groups = _groups(rows)
    if len(groups) == 1 and len(rows) == len(prompts):
        return _decode_group(sam, embeddings, rows, tokens, multimask_output)
    parts: list[torch.Tensor] = []
    order: list[int] = []
    for members in groups:
        group_rows = [rows[r] for r in members]
        images = torch.as_tensor([r.image for r in group_rows], device=device)
        parts.append(_decode_group(sam, embeddings[images], group_rows, tokens, multimask_output))
        order.extend(members)
    by_row = torch.cat(parts)[torch.as_tensor(np.argsort(order), device=device)]
    image_of_row = torch.as_tensor([r.image for r in rows], device=device)
    return torch.stack([by_row[image_of_row == b].amax(dim=0) for b in range(len(prompts))])
