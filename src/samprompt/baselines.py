"""Baselines every SAM result is read against: a MONAI U-Net trained from scratch (the mean-mask
prior lives in :mod:`samprompt.segmenter`).

The U-Net sees the same frame as SAM's decoder: the grey image resized so its longest side is
256 and padded to 256x256, trained with the same loss, scored by the same evaluator.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from PIL import Image
from safetensors.torch import load_file

from samprompt._version import source_version
from samprompt.atomic import save_safetensors_atomic, write_json_atomic
from samprompt.config import FinetuneConfig, check_seed
from samprompt.data.sample import Dataset, Sample, as_dataset
from samprompt.errors import CheckpointError, ConfigError
from samprompt.evaluate import DEFAULT_THRESHOLDS, Evaluator, SweepResult
from samprompt.frames import LOW_RES, check_resolution, low_res_target, valid_shape
from samprompt.hashing import file_sha256
from samprompt.runs import RunFolder
from samprompt.saved import FORMAT, FORMAT_VERSION, check_weights_hash, read_model_json
from samprompt.training.loop import EpochHandler, checkpoint_every, run_epochs, track_best
from samprompt.training.records import EpochRecord, loss_function
from samprompt.training.state import RunState
from samprompt.training.unet_step import UNetStep

__all__ = ["UNetConfig", "UNetFit", "UNetSegmenter", "load_unet_model", "train_unet"]


@attrs.frozen
class UNetConfig:
    """Settings of the U-Net baseline (MONAI ``UNet``, 2D; grey or RGB input).

    Parameters
    ----------
    epochs : int
        Training epochs (30).
    batch_size : int
        Images per step (8).
    lr : float
        Adam learning rate (1e-3).
    channels : tuple of int
        Feature channels per level (16, 32, 64, 128, 256), strides 2.
    num_res_units : int
        Residual units per level (2).
    seed : int
        Seeds initialisation and shuffling.
    device : str
        ``"cpu"`` or ``"cuda"``.
    thresholds : tuple of float
        Thresholds swept on validation.
    in_channels : int or None
        1 (grey) or 3 (RGB); None: from the training images (3 when any is RGB, grey images
        then repeated), as :func:`train_unet` resolves it.
    """

    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    channels: tuple[int, ...] = attrs.field(default=(16, 32, 64, 128, 256), converter=tuple)
    num_res_units: int = 2
    seed: int = 0
    device: str = "cpu"
    thresholds: tuple[float, ...] = attrs.field(default=DEFAULT_THRESHOLDS, converter=tuple)
    in_channels: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.in_channels not in (None, 1, 3):
            raise ConfigError(f"in_channels must be 1, 3 or None, got {self.in_channels!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or len(self.channels) < 2:
            raise ConfigError(f"invalid U-Net config: {self}")
        check_seed(self.seed)

    def build(self) -> UNet:
        """A freshly initialised network."""
        return UNet(
            spatial_dims=2,
            in_channels=self.in_channels or 1,
            out_channels=1,
            channels=self.channels,
            strides=(2,) * (len(self.channels) - 1),
            num_res_units=self.num_res_units,
        )


def _input(image: np.ndarray, channels: int) -> np.ndarray:
    """``(channels, LOW_RES, LOW_RES)`` float32 in [0, 1]: grey (1) or RGB (3, grey repeated),
    longest side resized to LOW_RES, padded bottom/right."""
    pil = Image.fromarray(image)
    pil = pil.convert("L") if channels == 1 else pil.convert("RGB")
    h, w = valid_shape(image.shape[0], image.shape[1], LOW_RES)
    small = np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR), np.float32) / 255.0
    out = np.zeros((channels, LOW_RES, LOW_RES), np.float32)
    out[:, :h, :w] = small.reshape(h, w, -1).transpose(2, 0, 1)
    return out


def _tensors(data: Dataset, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.stack([_input(s.image, channels) for s in data])
    masks = np.stack([low_res_target(s.require_mask(), LOW_RES) for s in data])[:, None]
    return torch.from_numpy(images), torch.from_numpy(masks).float()


class UNetSegmenter:
    """A trained U-Net as a :class:`~samprompt.segmenter.Segmenter`."""

    name = "unet"

    def __init__(self, net: UNet, config: UNetConfig, threshold: float = 0.5) -> None:
        self.net = net.eval()
        self.config = config
        self.threshold = threshold

    def predict_proba(self, samples: Dataset, *, resolution: str = "low") -> Iterator[np.ndarray]:
        """Probabilities in the low-res frame (cropped) or at each image's size."""
        check_resolution(resolution)
        dataset = as_dataset(samples)
        device = self.config.device
        self.net.to(device)
        for start in range(0, len(dataset), self.config.batch_size):
            batch = [
                dataset[i] for i in range(start, min(start + self.config.batch_size, len(dataset)))
            ]
            channels = self.config.in_channels or 1
            x = torch.from_numpy(np.stack([_input(s.image, channels) for s in batch])).to(device)
            with torch.inference_mode():
                logits = self.net(x).float().cpu()
            for sample, item in zip(batch, logits, strict=True):
                h, w = valid_shape(*sample.size, LOW_RES)
                crop = item[:, :h, :w]
                if resolution == "original":
                    crop = F.interpolate(
                        crop[None], sample.size, mode="bilinear", align_corners=False
                    )[0]
                yield torch.sigmoid(crop[0]).numpy()

    def save(self, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``unet.safetensors`` and ``model.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_safetensors_atomic(folder / "unet.safetensors", self.net.state_dict())
        config = attrs.asdict(self.config)
        write_json_atomic(
            folder / "model.json",
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "kind": "unet",
                "samprompt_version": source_version(),
                "weights_sha256": file_sha256(folder / "unet.safetensors"),
                "threshold": self.threshold,
                "config": config,
                **(extra or {}),
            },
        )
        return folder


