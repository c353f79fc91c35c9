from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samprompt import Evaluator, MeanMaskPrior
from samprompt.baselines import UNetConfig, load_unet_model, train_unet
from samprompt.cli import main
from samprompt.data import make_phantoms, write_folder_dataset
from samprompt.errors import CheckpointError
from samprompt.runs import CHECKPOINT, RunFolder
from samprompt.training.unet_step import UNetStep


def test_unet_learns_phantoms_and_round_trips(tmp_path: Path) -> None:
    data = make_phantoms(24, 64, seed=12)
    train, val, test = data[:16], data[16:20], data[20:]
    fitted = train_unet(
        train, val, UNetConfig(epochs=6, batch_size=4), out_dir=tmp_path / "unet", progress=False
    )
    model, history = fitted.model, fitted.history
    assert history[-1].train_loss < history[0].train_loss
    evaluator = Evaluator()
    unet_f1 = evaluator.evaluate(model, test).f1_mean
    prior_f1 = evaluator.evaluate(MeanMaskPrior().fit(train), test).f1_mean
    print(f"U-Net phantom F1 {unet_f1:.3f} vs prior {prior_f1:.3f}")
    assert unet_f1 > prior_f1
    loaded = load_unet_model(tmp_path / "unet")
    assert loaded.threshold == model.threshold
    for a, b in zip(model.predict_proba(test), loaded.predict_proba(test), strict=True):
        np.testing.assert_array_equal(a, b)


def test_baseline_cli_model_works_with_evaluate_and_predict(tmp_path: Path) -> None:
    data = write_folder_dataset(make_phantoms(10, (48, 72), seed=13), tmp_path / "data")
    assert (
        main(
            [
                "baseline",
                "unet",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "m"),
                "--epochs",
                "1",
                "-q",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "m" / "model.json").read_text())["kind"] == "unet"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tmp_path / "m"),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "e"),
                "-q",
            ]
        )
        == 0
    )
    assert len(json.loads((tmp_path / "e" / "metrics.json").read_text())["per_image"]) == 10
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "m"),
                "--images",
                str(data / "images"),
                "--out",
                str(tmp_path / "p"),
                "-q",
            ]
        )
        == 0
    )
    mask = np.asarray(Image.open(next((tmp_path / "p").glob("*.png"))))
    assert mask.shape == (48, 72)


def test_unet_keeps_colour_images_in_colour(tmp_path: Path) -> None:
    """RGB images train a 3-channel U-Net (a target seen only in colour stays visible); grey
    images keep one channel; the channel count is saved and restored."""
    from samprompt.data import Sample

    rng = np.random.default_rng(0)
    samples = []
    for n in range(10):
        image = np.zeros((48, 48, 3), np.uint8)
        image[...] = (100, 100, 100)
        mask = np.zeros((48, 48), bool)
        y, x = rng.integers(8, 30, 2)
        mask[y : y + 12, x : x + 12] = True
        image[mask] = (200, 50, 100)  # about the same grey level as the background
        samples.append(Sample(f"c{n}", image, mask))
    fitted = train_unet(
        samples[:6], samples[6:8], UNetConfig(epochs=1, channels=(4, 8)), out_dir=tmp_path / "u"
    )
    assert fitted.model.config.in_channels == 3
    first = next(p for p in fitted.model.net.parameters() if p.ndim == 4)
    assert first.shape[1] == 3
    loaded = load_unet_model(tmp_path / "u")
    assert loaded.config.in_channels == 3
    for a, b in zip(
        fitted.model.predict_proba(samples[8:]), loaded.predict_proba(samples[8:]), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    grey = [Sample(s.id, s.image[..., 0], s.mask) for s in samples]
    assert (
        train_unet(
            grey[:6], grey[6:8], UNetConfig(epochs=1, channels=(4, 8))
        ).model.config.in_channels
        == 1
    )


def test_unet_fold_resumes_after_the_last_finished_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A U-Net in a run folder killed in its third epoch trains only that epoch again, and ends
    with the weights, history and threshold of an uninterrupted run."""
    data = make_phantoms(10, 48, seed=21)
    config = UNetConfig(epochs=3, batch_size=4)
    identity = {"test": "unet resume"}
    with RunFolder.claim(tmp_path / "whole", identity) as folder:
        whole = train_unet(data[:6], data[6:], config, out_dir=folder, progress=False)

    trained: list[int] = []
    original = UNetStep.train_epoch

    def counting(self: UNetStep, epoch: int) -> float:
        trained.append(epoch)
        if epoch == 2 and len(trained) == 3:
            raise KeyboardInterrupt  # killed during the third epoch
        return original(self, epoch)

    monkeypatch.setattr(UNetStep, "train_epoch", counting)
    with pytest.raises(KeyboardInterrupt), RunFolder.claim(tmp_path / "parts", identity) as folder:
        train_unet(data[:6], data[6:], config, out_dir=folder, progress=False)
    assert (tmp_path / "parts" / CHECKPOINT).is_file()
    with RunFolder.claim(tmp_path / "parts", identity) as folder:
        resumed = train_unet(data[:6], data[6:], config, out_dir=folder, progress=False)
    assert trained == [0, 1, 2, 2]  # the resumed call trained the third epoch only
    assert [r.val_loss for r in resumed.history] == [r.val_loss for r in whole.history]
    assert resumed.model.threshold == whole.model.threshold
    for name, tensor in whole.model.net.state_dict().items():
        assert torch.equal(resumed.model.net.state_dict()[name], tensor), name
    with pytest.raises(CheckpointError, match="another run"):
        RunFolder(tmp_path / "parts", {"test": "other"}, "same").load_checkpoint({"test": "x"})
