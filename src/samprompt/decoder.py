"""A batched forward of SAM's prompt encoder and mask decoder over cached embeddings.

The official ``MaskDecoder.predict_masks`` repeats one image's embedding for each of its prompts,
so it cannot take a batch of several images each with its own prompt, and ``Sam.forward`` runs
under ``torch.no_grad()``. This module runs the same submodules (so the weights, and the numbers,
are SAM's) on a batch of images with one or more prompt rows each; a test checks it against the
official per-image call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from segment_anything.modeling import Sam

from samprompt.fast_forward import decoder_tokens_forward
from samprompt.prompts.prompt import Prompt

__all__ = ["decode_low_res"]

Row = tuple[int, "np.ndarray | None", "np.ndarray | None", "np.ndarray | None"]


def _prompt_rows(prompts: Sequence[Prompt], img_size: int) -> list[Row]:
    """One row per (image, box): every box of an image is decoded with all of its points."""
    rows: list[Row] = []
    for index, prompt in enumerate(prompts):
        points, boxes = prompt.to_input_frame(img_size)
        if boxes is None or len(boxes) == 0:
            rows.append((index, points, prompt.point_labels, None))
        else:
            rows.extend((index, points, prompt.point_labels, box) for box in boxes)
    return rows


def _groups(rows: list[Row]) -> list[list[int]]:
    """Rows with the same number of points and boxes: each group runs in one decoder call, since
    padding prompts to a common length would change SAM's attention and its output."""
    groups: dict[tuple[int, bool], list[int]] = {}
    for r, (_, points, _, box) in enumerate(rows):
        groups.setdefault((0 if points is None else len(points), box is not None), []).append(r)
    return list(groups.values())


def _stack(arrays: list[np.ndarray | None]) -> np.ndarray:
    return np.stack([a for a in arrays if a is not None])


def _sparse_embeddings(sam: Sam, rows: list[Row], device: torch.device) -> torch.Tensor:
    """Encode same-shaped rows with the (frozen) prompt encoder in one call."""
    first = rows[0]
    point_arg = None
    if first[1] is not None:
        coords = torch.as_tensor(_stack([r[1] for r in rows]), dtype=torch.float32, device=device)
        labels = torch.as_tensor(_stack([r[2] for r in rows]), dtype=torch.int64, device=device)
        point_arg = (coords, labels)
    box_arg = None
    if first[3] is not None:
        box_arg = torch.as_tensor(_stack([r[3] for r in rows]), dtype=torch.float32, device=device)
    sparse, _ = sam.prompt_encoder(points=point_arg, boxes=box_arg, masks=None)
    return sparse  # type: ignore[no-any-return]


def _decode_rows(
    sam: Sam, src: torch.Tensor, sparse: torch.Tensor, multimask_output: bool
) -> torch.Tensor:
    """SAM's mask decoder on one image embedding per row (no repeat_interleave), ``(R, 1, S, S)``."""
    h, w = src.shape[-2:]
    no_mask = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
    image_tokens = (src + no_mask).flatten(2).transpose(1, 2).contiguous()
    pos_tokens = sam.prompt_encoder.get_dense_pe().flatten(2).transpose(1, 2).contiguous()
    return decoder_tokens_forward(
        sam.mask_decoder, image_tokens, pos_tokens, sparse, h, w, multimask_output
    )


def decode_low_res(
    sam: Sam,
    embeddings: torch.Tensor,
    prompts: Sequence[Prompt],
    *,
    multimask_output: bool = False,
) -> torch.Tensor:
    """Low-resolution mask logits for a batch of images.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The model (its prompt encoder and mask decoder are used; gradients flow into the decoder).
    embeddings : torch.Tensor
        ``(B, 256, h, w)`` image embeddings (``64x64`` for SAM), on the model's device.
    prompts : sequence of Prompt
        One prompt per image, in each image's original pixel frame.
    multimask_output : bool
        False (default): SAM's single-mask output. True: of SAM's three masks, the one with the
        highest predicted IoU (useful for zero-shot single-point prompts).

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
        sparse = _sparse_embeddings(sam, rows, device).to(embeddings.dtype)
        return _decode_rows(sam, embeddings, sparse, multimask_output)
    parts: list[torch.Tensor] = []
    order: list[int] = []
    for members in groups:
        group_rows = [rows[r] for r in members]
        images = torch.as_tensor([r[0] for r in group_rows], device=device)
        sparse = _sparse_embeddings(sam, group_rows, device).to(embeddings.dtype)
        parts.append(_decode_rows(sam, embeddings[images], sparse, multimask_output))
        order.extend(members)
    by_row = torch.cat(parts)[torch.as_tensor(np.argsort(order), device=device)]
    image_of_row = torch.as_tensor([r[0] for r in rows], device=device)
    return torch.stack([by_row[image_of_row == b].amax(dim=0) for b in range(len(prompts))])
