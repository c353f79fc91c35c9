"""No command can destroy data: the defects of the third bad-input audit, one test each.

Each test names the audit's number. Every refusal is one line (``samprompt: error: ...``) and
leaves the user's files as they were.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from samprompt import EmbeddingCache, FinetuneConfig, Finetuner, LoadedSam, get_strategy
from samprompt.cli import main
from samprompt.config import check_seed
from samprompt.data import make_phantoms, write_folder_dataset
from samprompt.errors import ConfigError, PluginError
from samprompt.hookspecs import hookimpl
from samprompt.plugins import register_plugin, reset_plugins
from samprompt.prompts.strategy import BaseStrategy
from samprompt.runs import FINISHED, RunFolder


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A finished fine-tuning run on phantoms (random:tiny), its data and cache."""
    root = tmp_path_factory.mktemp("audit")
    data = write_folder_dataset(make_phantoms(10, 64, seed=11), root / "data")
    cache = root / "cache"
    args = ["finetune", "--data", str(data), "--checkpoint", "random:tiny", "--cache", str(cache)]
    args += ["--epochs", "1", "--batch-size", "6", "--lr", "1e-3", "-q", "--out", str(root / "run")]
    assert main(args) == 0
    return root / "run", data, cache


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("samprompt: error:") and "\n" not in err, err
    return err


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# 1, 5 ---------------------------------------------------------------------------------- export
def test_export_never_writes_into_the_model_folder_or_over_files(
    run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, _, _ = run
    before = _digest(model)
    for name in ("model.pth", "run.pth", "metrics.pth"):
        assert main(["export", "--model", str(model), "--out", str(model / name)]) == 2
        assert "inside the command's input --model" in _error(capsys)
    assert _digest(model) == before
    out = tmp_path / "lungs.pth"
    assert main(["export", "--model", str(model), "--out", str(out)]) == 0
    capsys.readouterr()
    written = _digest(tmp_path)
    assert main(["export", "--model", str(model), "--out", str(out)]) == 2
    assert "already exists" in _error(capsys) and _digest(tmp_path) == written
    assert main(["export", "--model", str(model), "--out", str(out), "--overwrite"]) == 0


# 2 ------------------------------------------------------------------- outputs apart from inputs
def test_overwrite_never_empties_an_input_or_a_folder_samprompt_did_not_write(
    run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data, cache = run
    images = data / "images"
    before, model_before = _digest(images), _digest(model)
    common = ["predict", "--model", str(model), "--cache", str(cache), "-q", "--overwrite"]
    assert main([*common, "--images", str(images), "--out", str(images)]) == 2
    assert "is the command's input --images" in _error(capsys)
    assert main([*common, "--images", str(images), "--out", str(model)]) == 2
    assert "input --model" in _error(capsys)
    assert main([*common, "--images", str(images), "--out", str(data)]) == 2
    assert "contains the command's input --images" in _error(capsys)
    assert _digest(images) == before and _digest(model) == model_before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main([*common, "--images", str(images), "--out", str(mine)]) == 2
    message = _error(capsys)
    assert "no run.json" in message and "notes.txt" in message
    assert (mine / "notes.txt").read_text() == "keep me"
    assert main([*common[:-1], "--images", str(images), "--out", str(mine)]) == 2
    assert "--overwrite" not in _error(capsys)  # no advice to delete the user's own files


# 4 ----------------------------------------------------- commands never write into another run
def test_baseline_demo_and_reproduce_refuse_a_fine_tuning_run(
    run: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, data, _ = run
    before = _digest(model)
    commands = [
        ["baseline", "unet", "--data", str(data), "--epochs", "1", "--out", str(model), "-q"],
        ["demo", "--epochs", "1", "--images", "6", "--out", str(model), "-q"],
        ["reproduce", "--data", str(data), "--checkpoint", "random:tiny", "--quick",
         "--out", str(model), "-q"],
    ]  # fmt: skip
    for argv in commands:
        assert main(argv) == 2, argv
        assert "holds another run" in _error(capsys)
    assert _digest(model) == before


# 6 ------------------------------------------------------------------------------- image sizes
@pytest.mark.parametrize("fmt", ["sam", "onnx"])
def test_export_checks_image_sizes_before_writing(
    run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    model, _, _ = run
    out = tmp_path / ("x.pth" if fmt == "sam" else "x")
    for size in (["0", "0"], ["-5", "100"]):
        argv = ["export", "--model", str(model), "--format", fmt, "--out", str(out)]
        assert main([*argv, "--image-size", *size]) == 2
        assert "--image-size" in _error(capsys)
        assert list(tmp_path.iterdir()) == []


# 7, 17 ------------------------------------------------------------------------------ checkpoints
def test_files_that_are_not_checkpoints_are_one_line(
    run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, data, cache = run
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint")
    pickled = tmp_path / "objects.pth"
    torch.save({"model": argparse.Namespace(weights=1)}, pickled)
    for path in (notes, pickled):
        argv = ["embed", "--data", str(data), "--checkpoint", str(path), "--cache", str(cache)]
        assert main(argv) == 2
        message = _error(capsys)
        assert str(path) in message and "weights_only=False" not in message
    assert "can never run code" in message


@pytest.mark.parametrize(
    ("field", "edit"),
    [
        ("sam.checkpoint", lambda m: m["sam"].update(checkpoint="../../../../etc/passwd")),
        ("sam.seed", lambda m: m["sam"].update(seed="abc")),
        ("sam.seed", lambda m: m["sam"].update(seed=10**30)),
        ("config.batch_size", lambda m: m["config"].update(batch_size=0)),
        ("config.batch_size", lambda m: m["config"].update(batch_size=-5)),
        ("config.multimask_output", lambda m: m["config"].update(multimask_output="no")),
        ("config.precision", lambda m: m["config"].update(precision="fp16")),
        ("strategy", lambda m: m["strategy"]["state"]["params"].update(inference_prompt=1)),
        ("strategy", lambda m: m["strategy"]["state"]["fitted"].update(unit_points=[[1e308, 0]])),
        ("weights_sha256", lambda m: m.pop("weights_sha256")),
    ],
)
def test_model_json_is_validated_completely_before_use(  # 7, 8, 18
    run: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    edit: object,
) -> None:
    model, data, cache = run
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in model.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    meta = json.loads((broken / "model.json").read_text())
    edit(meta)  # type: ignore[operator]
    (broken / "model.json").write_text(json.dumps(meta))
    argv = ["predict", "--model", str(broken), "--images", str(data / "images")]
    assert main([*argv, "--cache", str(cache), "--out", str(tmp_path / "p"), "-q"]) == 2
    message = _error(capsys)
    assert field in message, message
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    "text", ['{"threshold": ' + "9" * 5000 + "}", "[" * 100_000 + "]" * 100_000]
)
def test_pathological_model_json_is_refused(
    run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    _, data, cache = run
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text(text)
    argv = ["evaluate", "--model", str(broken), "--data", str(data), "--cache", str(cache)]
    assert main([*argv, "--out", str(tmp_path / "e"), "-q"]) == 2
    assert "invalid JSON" in _error(capsys)


# 9 ---------------------------------------------------------------------------------- boxes
def test_boxes_file_errors_name_the_file_and_the_id(
    run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data, cache = run
    ident = sorted(p.stem for p in (data / "images").iterdir())[0]
    for entry in ("abc", [[0, 0, 500, 500]], {"boxes": [[1, 2, 3]]}, {"box": [[1, 2, 3, 4]]}):
        boxes = tmp_path / "boxes.json"
        boxes.write_text(json.dumps({ident: entry}))
        argv = ["predict", "--model", str(model), "--images", str(data / "images")]
        argv += ["--boxes", str(boxes), "--cache", str(cache), "--out", str(tmp_path / "p")]
        assert main([*argv, "-q"]) == 2
        message = _error(capsys)
        assert str(boxes) in message and repr(ident) in message, message


# 10 ------------------------------------------------------------------------------- plugins
class _Faulty(BaseStrategy):
    """Fails in the hook named by ``where`` (or misbehaves there)."""

    name = "faulty-test"

    def __init__(self, where: str = "fit") -> None:
        if where == "__init__":
            raise ZeroDivisionError("broken constructor")
        self.where = where

    def params(self) -> dict[str, object]:
        return {"where": self.where}

    def fit(self, train: object) -> None:
        if self.where == "fit":
            raise KeyError("column")

    def training_prompt(self, sample, rng):  # type: ignore[no-untyped-def]
        if self.where == "training_prompt":
            raise IndexError("no such point")
        return self.inference_prompt(sample)

    def inference_prompt(self, sample):  # type: ignore[no-untyped-def]
        if self.where == "inference_prompt":
            raise ValueError("bad image")
        if self.where == "returns":
            return [[1, 2]]
        return get_strategy("perturbed-box").inference_prompt(sample)

    def fitted_state(self) -> dict[str, object]:
        return {"when": object()} if self.where == "state" else {}


@pytest.mark.parametrize(
    ("where", "hook"),
    [
        ("__init__", "__init__"),
        ("fit", "fit"),
        ("training_prompt", "training_prompt"),
        ("inference_prompt", "inference_prompt"),
        ("returns", "inference_prompt"),
        ("state", "state_dict"),
    ],
)
def test_a_failing_plugin_is_one_error_naming_it_and_the_hook(
    tiny: LoadedSam, tmp_path: Path, where: str, hook: str
) -> None:
    class Plugin:
        @hookimpl
        def samprompt_prompt_strategies(self):  # type: ignore[no-untyped-def]
            return [_Faulty]

    register_plugin(Plugin(), source="tests")
    try:
        data = make_phantoms(8, 64, seed=4)
        with pytest.raises(PluginError) as caught:
            tuner = Finetuner(
                tiny,
                get_strategy("faulty-test", where=where),
                FinetuneConfig(epochs=1, batch_size=6, lr=1e-3),
                cache=EmbeddingCache(tmp_path / "cache", progress=False),
                out_dir=tmp_path / "run",
                progress=False,
            )
            tuner.fit(data[:6], data[6:])
    finally:
        reset_plugins()
    message = str(caught.value)
    assert "faulty-test" in message and f"{hook}()" in message, message
    assert "\n" not in message


# 11 ------------------------------------------------------------------------------ the cache
def test_cache_entry_of_the_wrong_shape_is_recomputed(tiny: LoadedSam, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache", progress=False)
    data = make_phantoms(2, 64, seed=1)
    index = cache.embed(tiny, data)
    good = np.load(index.paths[0])
    np.save(index.paths[0], np.zeros((3, 5), np.float16))
    with pytest.warns(UserWarning, match=r"expected float16 \(256, 64, 64\); recomputing"):
        again = cache.embed(tiny, data)
    np.testing.assert_array_equal(np.load(again.paths[0]), good)
    assert again.load([0, 1]).shape == (2, 256, 64, 64)


# 12 ------------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("seed", ["-1", str(10**23), "x"])
def test_seed_out_of_range_is_an_argument_error(
    seed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["finetune", "--data", "d", "--out", "o", "--seed", seed])
    assert done.value.code == 2 and "--seed" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        check_seed(int(seed) if seed != "x" else seed)
    with pytest.raises(ConfigError):
        FinetuneConfig(seed=-1)


# 13 ------------------------------------------------------------------------------- demo
def test_demo_rerun_into_its_finished_folder_says_how_to_redo_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    RunFolder.claim(out, {"demo": {"epochs": 1, "images": 6}}).finish()
    assert main(["demo", "--epochs", "1", "--images", "6", "--out", str(out), "-q"]) == 2
    assert "pass --overwrite" in _error(capsys)
    with pytest.raises(SystemExit) as done:  # and --overwrite is one of demo's options
        main(["demo", "--help"])
    assert done.value.code == 0 and "--overwrite" in capsys.readouterr().out


# 14 ------------------------------------------------------------- failures leave nothing behind
def test_a_run_that_fails_before_training_releases_its_folder(
    run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, data, cache = run
    out = tmp_path / "cv"
    common = ["cv", "--data", str(data), "--checkpoint", "random:tiny", "--cache", str(cache)]
    assert main([*common, "--folds", "0", "--epochs", "1", "--out", str(out), "-q"]) == 2
    _error(capsys)
    assert not out.exists()
    out = tmp_path / "diverged"
    argv = ["finetune", "--data", str(data), "--checkpoint", "random:tiny", "--cache", str(cache)]
    assert main([*argv, "--lr", "1e30", "--epochs", "1", "--out", str(out), "-q"]) == 2
    assert "not finite" in _error(capsys) and not out.exists()


# 15 ----------------------------------------------------------------------------- onnx staging
def test_onnx_export_removes_staging_left_by_a_killed_export(
    run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, _, _ = run
    stale = tmp_path / ".onnx.staging-999999"
    stale.mkdir()
    (stale / "decoder.onnx").write_bytes(b"half")
    argv = ["export", "--model", str(model), "--format", "onnx", "--decoder-only"]
    assert main([*argv, "--out", str(tmp_path / "onnx")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


# 16 --------------------------------------------------------------------- finished and resume
def test_resume_of_a_finished_run_is_refused_and_markers_come_last(
    run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, data, cache = run
    argv = ["finetune", "--data", str(data), "--checkpoint", "random:tiny", "--cache", str(cache)]
    argv += ["--epochs", "1", "--batch-size", "6", "--lr", "1e-3", "--out", str(model)]
    assert main([*argv, "--resume", "-q"]) == 2
    assert "nothing to resume" in _error(capsys)
    out = tmp_path / "masks"
    predict = ["predict", "--model", str(model), "--images", str(data / "images")]
    assert main([*predict, "--cache", str(cache), "--out", str(out), "-q"]) == 0
    marker = (out / FINISHED).stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= marker for p in out.glob("*.png"))
    assert len(list(out.glob("*.png"))) == 10


# 19 ------------------------------------------------------------------------- lazy package root
def test_submodules_resolve_on_attribute_access() -> None:
    probe = "import samprompt; print(samprompt.data.FolderDataset.__name__, samprompt.runs.RunFolder.__name__)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["FolderDataset", "RunFolder"]


# 20 ---------------------------------------------------------------------------------- locks
def test_a_folder_in_use_by_another_process_is_refused_naming_it(
    run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, data, cache = run
    out = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from samprompt.runs import RunFolder\n"
         f"RunFolder.claim({str(out)!r}, {{'x': 1}}); print('ready', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        argv = ["finetune", "--data", str(data), "--checkpoint", "random:tiny"]
        argv += ["--cache", str(cache), "--epochs", "1", "--out", str(out), "-q", "--overwrite"]
        assert main(argv) == 2
        message = _error(capsys)
        assert f"in use by process {holder.pid}" in message, message
        assert json.loads((out / "run.json").read_text())["x"] == 1  # not emptied
    finally:
        holder.kill()
        holder.wait()
