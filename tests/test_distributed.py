from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from samprompt import EmbeddingCache, LoadedSam
from samprompt.cli import main
from samprompt.data import make_phantoms, write_folder_dataset
from tests.conftest import count_encoder_calls


def _torchrun(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "samprompt.cli",
        *args,
    ]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1")


@pytest.mark.slow
@pytest.mark.parametrize("prompt", ["mean-points", "learned"])
def test_two_process_gloo_finetune_matches_single_process(tmp_path: Path, prompt: str) -> None:
    data = write_folder_dataset(make_phantoms(12, 64, seed=21), tmp_path / "data")
    cache = tmp_path / "cache"
    # 12 images -> 8 train (two global batches of 5 and 3, split 3/2 and 2/1 between ranks).
    # The two ranks fill the empty cache between them (sharded embedding) before training.
    common = [
        "finetune",
        "--data",
        str(data),
        "--checkpoint",
        "random:tiny",
        "--cache",
        str(cache),
        "--epochs",
        "2",
        "--batch-size",
        "5",
        "--lr",
        "1e-3",
        "--prompt",
        prompt,
        "-q",
    ]
    multi = subprocess.run(
        _torchrun(*common, "--out", str(tmp_path / "ddp")),
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0  # one process, this one
    a, b = (
        load_file(tmp_path / "one" / "decoder.safetensors"),
        load_file(tmp_path / "ddp" / "decoder.safetensors"),
    )
    # Adam turns float-order differences of near-zero gradients into steps of up to ~lr * 0.1;
    # the learned prompt's extra parameters make more of them (unsynchronised ranks differ by
    # whole steps, ~1e-3 here)
    atol = 1e-5 if prompt == "mean-points" else 3e-4
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=atol, msg=name)
    if prompt == "learned":  # the prompt's tokens trained in both, and agree
        one, ddp = (load_file(tmp_path / d / "prompt.safetensors") for d in ("one", "ddp"))
        assert set(one) == set(ddp) and one
        for name in one:
            torch.testing.assert_close(ddp[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    history_a = json.loads((tmp_path / "one" / "history.json").read_text())
    history_b = json.loads((tmp_path / "ddp" / "history.json").read_text())
    for ra, rb in zip(history_a, history_b, strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=1e-4)


def test_ranks_share_the_embedding_work_and_each_image_is_encoded_once(
    tmp_path: Path, tiny: LoadedSam
) -> None:
    data = make_phantoms(7, 64, seed=22)
    calls = count_encoder_calls(tiny)
    done = []
    for rank in (0, 1):  # what each torchrun rank runs, one after the other
        cache = EmbeddingCache(tmp_path / "cache", progress=False)
        cache.embed(tiny, data, rank=rank, world_size=2)
        done.append(cache.stats.encoder_calls)
    assert done == [4, 3] and calls[0] == 7  # positions 0,2,4,6 and 1,3,5
    everything = EmbeddingCache(tmp_path / "cache", progress=False)
    everything.embed(tiny, data)
    assert everything.stats.encoder_calls == 0 and calls[0] == 7
