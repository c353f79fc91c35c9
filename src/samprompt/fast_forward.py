"""SAM's mask-decoder forward, rewritten for throughput over the official modules' own weights.

The official forward keeps the image side in ``(B, C, H, W)`` layout: the two-way transformer
flattens it to tokens, transposes back, and ``output_upscaling`` runs two transposed convolutions
and a hand-written ``LayerNorm2d`` on it. On a CPU most of a training step then goes to copies of
non-contiguous tensors and to element-wise kernels over the upscaled maps, not to arithmetic.

Here the image side stays in token layout ``(B, H*W, C)`` from the first layer to the logits:

- attention goes through :func:`torch.nn.functional.scaled_dot_product_attention`;
- a ``ConvTranspose2d`` with kernel 2 and stride 2 maps every input pixel to its own 2x2 output
  block, so it is one matrix product per pixel (``C_in -> 4 * C_out``), and the following
  ``LayerNorm2d`` is a plain layer norm over the last axis;
- the mask logits (hypernetwork vector . upscaled features) are taken before the pixels are put
  back in image order, so only the one-channel logits are ever permuted.

Every parameter used is the official module's own, so gradients land in ``sam.mask_decoder`` as
before; tests compare the output and the gradients with SAM's per-image path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.mask_decoder import MaskDecoder
from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer

__all__ = ["decoder_tokens_forward"]


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, dim = x.shape
    return x.view(b, n, heads, dim // heads).transpose(1, 2)


def _heads(module: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention of already projected ``q``, ``k``, ``v``, then the output projection."""
    b, n_q, dim = q.shape
    heads = module.num_heads
    out = F.scaled_dot_product_attention(
        _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads)
    )
    return module.out_proj(out.transpose(1, 2).reshape(b, n_q, dim))  # type: ignore[no-any-return]


