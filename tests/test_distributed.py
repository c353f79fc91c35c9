from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from samprompt.data import make_phantoms, write_folder_dataset


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
def test_two_process_gloo_finetune_matches_single_process(tmp_path: Path) -> None:
    data = write_folder_dataset(make_phantoms(12, 64, seed=21), tmp_path / "data")
    cache = tmp_path / "cache"
    # 12 images -> 8 train (two global batches of 5 and 3, split 3/2 and 2/1 between ranks).
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
        "-q",
    ]
    embed = subprocess.run(
        _torchrun(
            "embed", "--data", str(data), "--checkpoint", "random:tiny", "--cache", str(cache), "-q"
        ),
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert embed.returncode == 0, embed.stderr[-3000:]
    computed = [
        int(n)
        for n in re.findall(r"rank \d/2: 12 images: \d+ cached, (\d+) computed", embed.stdout)
    ]
    assert len(computed) == 2 and sum(computed) == 12  # every image computed once, by one rank
    multi = subprocess.run(
        _torchrun(*common, "--out", str(tmp_path / "ddp")),
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, "-m", "samprompt.cli", *common, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = (
        load_file(tmp_path / "one" / "decoder.safetensors"),
        load_file(tmp_path / "ddp" / "decoder.safetensors"),
    )
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
    history_a = json.loads((tmp_path / "one" / "history.json").read_text())
    history_b = json.loads((tmp_path / "ddp" / "history.json").read_text())
    for ra, rb in zip(history_a, history_b, strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=1e-4)
