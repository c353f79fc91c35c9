"""The official SAM family: ``ImageEncoderViT`` (vit_b, vit_l, vit_h) and a CPU-sized ``tiny``."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import attrs
import torch
from segment_anything.modeling import ImageEncoderViT, Sam

from samprompt.errors import CheckpointError
from samprompt.families.base import PROMPT_DIM, ModelFamily, Preprocessing, sam_with_encoder

__all__ = ["VIT_VARIANTS", "EncoderConfig", "ViTFamily"]


@attrs.frozen
class EncoderConfig:
    """Image-encoder hyper-parameters of one SAM ViT variant (the rest of SAM is shared)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14


#: The official SAM variants, plus ``tiny``: the same classes at a size that runs in milliseconds
#: on a CPU (a 64x64 embedding and a 256x256 low-resolution mask, as with ``vit_b`` at 1024 px).
VIT_VARIANTS: dict[str, EncoderConfig] = {
    "vit_b": EncoderConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": EncoderConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": EncoderConfig(1280, 32, 16, (7, 15, 23, 31)),
    "tiny": EncoderConfig(96, 2, 2, (1,), img_size=256, patch_size=4, window_size=8),
}

_PATCH_KEY = "image_encoder.patch_embed.proj.weight"
#: ImageNet statistics on the 0-255 scale, as in ``segment_anything.build_sam``.
_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)


class ViTFamily(ModelFamily):
    """Meta's SAM (and MedSAM, which keeps its architecture): ViT image encoder, ImageNet
    normalisation, 1024 px input.

    Examples
    --------
    >>> family = ViTFamily()
    >>> family.preprocessing("vit_b").img_size, family.build("tiny").image_encoder.img_size
    (1024, 256)
    """

    name = "vit"
    variants = tuple(VIT_VARIANTS)
    zero_shot_multimask = True
    pretrained_lr = 1e-5

    def _config(self, variant: str) -> EncoderConfig:
        if variant not in VIT_VARIANTS:
            raise CheckpointError(
                f"unknown SAM ViT variant {variant!r}; expected one of {sorted(VIT_VARIANTS)}"
            )
        return VIT_VARIANTS[variant]

    def preprocessing(self, variant: str) -> Preprocessing:
        return Preprocessing(self._config(variant).img_size, _IMAGENET_MEAN, _IMAGENET_STD)

    def build(self, variant: str) -> Sam:
        cfg = self._config(variant)
        encoder = ImageEncoderViT(
            depth=cfg.depth,
            embed_dim=cfg.embed_dim,
            img_size=cfg.img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=cfg.num_heads,
            patch_size=cfg.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=cfg.global_attn_indexes,
            window_size=cfg.window_size,
            out_chans=PROMPT_DIM,
        )
        return sam_with_encoder(
            encoder, self.preprocessing(variant), cfg.img_size // cfg.patch_size
        )

    def recognise(self, state: Mapping[str, torch.Tensor]) -> str | None:
        if _PATCH_KEY not in state:
            return None
        embed_dim = int(state[_PATCH_KEY].shape[0])
        patch = int(state[_PATCH_KEY].shape[-1])
        depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
        for name, cfg in VIT_VARIANTS.items():
            if (cfg.embed_dim, cfg.depth, cfg.patch_size) == (embed_dim, depth, patch):
                return name
        raise CheckpointError(
            f"image encoder with embed dim {embed_dim}, {depth} blocks and patch {patch} "
            "matches no SAM ViT variant; expected one of "
            + ", ".join(
                f"{n} ({c.embed_dim}/{c.depth}/{c.patch_size})" for n, c in VIT_VARIANTS.items()
            )
        )
