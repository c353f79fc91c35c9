"""Load SAM from official or MedSAM-style checkpoints, freeze it, and save decoder-only weights.

Only the mask decoder is ever trained: :func:`load_sam` returns a model whose image encoder and
prompt encoder have ``requires_grad=False``.
"""

from __future__ import annotations

import logging
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import attrs
import torch
from safetensors.torch import load_file, save_file
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from samprompt.errors import CheckpointError, RandomWeightsWarning
from samprompt.hashing import file_sha256, tensors_sha256

__all__ = [
    "VARIANTS",
    "LoadedSam",
    "build_sam",
    "detect_variant",
    "load_decoder_weights",
    "load_sam",
    "save_decoder_weights",
]

logger = logging.getLogger(__name__)


@attrs.frozen
class EncoderConfig:
    """Image-encoder hyper-parameters of one SAM variant (the rest of SAM is shared)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14


#: The official SAM variants, plus ``tiny``: the same classes at a size that runs in milliseconds
#: on a CPU (a 64x64 embedding and a 256x256 low-resolution mask, as with ``vit_b`` at 1024 px).
VARIANTS: dict[str, EncoderConfig] = {
    "vit_b": EncoderConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": EncoderConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": EncoderConfig(1280, 32, 16, (7, 15, 23, 31)),
    "tiny": EncoderConfig(96, 2, 2, (1,), img_size=256, patch_size=4, window_size=8),
}

_PROMPT_DIM = 256
_PATCH_KEY = "image_encoder.patch_embed.proj.weight"


def build_sam(variant: str) -> Sam:
    """Build an untrained SAM of ``variant`` from the official ``segment_anything`` classes.

    Parameters
    ----------
    variant : str
        One of ``vit_b``, ``vit_l``, ``vit_h`` or ``tiny``.

    Returns
    -------
    segment_anything.modeling.Sam
        The model in eval mode, with PyTorch's default random initialisation.
    """
    if variant not in VARIANTS:
        raise CheckpointError(
            f"unknown SAM variant {variant!r}; expected one of {sorted(VARIANTS)}"
        )
    cfg = VARIANTS[variant]
    side = cfg.img_size // cfg.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
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
            out_chans=_PROMPT_DIM,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=_PROMPT_DIM,
            image_embedding_size=(side, side),
            input_image_size=(cfg.img_size, cfg.img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=_PROMPT_DIM, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=_PROMPT_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


@attrs.define(eq=False)
class LoadedSam:
    """A frozen SAM with where it came from.

    Attributes
    ----------
    sam : segment_anything.modeling.Sam
        The model; only ``sam.mask_decoder`` has trainable parameters.
    variant : str
        ``vit_b``, ``vit_l``, ``vit_h`` or ``tiny``, detected from tensor shapes.
    spec : str
        What was passed to :func:`load_sam` (a path or a ``random:`` spec).
    sha256 : str
        sha256 of the checkpoint file, or of the random weights for a ``random:`` spec.
    is_random : bool
        True for ``random:`` specs: results then say nothing about SAM itself.

    Examples
    --------
    >>> model = load_sam("random:tiny")
    >>> model.variant, model.img_size, model.embedding_size, model.is_random
    ('tiny', 256, (64, 64), True)
    """

    sam: Sam
    variant: str
    spec: str
    sha256: str
    is_random: bool = False

    @property
    def img_size(self) -> int:
        """Side of the square encoder input in pixels (1024 for official SAM)."""
        return int(self.sam.image_encoder.img_size)

    @property
    def embedding_size(self) -> tuple[int, int]:
        """Spatial size (h, w) of one image embedding (64x64 for official SAM)."""
        h, w = self.sam.prompt_encoder.image_embedding_size
        return int(h), int(w)

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution mask (256 for official SAM)."""
        return 4 * self.embedding_size[0]

    @cached_property
    def encoder_sha256(self) -> str:
        """Hash of the image encoder's weights and normalisation: the embedding cache's key."""
        state = dict(self.sam.image_encoder.state_dict())
        state["pixel_mean"] = self.sam.pixel_mean
        state["pixel_std"] = self.sam.pixel_std
        return tensors_sha256(state)

    def to(self, device: str | torch.device) -> LoadedSam:
        """Move the model to ``device`` in place and return self."""
        self.sam.to(device)
        return self


def freeze(sam: Sam) -> Sam:
    """Freeze the image and prompt encoders; leave only the mask decoder trainable."""
    sam.image_encoder.requires_grad_(False)
    sam.prompt_encoder.requires_grad_(False)
    sam.mask_decoder.requires_grad_(True)
    return sam


