"""Baselines every SAM result is read against: a MONAI U-Net trained from scratch (the mean-mask
prior lives in :mod:`samprompt.segmenter`).

The U-Net sees the same frame as SAM's decoder: the grey image resized so its longest side is
256 and padded to 256x256, trained with the same loss, scored by the same evaluator.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from samprompt import __version__
from samprompt.atomic import mark_permissions, write_json_atomic
from samprompt.config import FinetuneConfig
from samprompt.data.preprocess import low_res_target, valid_shape
from samprompt.data.sample import Dataset, as_dataset
from samprompt.errors import CheckpointError, ConfigError
from samprompt.evaluate import DEFAULT_THRESHOLDS, Evaluator
from samprompt.finetune import EpochRecord, loss_function
from samprompt.hashing import file_sha256
from samprompt.saved import FORMAT, FORMAT_VERSION, check_weights_hash, read_model_json

__all__ = ["UNetConfig", "UNetSegmenter", "load_unet_model", "train_unet"]

SIDE = 256


@attrs.frozen
class UNetConfig:
    """Settings of the U-Net baseline (MONAI ``UNet``, 2D, one grey input channel).

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
    """

    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    channels: tuple[int, ...] = attrs.field(default=(16, 32, 64, 128, 256), converter=tuple)
    num_res_units: int = 2
    seed: int = 0
    device: str = "cpu"
    thresholds: tuple[float, ...] = attrs.field(default=DEFAULT_THRESHOLDS, converter=tuple)

    def __attrs_post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or len(self.channels) < 2:
            raise ConfigError(f"invalid U-Net config: {self}")

    def build(self) -> UNet:
        """A freshly initialised network."""
        return UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            channels=self.channels,
            strides=(2,) * (len(self.channels) - 1),
            num_res_units=self.num_res_units,
        )


def _grey_input(image: np.ndarray) -> np.ndarray:
    """``(SIDE, SIDE)`` float32 in [0, 1]: longest side resized to SIDE, padded bottom/right."""
    grey = image if image.ndim == 2 else np.asarray(Image.fromarray(image).convert("L"))
    h, w = valid_shape(grey.shape[0], grey.shape[1], SIDE)
    small = (
        np.asarray(Image.fromarray(grey).resize((w, h), Image.Resampling.BILINEAR), np.float32)
        / 255.0
    )
    out = np.zeros((SIDE, SIDE), np.float32)
    out[:h, :w] = small
    return out


def _tensors(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.stack([_grey_input(s.image) for s in data])[:, None]
    masks = np.stack([low_res_target(s.require_mask(), SIDE) for s in data])[:, None]
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
        if resolution not in ("low", "original"):
            raise ConfigError(f"resolution must be 'low' or 'original', got {resolution!r}")
        dataset = as_dataset(samples)
        device = self.config.device
        self.net.to(device)
        for start in range(0, len(dataset), self.config.batch_size):
            batch = [
                dataset[i] for i in range(start, min(start + self.config.batch_size, len(dataset)))
            ]
            x = torch.from_numpy(np.stack([_grey_input(s.image) for s in batch])[:, None]).to(
                device
            )
            with torch.inference_mode():
                logits = self.net(x).float().cpu()
            for sample, item in zip(batch, logits, strict=True):
                h, w = valid_shape(*sample.size, SIDE)
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
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        tmp = folder / "unet.safetensors.tmp"
        save_file(tensors, str(tmp))
        mark_permissions(tmp)
        tmp.replace(folder / "unet.safetensors")
        config = attrs.asdict(self.config)
        write_json_atomic(
            folder / "model.json",
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "kind": "unet",
                "samprompt_version": __version__,
                "weights_sha256": file_sha256(folder / "unet.safetensors"),
                "threshold": self.threshold,
                "config": config,
                **(extra or {}),
            },
        )
        return folder


def train_unet(
    train: Dataset | Sequence[Any],
    val: Dataset | Sequence[Any],
    config: UNetConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[UNetSegmenter, list[EpochRecord]]:
    """Train the U-Net from scratch with MONAI ``DiceFocalLoss``; keep the epoch with the lowest
    validation loss; pick the threshold on validation. Returns the model and its history."""
    config = config or UNetConfig()
    train_ds, val_ds = as_dataset(train), as_dataset(val)
    torch.manual_seed(config.seed)
    net = config.build().to(config.device)
    x_train, y_train = _tensors(train_ds)
    x_val, y_val = _tensors(val_ds)
    loss_fn = loss_function(FinetuneConfig())
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    history: list[EpochRecord] = []
    best = (float("inf"), copy.deepcopy(net.state_dict()))
    bar = tqdm(range(config.epochs), desc="U-Net", unit="epoch", disable=not progress)
    for epoch in bar:
        tick = time.perf_counter()
        net.train()
        order = torch.randperm(
            len(x_train), generator=torch.Generator().manual_seed(config.seed * 100003 + epoch)
        )
        losses = []
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            loss = loss_fn(net(x_train[idx].to(config.device)), y_train[idx].to(config.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()) * len(idx))
        net.eval()
        with torch.inference_mode():
            val_logits = torch.cat(
                [net(x_val[i : i + 16].to(config.device)).cpu() for i in range(0, len(x_val), 16)]
            )
            val_loss = float(loss_fn(val_logits, y_val))
            inter = ((val_logits > 0) & (y_val > 0)).flatten(1).sum(1).float()
            denom = ((val_logits > 0).flatten(1).sum(1) + (y_val > 0).flatten(1).sum(1)).float()
            val_f1 = float(
                torch.where(
                    denom > 0, 2 * inter / denom.clamp(min=1), torch.ones_like(denom)
                ).mean()
            )
        record = EpochRecord(
            epoch + 1, sum(losses) / len(x_train), val_loss, val_f1, time.perf_counter() - tick
        )
        history.append(record)
        bar.set_postfix(train=f"{record.train_loss:.4f}", val=f"{val_loss:.4f}", f1=f"{val_f1:.3f}")
        if val_loss < best[0]:
            best = (val_loss, copy.deepcopy(net.state_dict()))
    net.load_state_dict(best[1])
    model = UNetSegmenter(net, config)
    sweep = Evaluator("low", config.thresholds).threshold_sweep(model, val_ds)
    model.threshold = sweep.best_threshold
    if out_dir is not None:
        model.save(out_dir, {"history": [attrs.asdict(r) for r in history], "sweep": sweep.rows()})
    return model, history


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
