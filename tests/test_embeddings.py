from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from samprompt import EmbeddingCache, LoadedSam, load_sam
from samprompt.cli import main
from samprompt.data import SampleList, make_phantoms, preprocess_image, write_folder_dataset
from samprompt.errors import ConfigError
from tests.conftest import count_encoder_calls


def test_cache_matches_fresh_encoder_and_second_pass_encodes_nothing(
    tiny: LoadedSam, phantoms: SampleList, cache: EmbeddingCache
) -> None:
    data = phantoms[:4]
    calls = count_encoder_calls(tiny)
    index = cache.embed(tiny, data)
    assert calls[0] == 4 and cache.stats.misses == 4 and cache.stats.hits == 0
    with torch.inference_mode():
        fresh = tiny.sam.image_encoder(preprocess_image(tiny.sam, data[2].image)[0])
    calls[0] = 0
    cached = index.load([2])
    assert cached.shape == fresh.shape == (1, 256, 64, 64)
    torch.testing.assert_close(cached, fresh.half().float(), rtol=0, atol=0)
    assert torch.allclose(cached, fresh, atol=2e-3 * fresh.abs().max().item())
    again = EmbeddingCache(cache.root, progress=False)
    index2 = again.embed(tiny, data)
    assert calls[0] == 0 and again.stats.hits == 4 and again.stats.misses == 0
    assert index2.paths == index.paths


def test_resident_index_loads_what_the_files_hold(
    tiny: LoadedSam, phantoms: SampleList, cache: EmbeddingCache
) -> None:
    index = cache.embed(tiny, phantoms[:5])
    resident = index.to_resident("cpu")
    assert resident.resident is not None and resident.resident.dtype == torch.float16
    assert resident.nbytes() == 5 * 256 * 64 * 64 * 2
    for positions in ([3], [4, 0, 2], [1, 1]):
        assert torch.equal(resident.load(positions), index.load(positions))
    assert index.to_resident("cpu", limit=resident.nbytes() - 1).resident is None  # too large


def test_key_changes_with_encoder_weights_and_image(tiny: LoadedSam, cache: EmbeddingCache) -> None:
    from samprompt import load_sam

    other = load_sam("random:tiny", seed=5)
    image = make_phantoms(1, 64)[0].image
    assert cache.entry_path(tiny, image) != cache.entry_path(other, image)
    changed = image.copy()
    changed[0, 0] ^= 1
    assert cache.entry_path(tiny, image) != cache.entry_path(tiny, changed)


def test_bf16_cache_is_close_to_fp32(tiny: LoadedSam, phantoms: SampleList, tmp_path: Path) -> None:
    fp32 = EmbeddingCache(tmp_path / "a", progress=False).embed(tiny, phantoms[:1]).load([0])
    bf16 = (
        EmbeddingCache(tmp_path / "b", precision="bf16", progress=False)
        .embed(tiny, phantoms[:1])
        .load([0])
    )
    cosine = torch.nn.functional.cosine_similarity(fp32.flatten(), bf16.flatten(), dim=0)
    assert cosine > 0.99


def _entries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.npy") if ".tmp-" not in p.name]


@pytest.mark.slow
def test_sigkill_during_embed_leaves_no_broken_entry_and_rerun_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = write_folder_dataset(make_phantoms(30, 64, seed=9), tmp_path / "data")
    cache_dir = tmp_path / "cache"
    args = [
        "embed",
        "--data",
        str(data_dir),
        "--checkpoint",
        "random:tiny",
        "--cache",
        str(cache_dir),
        "-q",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "samprompt.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(_entries(cache_dir)) < 4 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "embed finished before it could be killed; make the data larger"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = _entries(cache_dir)
    assert 4 <= len(done) < 30
    for path in done:
        assert np.load(path).shape == (256, 64, 64)
    capsys.readouterr()
    assert main(args) == 0  # the rerun, in this process
    rerun = capsys.readouterr()
    match = re.search(r"30 images: (\d+) cached, (\d+) computed", rerun.out)
    assert match, rerun.out + rerun.err
    assert int(match.group(1)) == len(done) and int(match.group(2)) == 30 - len(done)
    assert len(_entries(cache_dir)) == 30


@pytest.mark.parametrize("spec", ["random:tiny", "litemedsam"])
def test_onnxruntime_backend_gives_the_torch_embeddings(tmp_path: Path, spec: str) -> None:
    model = load_sam(spec)
    data = make_phantoms(2, 96, seed=5)
    torch_cache = EmbeddingCache(tmp_path / "torch", progress=False)
    onnx_cache = EmbeddingCache(tmp_path / "onnx", progress=False, backend="onnxruntime")
    expected = torch_cache.embed(model, data).load([0, 1]).float()
    got = onnx_cache.embed(model, data).load([0, 1]).float()
    assert onnx_cache.stats.encoder_calls == 2
    # float16 entries: equal up to a step of float16 at the embeddings' magnitude
    step = float(expected.abs().max()) * 2**-10
    assert torch.allclose(got, expected, rtol=0, atol=step), float((got - expected).abs().max())
    assert list((tmp_path / "onnx" / "onnx").glob("encoder-*.onnx"))  # exported once, kept
    with pytest.raises(ConfigError, match="fp32 only"):
        EmbeddingCache(tmp_path, backend="onnxruntime", precision="bf16")
    with pytest.raises(ConfigError, match="backend must be one of"):
        EmbeddingCache(tmp_path, backend="tensorrt")