def detect_variant(state: Mapping[str, torch.Tensor], source: str = "state dict") -> str:
    """Detect the SAM variant of a state dict from its tensor shapes (never from a file name).

    Raises
    ------
    CheckpointError
        When the state dict is not SAM's, or its encoder matches no known variant.
    """
    if _PATCH_KEY not in state:
        some = ", ".join(sorted(state)[:3]) or "no keys"
        raise CheckpointError(
            f"{source}: not a SAM state dict: expected a key {_PATCH_KEY!r}, found {some} ..."
        )
    embed_dim = int(state[_PATCH_KEY].shape[0])
    patch = int(state[_PATCH_KEY].shape[-1])
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for name, cfg in VARIANTS.items():
        if (cfg.embed_dim, cfg.depth, cfg.patch_size) == (embed_dim, depth, patch):
            return name
    raise CheckpointError(
        f"{source}: image encoder with embed dim {embed_dim}, {depth} blocks and patch {patch} "
        f"matches no SAM variant; expected one of "
        + ", ".join(f"{n} ({c.embed_dim}/{c.depth}/{c.patch_size})" for n, c in VARIANTS.items())
    )


def _unwrap(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """Accept {'model': sd}, {'state_dict': sd} and 'module.'-prefixed keys (MedSAM, DDP)."""
    for _ in range(3):
        if isinstance(obj, Mapping) and _PATCH_KEY not in obj:
            inner = next((obj[k] for k in ("model", "state_dict") if k in obj), None)
            if isinstance(inner, Mapping):
                obj = inner
                continue
        break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a state dict, found {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        state[key.removeprefix("module.")] = value
    return state


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint file not found; pass an official SAM .pth (e.g. "
            "sam_vit_b_01ec64.pth), a MedSAM checkpoint, or a spec such as 'random:tiny'"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused by torch.load(weights_only=True): the file holds Python objects "
            f"other than tensors and plain containers, so it is not loaded for safety ({exc})"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"{path}: truncated or corrupt checkpoint, expected a PyTorch state dict ({exc})"
        ) from exc
    return _unwrap(raw, str(path))


def load_sam(spec: str | Path, *, seed: int = 0) -> LoadedSam:
    """Load a SAM model with frozen encoders and a trainable mask decoder.

    Parameters
    ----------
    spec : str or pathlib.Path
        Path to an official SAM checkpoint (``sam_vit_b_01ec64.pth``, ...) or a MedSAM-style file
        (``{"model": sd}``, ``{"state_dict": sd}``, keys prefixed ``module.``); or
        ``random:vit_b`` / ``random:vit_l`` / ``random:vit_h`` / ``random:tiny`` for seeded random
        weights (tests and demos only: results are not meaningful).
    seed : int
        Seed of the random weights for ``random:`` specs.

    Returns
    -------
    LoadedSam
        The model on the CPU, with its variant and sha256.

    Raises
    ------
    CheckpointError
        Missing, truncated or unsafe file, or a state dict of another architecture.

    Examples
    --------
    >>> loaded = load_sam("random:tiny")
    >>> loaded.variant, loaded.low_res_size
    ('tiny', 256)
    """
    text = str(spec)
    if text.startswith("random:"):
        variant = text.removeprefix("random:")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sam = build_sam(variant)
        message = (
            f"SAM {variant!r} has RANDOM weights (spec {text!r}): results are not meaningful "
            "about SAM; pass a real checkpoint for real work"
        )
        warnings.warn(message, RandomWeightsWarning, stacklevel=2)
        logger.warning(message)
        digest = tensors_sha256(sam.state_dict())
        return LoadedSam(freeze(sam), variant, text, digest, is_random=True)
    path = Path(spec)
    state = _read_checkpoint(path)
    variant = detect_variant(state, str(path))
    sam = build_sam(variant)
    try:
        result = sam.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: tensor shapes do not fit SAM {variant}: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: state dict does not fit SAM {variant}: "
            f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})"
        )
    return LoadedSam(freeze(sam), variant, str(path), file_sha256(path))


def save_decoder_weights(
    sam: Sam, path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write the mask decoder's weights (only those) to a safetensors file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().to("cpu").contiguous() for k, v in sam.mask_decoder.state_dict().items()
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=dict(metadata or {}))
    tmp.replace(path)
    return path


def load_decoder_weights(sam: Sam, path: str | Path) -> None:
    """Load mask decoder weights written by :func:`save_decoder_weights` into ``sam``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: decoder weights not found")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from exc
    try:
        sam.mask_decoder.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit this SAM's mask decoder ({exc})"
        ) from exc
