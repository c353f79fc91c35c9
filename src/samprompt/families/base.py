"""What a model family is: how to build its SAM, how to recognise its checkpoints, how its images
are preprocessed, and which named checkpoints it ships.

A family builds an official ``segment_anything`` :class:`~segment_anything.modeling.Sam` whose
prompt encoder and mask decoder are SAM's own; only the image encoder and the pixel
normalisation differ between families. Everything downstream (the embedding cache, prompt
frames, targets, saved models) reads ``img_size``, ``pixel_mean`` and ``pixel_std`` from the built
model, so a family's preprocessing travels with it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import attrs
import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

__all__ = [
    "PROMPT_DIM",
    "ModelFamily",
    "NamedCheckpoint",
    "Preprocessing",
    "sam_with_encoder",
]

#: Channels of SAM's image embedding, prompt tokens and mask decoder (all official models).
PROMPT_DIM = 256


@attrs.frozen
class Preprocessing:
    """How a family's image encoder wants its input.

    The image (grey repeated to RGB, uint8) is resized with ``segment_anything``'s
    ``ResizeLongestSide`` so its longest side is ``img_size``, normalised as
    ``(x - pixel_mean) / pixel_std`` per channel, and padded bottom/right to a square.

    Attributes
    ----------
    img_size : int
        Side of the square encoder input (1024 for official SAM, 256 for LiteMedSAM).
    pixel_mean, pixel_std : tuple of float
        Per-channel normalisation on the 0-255 scale (``(0, 0, 0)`` and ``(255, 255, 255)``
        scale to [0, 1]).

    Examples
    --------
    >>> Preprocessing(256, (0.0,) * 3, (255.0,) * 3).describe()
    'resize longest side to 256, (x - 0) / 255, pad to 256x256'
    """

    img_size: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]

    def describe(self) -> str:
        """A one-line human description."""
        mean = "/".join(f"{m:g}" for m in dict.fromkeys(self.pixel_mean))
        std = "/".join(f"{s:g}" for s in dict.fromkeys(self.pixel_std))
        return (
            f"resize longest side to {self.img_size}, (x - {mean}) / {std}, "
            f"pad to {self.img_size}x{self.img_size}"
        )


@attrs.frozen
class NamedCheckpoint:
    """A checkpoint a family can load by name, with no path (e.g. ``litemedsam``).

    Attributes
    ----------
    name : str
        The spec users pass to :func:`samprompt.load_sam`.
    locate : callable
        Returns the file's path (e.g. from a package's data); may raise
        :class:`~samprompt.errors.CheckpointError` when the providing package is missing.
    size : int
        Expected size in bytes.
    sha256 : str
        Expected sha256 of the file.
    provider : str
        Who ships the file (shown in errors and docs).
    """

    name: str
    locate: Callable[[], Path]
    size: int
    sha256: str
    provider: str


def sam_with_encoder(
    image_encoder: torch.nn.Module, preprocessing: Preprocessing, embedding_side: int
) -> Sam:
    """An official :class:`Sam` around ``image_encoder`` with SAM's prompt encoder and decoder.

    The prompt encoder and mask decoder have the official hyper-parameters (and so the official
    state-dict keys and shapes) of every released SAM, MedSAM and LiteMedSAM model.
    """
    side = embedding_side
    size = preprocessing.img_size
    sam = Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_DIM,
            image_embedding_size=(side, side),
            input_image_size=(size, size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=PROMPT_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=list(preprocessing.pixel_mean),
        pixel_std=list(preprocessing.pixel_std),
    )
    return sam.eval()


class ModelFamily(abc.ABC):
    """A kind of SAM: builds it, recognises its checkpoints, owns its preprocessing.

    Subclass it and return an instance from the ``samprompt_model_families`` hook (see
    :mod:`samprompt.hookspecs`) to add a family (e.g. MobileSAM's ``vit_t``) without touching
    samprompt.

    Attributes
    ----------
    name : str
        Registry name (``"vit"``, ``"litemedsam"``).
    variants : tuple of str
        Architectures it builds; each is also a ``random:<variant>`` spec. Unique across families.
    zero_shot_multimask : bool
        Whether zero-shot evaluation should use SAM's best-of-three output (official SAM, trained
        with ambiguity-aware outputs) or the single-mask output (MedSAM/LiteMedSAM, trained with
        single-mask box prompts only).
    pretrained_lr : float
        Adam learning rate recommended for fine-tuning this family's *pretrained* decoder.
    """

    name: ClassVar[str]
    variants: ClassVar[tuple[str, ...]]
    zero_shot_multimask: ClassVar[bool] = True
    pretrained_lr: ClassVar[float] = 1e-5

    @abc.abstractmethod
    def preprocessing(self, variant: str) -> Preprocessing:
        """The input size and normalisation of ``variant``."""

    @abc.abstractmethod
    def build(self, variant: str) -> Sam:
        """An untrained (randomly initialised) SAM of ``variant``, in eval mode."""

    @abc.abstractmethod
    def recognise(self, state: Mapping[str, torch.Tensor]) -> str | None:
        """The variant whose tensor shapes ``state`` has, or None when it is not this family's.

        Raise :class:`~samprompt.errors.CheckpointError` (saying what differs) when ``state`` has
        this family's key layout but no variant's shapes; it is shown only when no other family
        recognises the state dict.
        """

    def named_checkpoints(self) -> Sequence[NamedCheckpoint]:
        """Checkpoints loadable by name (none by default)."""
        return ()

    def describe(self) -> str:
        """One line for ``samprompt models``."""
        return ", ".join(self.variants)
