from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from samprompt import (
    CheckpointMismatchError,
    ConfigError,
    EmbeddingCache,
    Evaluator,
    FinetuneConfig,
    Finetuner,
    LoadedSam,
    MeanMaskPrior,
    get_strategy,
)
from samprompt.data import make_phantoms, write_folder_dataset
from samprompt.model import build_sam
from tests.conftest import count_encoder_calls


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="lr must be > 0"):
        FinetuneConfig(lr=0)
    with pytest.raises(ConfigError, match="loss must be one of"):
        FinetuneConfig(loss="mse")
    with pytest.raises(ConfigError, match="thresholds"):
        FinetuneConfig(thresholds=(0.5, 1.5))
    config = FinetuneConfig(epochs=3)
    assert FinetuneConfig.from_dict(config.to_dict()) == config


def test_only_the_decoder_changes_and_each_image_is_encoded_once(
    tiny: LoadedSam, cache: EmbeddingCache
) -> None:
    data = make_phantoms(8, 64, seed=1)
    train, val = data[:6], data[6:]
    calls = count_encoder_calls(tiny)
    encoder, prompt_encoder = _snapshot(tiny.sam.image_encoder), _snapshot(tiny.sam.prompt_encoder)
    decoder = _snapshot(tiny.sam.mask_decoder)
    config = FinetuneConfig(epochs=2, batch_size=6, lr=1e-3, thresholds=(0.5,))
    Finetuner(tiny, get_strategy("perturbed-box"), config, cache=cache, progress=False).fit(
        train, val
    )
    Finetuner(tiny, get_strategy("mean-points"), config, cache=cache, progress=False).fit(
        train, val
    )
    assert calls[0] == 8  # 2 runs x 2 epochs, still one encoder pass per distinct image
    for name, value in tiny.sam.image_encoder.state_dict().items():
        assert torch.equal(value, encoder[name]), name
    for name, value in tiny.sam.prompt_encoder.state_dict().items():
        assert torch.equal(value, prompt_encoder[name]), name
    changed = [
        n for n, v in tiny.sam.mask_decoder.state_dict().items() if not torch.equal(v, decoder[n])
    ]
    assert "transformer.layers.0.self_attn.q_proj.weight" in changed


def test_loss_decreases_and_model_beats_mean_mask_prior(
    tiny: LoadedSam, cache: EmbeddingCache
) -> None:
    data = make_phantoms(20, 64, seed=2)
    train, val, test = data[:12], data[12:16], data[16:]
    config = FinetuneConfig(epochs=8, batch_size=4, lr=1e-3)
    result = Finetuner(tiny, get_strategy("mean-points"), config, cache=cache, progress=False).fit(
        train, val
    )
    print("phantom test F1 after", [round(r.val_f1, 3) for r in result.history])
    assert result.history[-1].train_loss < 0.6 * result.history[0].train_loss
    evaluator = Evaluator()
    model_f1 = evaluator.evaluate(result.segmenter, test).f1_mean
    prior_f1 = evaluator.evaluate(MeanMaskPrior().fit(train), test).f1_mean
    print(f"phantom test F1 {model_f1:.3f} vs mean-mask prior {prior_f1:.3f}")
    assert model_f1 > prior_f1 + 0.05, (model_f1, prior_f1)
    assert result.threshold in config.thresholds
    assert (
        result.sweep.best_threshold
        == max(result.sweep.results, key=lambda r: (r.f1_mean, -r.threshold)).threshold
    )


def test_saved_model_reloads_and_refuses_another_base(
    tiny: LoadedSam, cache: EmbeddingCache, tmp_path: Path
) -> None:
    data = make_phantoms(8, 64, seed=4)
    config = FinetuneConfig(epochs=1, batch_size=6, lr=1e-3)
    out = tmp_path / "run"
    result = Finetuner(
        tiny, get_strategy("mean-points"), config, cache=cache, out_dir=out, progress=False
    ).fit(data[:6], data[6:])
    # a finished run keeps its model and record, not the resumable optimizer state
    assert {p.name for p in out.iterdir()} == {
        "decoder.safetensors",
        "model.json",
        "history.json",
        "run.json",
        "finished.json",
    }
    assert all(
        (out / name).stat().st_mode & 0o044 for name in ("decoder.safetensors", "model.json")
    )
    loaded = Finetuner.load(out, cache=cache)
    assert loaded.threshold == result.threshold
    before = list(result.segmenter.predict_proba(data[6:]))
    after = list(loaded.predict_proba(data[6:]))
    for a, b in zip(before, after, strict=True):
        assert (a == b).all()
    torch.manual_seed(7)
    other = tmp_path / "other.pth"
    torch.save(build_sam("tiny").state_dict(), other)
    with pytest.raises(CheckpointMismatchError, match="trained on base checkpoint random:tiny"):
        Finetuner.load(out, other, cache=cache)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "samprompt.cli", *args]


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_weights(tmp_path: Path) -> None:
    # All three runs are fresh processes with one environment, so that nothing this test process
    # did before (thread pools, kernels already chosen) can tell the runs apart.
    data = write_folder_dataset(make_phantoms(10, 64, seed=5), tmp_path / "data")
    common = [
        "finetune",
        "--data",
        str(data),
        "--checkpoint",
        "random:tiny",
        "--cache",
        str(tmp_path / "cache"),
        "--epochs",
        "4",
        "--batch-size",
        "6",
        "--lr",
        "1e-3",
        "-q",
    ]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    uninterrupted = subprocess.run(_cli(*common, "--out", str(tmp_path / "a")), **quiet)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    run_b = tmp_path / "b"
    process = subprocess.Popen(
        _cli(*common, "--out", str(run_b)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (run_b / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run_b / "model.json").exists(), "the run finished before it was killed"
    epoch = torch.load(run_b / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= epoch < 4
    resumed = subprocess.run(_cli(*common, "--out", str(run_b), "--resume"), **quiet)
    assert resumed.returncode == 0, resumed.stderr
    a, b = (
        load_file(tmp_path / "a" / "decoder.safetensors"),
        load_file(run_b / "decoder.safetensors"),
    )
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_random_spec_default_lr_is_larger(tiny: LoadedSam) -> None:
    from samprompt.cli import build_parser
    from samprompt.commands import _config

    args = build_parser().parse_args(
        ["finetune", "--data", "d", "--checkpoint", "random:tiny", "--out", "o"]
    )
    config = _config(args)
    assert config.lr is None  # resolved from the model, which the CLI loads after the config
    tuner = Finetuner(tiny, get_strategy("mean-points"), config, progress=False)
    assert tuner.config.lr == tiny.recommended_lr == 1e-4