def _attend(module: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _heads(module, module.q_proj(q), module.k_proj(k), module.v_proj(v))


def _image_projections(
    keys: torch.Tensor,
    key_pe: torch.Tensor,
    with_pe: list[torch.nn.Linear],
    plain: list[torch.nn.Linear],
) -> list[torch.Tensor]:
    """Every projection of the image tokens in one matrix product.

    ``with_pe`` layers see ``keys + key_pe``, ``plain`` ones ``keys``. Since the positional
    encoding is the same for every image, ``W (keys + pe) = W keys + (W pe)`` and ``W pe`` is
    computed once per batch; the layers then share one input and one wide product.
    """
    layers = with_pe + plain
    weight = torch.cat([layer.weight for layer in layers])
    bias = torch.cat([layer.bias for layer in layers])
    projected = torch.split(
        F.linear(keys, weight, bias), [layer.out_features for layer in layers], dim=-1
    )
    pe_part = F.linear(key_pe, torch.cat([layer.weight for layer in with_pe]))
    pe_split = torch.split(pe_part, [layer.out_features for layer in with_pe], dim=-1)
    return [p + e for p, e in zip(projected, pe_split, strict=False)] + list(
        projected[len(with_pe) :]
    )


def _block(
    block: TwoWayAttentionBlock,
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_pe: torch.Tensor,
    key_pe: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    if block.skip_first_layer_pe:
        queries = _attend(block.self_attn, queries, queries, queries)
    else:
        q = queries + query_pe
        queries = queries + _attend(block.self_attn, q, q, queries)
    queries = block.norm1(queries)
    to_image, to_token = block.cross_attn_token_to_image, block.cross_attn_image_to_token
    image_k, image_q, image_v = _image_projections(
        keys, key_pe, [to_image.k_proj, to_token.q_proj], [to_image.v_proj]
    )
    queries = block.norm2(
        queries + _heads(to_image, to_image.q_proj(queries + query_pe), image_k, image_v)
    )
    queries = block.norm3(queries + block.mlp(queries))
    token_side = queries + query_pe
    keys = block.norm4(
        keys + _heads(to_token, image_q, to_token.k_proj(token_side), to_token.v_proj(queries))
    )
    return queries, keys


def _two_way(
    transformer: TwoWayTransformer,
    keys: torch.Tensor,
    key_pe: torch.Tensor,
    tokens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``TwoWayTransformer.forward`` with the image already in ``(B, H*W, C)`` token layout."""
    queries = tokens
    for block in transformer.layers:
        queries, keys = _block(block, queries, keys, tokens, key_pe)
    final = transformer.final_attn_token_to_image
    image_k, image_v = _image_projections(keys, key_pe, [final.k_proj], [final.v_proj])
    attn = _heads(final, final.q_proj(queries + tokens), image_k, image_v)
    return transformer.norm_final_attn(queries + attn), keys


def _pixelwise(conv: torch.nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-2 stride-2 transposed convolution on channel-last pixels: ``(..., C_in)`` to
    ``(..., 4, C_out)``, the 4 being the output block's (row, column) offsets in row-major order."""
    c_out = conv.out_channels
    weight = conv.weight.permute(2, 3, 1, 0).reshape(4 * c_out, conv.in_channels)
    bias = None if conv.bias is None else conv.bias.repeat(4)
    out = F.linear(x, weight, bias)
    return out.view(*out.shape[:-1], 4, c_out)


def _check_upscaling(decoder: MaskDecoder) -> None:
    layers = list(decoder.output_upscaling)
    convs = [layers[0], layers[3]] if len(layers) == 5 else []
    if (
        not all(
            isinstance(c, torch.nn.ConvTranspose2d)
            and c.kernel_size == (2, 2)
            and c.stride == (2, 2)
            and c.padding == (0, 0)
            and c.groups == 1
            for c in convs
        )
        or len(convs) != 2
    ):
        raise ValueError(
            "output_upscaling is not SAM's (ConvTranspose2d k2 s2, LayerNorm2d, act, "
            "ConvTranspose2d k2 s2, act); use the official forward for this decoder"
        )


def _upscaled_logits(
    decoder: MaskDecoder, image_tokens: torch.Tensor, hyper: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """Mask logits ``(B, M, 4h, 4w)`` from the transformer's image tokens ``(B, h*w, C)`` and the
    hypernetwork vectors ``(B, M, C/8)``, without forming the upscaled maps in image order."""
    _check_upscaling(decoder)
    conv1, norm, act1, conv2, act2 = decoder.output_upscaling
    x = _pixelwise(conv1, image_tokens)  # (B, hw, 4, C1)
    x = act1(F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps))
    x = act2(_pixelwise(conv2, x))  # (B, hw, 4, 4, C2)
    b, n_masks = hyper.shape[:2]
    logits = torch.bmm(x.reshape(b, -1, x.shape[-1]), hyper.transpose(1, 2))  # (B, hw*16, M)
    # pixel (4i + 2*di + ei, 4j + 2*dj + ej) sits at [i, j, di, dj, ei, ej]
    logits = logits.view(b, h, w, 2, 2, 2, 2, n_masks).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return logits.reshape(b, n_masks, 4 * h, 4 * w)


def decoder_tokens_forward(
    decoder: MaskDecoder,
    image_tokens: torch.Tensor,
    pos_tokens: torch.Tensor,
    sparse: torch.Tensor,
    h: int,
    w: int,
    multimask_output: bool,
) -> torch.Tensor:
    """Low-res logits ``(B, 1, 4h, 4w)`` of SAM's mask decoder, one image per row.

    Parameters
    ----------
    decoder : segment_anything.modeling.MaskDecoder
        The official decoder whose parameters are used.
    image_tokens : torch.Tensor
        ``(B, h*w, C)`` image embedding plus the dense (no-mask) prompt embedding, token layout.
    pos_tokens : torch.Tensor
        ``(1, h*w, C)`` positional encoding of the image grid, token layout.
    sparse : torch.Tensor
        ``(B, N, C)`` sparse prompt embeddings.
    h, w : int
        The embedding grid.
    multimask_output : bool
        False: the single-mask output. True: of the three masks, the one with the highest
        predicted IoU.
    """
    n_rows = image_tokens.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(n_rows, -1, -1), sparse], dim=1)
    hs, keys = _two_way(decoder.transformer, image_tokens, pos_tokens, tokens)
    if not multimask_output:
        hyper = decoder.output_hypernetworks_mlps[0](hs[:, 1]).unsqueeze(1)
        return _upscaled_logits(decoder, keys, hyper, h, w)
    hyper = torch.stack(
        [
            decoder.output_hypernetworks_mlps[i](hs[:, 1 + i])
            for i in range(1, decoder.num_mask_tokens)
        ],
        dim=1,
    )
    best = decoder.iou_prediction_head(hs[:, 0])[:, 1:].argmax(dim=1)
    logits = _upscaled_logits(decoder, keys, hyper, h, w)
    return logits[torch.arange(n_rows, device=logits.device), best].unsqueeze(1)
