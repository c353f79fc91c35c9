"""Training configuration: a frozen, validated attrs class."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
import torch

from samprompt.errors import ConfigError

__all__ = ["FinetuneConfig", "check_device"]


def _parse_device(value: object) -> torch.device:
    if not isinstance(value, str):
        raise ConfigError(f"device must be a string such as 'cpu' or 'cuda:0', got {value!r}")
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {value!r} is not a torch device (cpu, cuda, cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {value!r}: samprompt runs on cpu or cuda, not {device.type}")
    return device


def check_device(value: object) -> None:
    """Refuse a device this machine does not have, before any work starts.

    Examples
    --------
    >>> check_device("cpu")
    >>> check_device("tpu9")
    Traceback (most recent call last):
    ...
    samprompt.errors.ConfigError: device 'tpu9' is not a torch device (cpu, cuda, cuda:N)
    """
    device = _parse_device(value)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {value!r}: no CUDA GPU is available here (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )


def _finite_number(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{attribute.name} must be a finite number, got {value!r}")


def _integer(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{attribute.name} must be an integer, got {value!r}")


#: Seeds are what numpy's and torch's generators all accept: 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1


def check_seed(value: object, what: str = "seed") -> None:
    """Refuse a seed that is not a whole number from 0 to :data:`MAX_SEED`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{what} must be a whole number from 0 to {MAX_SEED}, got {value!r}")


def _seed(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    check_seed(value, attribute.name)


def _boolean(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{attribute.name} must be true or false, got {value!r}")


def _device(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _parse_device(value)


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    _finite_number(instance, attribute, value)
    if not value > 0:
        raise ConfigError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    _finite_number(instance, attribute, value)
    if value < 0:
        raise ConfigError(f"{attribute.name} must be >= 0, got {value!r}")


def _one_of(*choices: str) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in choices:
            raise ConfigError(f"{attribute.name} must be one of {choices}, got {value!r}")

    return check


def _thresholds(
    instance: object, attribute: attrs.Attribute[Any], value: tuple[float, ...]
) -> None:
    if not value or any(
        isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 < t < 1.0 for t in value
    ):
        raise ConfigError(f"thresholds must be non-empty and inside (0, 1), got {value!r}")


@attrs.frozen
class FinetuneConfig:
    """How the mask decoder is trained (defaults follow Carvalho & Almeida, CIARP 2024).

    Parameters
    ----------
    epochs : int
        Training epochs (100).
    batch_size : int
        Images per step (8).
    lr : float or None
        Adam learning rate. None (default): the model's recommended rate,
        :attr:`samprompt.LoadedSam.recommended_lr`, resolved by the :class:`~samprompt.Finetuner`
        (1e-4 for LiteMedSAM and for random decoders, 1e-5 for pretrained ViT SAM as in the paper;
        the evidence is in the docs' results page).
    weight_decay : float
        Adam weight decay (0, the paper's grid-search choice).
    optimizer : {"adam", "adamw"}
        Optimiser (Adam in the paper).
    loss : {"dice_focal", "dice_ce"}
        MONAI ``DiceFocalLoss`` (the paper) or ``DiceCELoss``, both with sigmoid on logits.
    lambda_dice, lambda_other : float
        Weights of the Dice term and of the focal (or cross-entropy) term (1 and 1).
    seed : int
        Seeds shuffling and training prompts: the same seed gives the same weights on CPU.
    device : str
        ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``).
    precision : {"fp32", "bf16"}
        ``bf16`` autocast for the decoder step.
    checkpoint_every : int
        Write a resumable checkpoint every N epochs (1); 0 disables checkpoints.
    patience : int or None
        Stop when the ``monitor`` metric has not improved for this many epochs; None (default)
        never.
    compare_patience : int or None
        Train every epoch, but also record what ``patience=N`` would have given: the epochs it
        would have run, the decoder it would have kept and that decoder's validation threshold
        (:attr:`samprompt.FitResult.early_stop`). On a CPU this equals the early-stopped run
        exactly (same seed), so its F1 difference from the fixed epochs is measured in one run.
        Needs ``patience=None``; None (default) records nothing.
    keep_best : bool
        Restore the decoder of the best epoch by ``monitor`` at the end (True).
    monitor : {"val_loss", "val_f1"}
        What "best epoch" means for ``keep_best`` and ``patience``: the lowest validation loss
        (default) or the highest validation F1 at threshold 0.5.
    multimask_output : bool
        Train SAM's single-mask output (False, the paper) or its best-of-three output.
    thresholds : tuple of float
        Thresholds swept on validation after training (0.50-0.70, step 0.05).
    eval_resolution : {"low", "original"}
        Resolution of the sweep and of reported metrics ("low": 256x256, the paper).

    Examples
    --------
    >>> config = FinetuneConfig(epochs=30, lr=1e-4)
    >>> config.weight_decay, config.loss, config.thresholds[0]
    (0.0, 'dice_focal', 0.5)
    >>> config.replace(precision="bf16").precision
    'bf16'
    """

    epochs: int = attrs.field(default=100, validator=[_integer, _positive])
    batch_size: int = attrs.field(default=8, validator=[_integer, _positive])
    lr: float | None = attrs.field(default=None, validator=attrs.validators.optional(_positive))
    weight_decay: float = attrs.field(default=0.0, validator=_non_negative)
    optimizer: str = attrs.field(default="adam", validator=_one_of("adam", "adamw"))
    loss: str = attrs.field(default="dice_focal", validator=_one_of("dice_focal", "dice_ce"))
    lambda_dice: float = attrs.field(default=1.0, validator=_non_negative)
    lambda_other: float = attrs.field(default=1.0, validator=_non_negative)
    seed: int = attrs.field(default=0, validator=_seed)
    device: str = attrs.field(default="cpu", validator=_device)
    precision: str = attrs.field(default="fp32", validator=_one_of("fp32", "bf16"))
    checkpoint_every: int = attrs.field(default=1, validator=[_integer, _non_negative])
    patience: int | None = attrs.field(default=None, validator=attrs.validators.optional(_integer))
    compare_patience: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_integer)
    )
    keep_best: bool = attrs.field(default=True, validator=_boolean)
    monitor: str = attrs.field(default="val_loss", validator=_one_of("val_loss", "val_f1"))
    multimask_output: bool = attrs.field(default=False, validator=_boolean)
    thresholds: tuple[float, ...] = attrs.field(
        default=(0.5, 0.55, 0.6, 0.65, 0.7), converter=tuple, validator=_thresholds
    )
    eval_resolution: str = attrs.field(default="low", validator=_one_of("low", "original"))

    def __attrs_post_init__(self) -> None:
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be >= 1 or None, got {self.patience}")
        if self.compare_patience is not None:
            if self.compare_patience < 1:
                raise ConfigError(
                    f"compare_patience must be >= 1 or None, got {self.compare_patience}"
                )
            if self.patience is not None:
                raise ConfigError(
                    "compare_patience records what early stopping would give in a run that trains "
                    f"every epoch; it cannot be combined with patience={self.patience}"
                )
        if self.lambda_dice == 0 and self.lambda_other == 0:
            raise ConfigError("lambda_dice and lambda_other cannot both be 0")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        data = attrs.asdict(self)
        data["thresholds"] = list(self.thresholds)
        if self.compare_patience is None:
            # Left out when off, so run folders written before the option existed still match.
            del data["compare_patience"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in attrs.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown config keys: {sorted(unknown)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> FinetuneConfig:
        """A copy with some fields changed (validated again)."""
        return attrs.evolve(self, **changes)
