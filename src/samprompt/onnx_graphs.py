"""The traceable modules :mod:`samprompt.onnx_export` writes as ONNX graphs.

Each holds the frozen prompt encoder, the fine-tuned mask decoder and the post-processing of one
image, written with tensor operations only so that the tracer keeps every size an input of the
graph. Prompts arrive label-coded (:data:`PAD_LABEL`, :data:`BOX_LABELS`) as SAM's
``SamPredictor`` would pass them to its prompt encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from samprompt.prompts.tokens import PromptTokens

__all__ = [
    "BOX_LABELS",
    "PAD_LABEL",
    "LearnedPromptDecoder",
    "PreprocessingEncoder",
    "PromptedDecoder",
]

#: The label of SAM's padding point (added after points when a prompt has no box).
PAD_LABEL = -1.0
#: The labels of a box's top-left and bottom-right corners.
BOX_LABELS = (2.0, 3.0)

DecoderOutputs = tuple[torch.Tensor, ...]


def _input_shape(orig_size: torch.Tensor, side: int) -> torch.Tensor:
    """``ResizeLongestSide.get_preprocess_shape`` on a tensor (so it is traced into the graph)."""
    size = orig_size.to(torch.float32)
    return torch.floor(size * (side / size.max()) + 0.5).to(torch.int64)


class PromptedDecoder(nn.Module):
    """Prompt encoder + mask decoder + post-processing of one image, as one traceable module.

    Outputs ``logits`` and ``mask`` at the image's size, and with ``low_res_output`` also the
    ``(1, 1, S, S)`` low-res logits a refinement pass starts from. With ``tokens`` (a learned
    prompt) they follow every row's own prompt tokens, and their learned mask is the dense prompt
    unless a ``mask_input`` is given: one refinement pass of ``refine``, whose rows are the
    previous pass's boxes and whose ``mask_input`` is its low-res logits.
    """

    def __init__(
        self,
        sam: Sam,
        threshold_logit: float,
        multimask_output: bool = False,
        *,
        low_res_output: bool = False,
        tokens: PromptTokens | None = None,
    ) -> None:
        super().__init__()
        self.sam = sam
        self.side = int(sam.image_encoder.img_size)
        self.threshold_logit = float(threshold_logit)
        self.multimask_output = multimask_output
        self.low_res_output = low_res_output
        self.tokens = tokens

    def _sparse(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        encoder = self.sam.prompt_encoder
        embedding = encoder.pe_layer.forward_with_coords(coords + 0.5, (self.side, self.side))
        label = labels.unsqueeze(-1)
        embedding = embedding * (label != PAD_LABEL).to(embedding.dtype)
        embedding = embedding + encoder.not_a_point_embed.weight * (label == PAD_LABEL)
        for k, point_embedding in enumerate(encoder.point_embeddings):
            embedding = embedding + point_embedding.weight * (label == k)
        return embedding  # type: ignore[no-any-return]

    def _scaled_sparse(
        self, coords: torch.Tensor, labels: torch.Tensor, orig_size: torch.Tensor
    ) -> torch.Tensor:
        """Original-frame pixel prompts moved to the model's input frame, then encoded."""
        shape = _input_shape(orig_size, self.side)
        scale = (shape.to(torch.float32) / orig_size.to(torch.float32)).flip(0)
        return self._sparse(coords * scale, labels)

    def _decode(
        self,
        image_embeddings: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        orig_size: torch.Tensor,
    ) -> DecoderOutputs:
        outputs = _decode_to_image(
            self.sam, image_embeddings, sparse, dense, orig_size, self.threshold_logit,
            self.multimask_output,
        )  # fmt: skip
        return outputs if self.low_res_output else outputs[:2]

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        orig_size: torch.Tensor,
        mask_input: torch.Tensor | None = None,
    ) -> DecoderOutputs:
        sparse = self._scaled_sparse(point_coords, point_labels, orig_size)
        dense: torch.Tensor | None = None
        if self.tokens is not None:
            sparse = torch.cat([sparse, self.tokens.sparse_for(sparse.shape[0])], dim=1)
            dense = self.tokens.dense_for(self.sam, 1)
        if mask_input is not None:
            dense = self.sam.prompt_encoder.mask_downscaling(mask_input)
        if dense is None:
            dense = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self._decode(image_embeddings, sparse, dense, orig_size)


class LearnedPromptDecoder(PromptedDecoder):
    """A learned prompt baked in: embeddings + image size -> logits and mask, no prompt input."""

    def __init__(
        self,
        sam: Sam,
        tokens: PromptTokens,
        threshold_logit: float,
        multimask_output: bool,
        *,
        low_res_output: bool = False,
    ) -> None:
        super().__init__(
            sam, threshold_logit, multimask_output, low_res_output=low_res_output, tokens=tokens
        )
        self.learned = tokens

    def forward(  # type: ignore[override]
        self, image_embeddings: torch.Tensor, orig_size: torch.Tensor
    ) -> DecoderOutputs:
        sparse = self.learned.sparse_for(1)
        dense = self.learned.dense_for(self.sam, 1)
        if dense is None:
            dense = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self._decode(image_embeddings, sparse, dense, orig_size)


def _decode_to_image(
    sam: Sam,
    image_embeddings: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    orig_size: torch.Tensor,
    threshold_logit: float,
    multimask_output: bool,
) -> DecoderOutputs:
    """The mask decoder on ``R`` prompt rows, their union, then logits and mask at ``(H, W)``
    and the union's ``(1, 1, S, S)`` low-res logits."""
    side = int(sam.image_encoder.img_size)
    shape = _input_shape(orig_size, side)
    h, w = image_embeddings.shape[-2:]
    low_res, iou = sam.mask_decoder(
        image_embeddings,
        sam.prompt_encoder.get_dense_pe(),
        sparse,
        dense.expand(sparse.shape[0], -1, h, w),
        multimask_output=multimask_output,
    )
    if multimask_output:
        best = iou.argmax(dim=1)
        low_res = low_res[torch.arange(low_res.shape[0]), best].unsqueeze(1)
    union = low_res.amax(dim=0, keepdim=True)
    logits = F.interpolate(union, (side, side), mode="bilinear", align_corners=False)
    logits = logits[..., : shape[0], : shape[1]]
    # Tensors, not ints, so the tracer keeps the output size an input of the graph.
    size = (orig_size[0], orig_size[1])
    logits = F.interpolate(logits, size, mode="bilinear", align_corners=False)[0, 0]  # type: ignore[arg-type]
    return logits, logits >= threshold_logit, union


class PreprocessingEncoder(nn.Module):
    """``Sam.preprocess`` (normalise, pad bottom-right) + the image encoder, as one module."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam
        self.side = int(sam.image_encoder.img_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32).permute(2, 0, 1).unsqueeze(0)
        x = (x - self.sam.pixel_mean) / self.sam.pixel_std
        x = F.pad(x, (0, self.side - x.shape[-1], 0, self.side - x.shape[-2]))
        return self.sam.image_encoder(x)  # type: ignore[no-any-return]