@attrs.frozen(eq=False)
class UNetFit:
    """What :func:`train_unet` returns: the model (threshold chosen on validation), its history
    and the validation sweep."""

    model: UNetSegmenter
    history: tuple[EpochRecord, ...]
    sweep: SweepResult


def train_unet(
    train: Dataset | Sequence[Sample],
    val: Dataset | Sequence[Sample],
    config: UNetConfig | None = None,
    *,
    out_dir: str | Path | RunFolder | None = None,
    progress: bool = True,
) -> UNetFit:
    """Train the U-Net from scratch with MONAI ``DiceFocalLoss`` in the loop SAM's decoder trains
    in (:mod:`samprompt.training`); keep the epoch with the lowest validation loss; pick the
    threshold on validation. With ``out_dir``, write the model folder there.

    A claimed :class:`~samprompt.runs.RunFolder` (a protocol's fold) also keeps a checkpoint
    after every epoch and continues from the one it holds, so an interrupted fold loses only the
    epoch in progress (on CPU the resumed run ends with the weights of an uninterrupted one); the
    caller's :meth:`~samprompt.runs.RunFolder.finish` drops it."""
    config = config or UNetConfig()
    train_ds, val_ds = as_dataset(train), as_dataset(val)
    if config.in_channels is None:
        colour = any(s.image.ndim == 3 for s in train_ds)
        config = attrs.evolve(config, in_channels=3 if colour else 1)
    torch.manual_seed(config.seed)
    net = config.build().to(config.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    step = UNetStep(
        net,
        _tensors(train_ds, config.in_channels or 1),
        _tensors(val_ds, config.in_channels or 1),
        optimizer,
        loss_function(FinetuneConfig()),
        batch_size=config.batch_size,
        seed=config.seed,
        device=config.device,
        lr=config.lr,
    )
    folder = out_dir if isinstance(out_dir, RunFolder) else None
    state = run_epochs(
        step,
        _initial_state(net, optimizer, folder),
        epochs=config.epochs,
        handlers=_handlers(folder, config.epochs),
        desc="U-Net",
        progress=progress,
    )
    net.load_state_dict(state.best_weights)
    model = UNetSegmenter(net, config)
    sweep = Evaluator("low", config.thresholds).threshold_sweep(model, val_ds)
    model.threshold = sweep.best_threshold
    if out_dir is not None:
        history = [attrs.asdict(r) for r in state.history]
        root = out_dir.root if isinstance(out_dir, RunFolder) else out_dir
        model.save(root, {"history": history, "sweep": sweep.rows()})
    return UNetFit(model, tuple(state.history), sweep)


def _initial_state(
    net: UNet, optimizer: torch.optim.Optimizer, folder: RunFolder | None
) -> RunState:
    """A fresh state, or the one ``folder``'s checkpoint holds (refused if another run's)."""
    if folder is None:
        return RunState(net, optimizer)
    checkpoint = folder.load_checkpoint(folder.identity)
    if checkpoint is None:
        return RunState(net, optimizer, folder.identity)
    return RunState.from_checkpoint(checkpoint, net, optimizer)


def _handlers(folder: RunFolder | None, epochs: int) -> list[EpochHandler]:
    """Best epoch by validation loss; with a run folder, a checkpoint after every epoch."""
    handlers = [track_best("val_loss")]
    if folder is not None:
        handlers.append(
            checkpoint_every(1, epochs, lambda s: folder.save_checkpoint(s.to_checkpoint()))
        )
    return handlers


def load_unet_model(folder: str | Path, *, device: str = "cpu") -> UNetSegmenter:
    """Load a U-Net model folder written by :meth:`UNetSegmenter.save`."""
    folder = Path(folder)
    meta = read_model_json(folder)
    if meta.get("kind") != "unet":
        raise CheckpointError(f"{folder}: holds a {meta.get('kind')!r} model, not a U-Net")
    try:
        config = UNetConfig(**{**meta["config"], "device": device})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / 'model.json'}: invalid U-Net config ({exc})") from exc
    check_weights_hash(folder, meta, folder / "unet.safetensors")
    net = config.build()
    try:
        net.load_state_dict(load_file(str(folder / "unet.safetensors")))
    except Exception as exc:
        raise CheckpointError(
            f"{folder / 'unet.safetensors'}: cannot load U-Net weights ({exc})"
        ) from exc
    return UNetSegmenter(net.to(device), config, float(meta["threshold"]))
