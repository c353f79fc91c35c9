"""Runs never lie: a folder is reused only by the run that wrote it, divergence stops training,
bad values fail up front with one line, and saved models are checked when they load."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from samprompt import (
    BaseStrategy,
    CheckpointError,
    ConfigError,
    EmbeddingCache,
    FinetuneConfig,
    Finetuner,
    LoadedSam,
    PluginError,
    Prompt,
    RunFolderError,
    TrainingDivergedError,
    get_strategy,
)
from samprompt.cli import main
from samprompt.data import make_phantoms, read_mask, write_folder_dataset
from samprompt.data.readers import FolderDataset
from samprompt.plugins import register_plugin
from samprompt.protocols import cross_validate
from samprompt.run_identity import differences
from samprompt.runs import RUN_FILE, RunFolder, holds_run
from tests.conftest import count_encoder_calls


def _cv(model: LoadedSam, data: object, out: Path, cache: EmbeddingCache, **kw: object) -> object:
    strategy = kw.pop("strategy", "mean-points")
    return cross_validate(
        data,  # type: ignore[arg-type]
        model,
        get_strategy(str(strategy)),
        None,
        k=3,
        cache=cache,
        out_dir=out,
        progress=False,
        **kw,  # type: ignore[arg-type]
    )


def test_cv_folder_is_reused_only_by_the_same_run(
    tiny: LoadedSam, cache: EmbeddingCache, tmp_path: Path
) -> None:
    data = make_phantoms(9, 64, seed=1)
    out = tmp_path / "cv"
    first = _cv(tiny, data, out, cache)
    calls = count_encoder_calls(tiny)
    again = _cv(tiny, data, out, cache)
    assert again.to_dict() == first.to_dict()  # type: ignore[attr-defined]
    assert calls[0] == 0  # read back from the fold folders
    with pytest.raises(RunFolderError, match=r"strategy\.name.*mean-points.*perturbed-box"):
        _cv(tiny, data, out, cache, strategy="perturbed-box")
    with pytest.raises(RunFolderError, match=r"data\.content_sha256"):
        _cv(tiny, make_phantoms(9, 64, seed=2), out, cache)
    replaced = _cv(tiny, data, out, cache, strategy="perturbed-box", overwrite=True)
    assert replaced.meta["strategy"] == "perturbed-box"  # type: ignore[attr-defined]
    record = json.loads((out / "fold_0" / "run.json").read_text())
    assert record["strategy"]["name"] == "perturbed-box"


def test_claim_refuses_files_it_does_not_know_and_non_folders(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not empty"):
        RunFolder.claim(tmp_path / "busy", {"a": 1})
    assert (tmp_path / "busy" / "notes.txt").exists()  # nothing touched
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError, match="not a folder"):
        RunFolder.claim(tmp_path / "file", {"a": 1})
    assert RunFolder.claim(tmp_path / "new", {"a": 1, "b": {"c": 2}}).status == "new"
    assert RunFolder.claim(tmp_path / "new", {"b": {"c": 2}}).status == "same"  # a subset claims it
    assert differences({"b": {"c": 3}}, {"b": {"c": 2}}) == ["b.c: 2 there, 3 now"]
    with pytest.raises(RunFolderError, match="non-finite"):
        RunFolder.claim(tmp_path / "nan", {"lr": math.nan})


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_out_is_one_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(RunFolderError, match="cannot write"):
            RunFolder.claim(folder, {"a": 1})
    finally:
        folder.chmod(0o700)


def test_finetune_refuses_a_finished_run_and_resume_on_other_data(
    tiny: LoadedSam, cache: EmbeddingCache, tmp_path: Path
) -> None:
    data = make_phantoms(8, 64, seed=4)
    config = FinetuneConfig(epochs=1, batch_size=6, lr=1e-3)
    out = tmp_path / "run"

    def tuner() -> Finetuner:
        return Finetuner(
            tiny, get_strategy("mean-points"), config, cache=cache, out_dir=out, progress=False
        )

    tuner().fit(data[:6], data[6:])
    with pytest.raises(RunFolderError, match="already holds this finished run"):
        tuner().fit(data[:6], data[6:])
    other = make_phantoms(8, 64, seed=5)
    with pytest.raises(RunFolderError, match=r"data\.train"):
        tuner().fit(other[:6], other[6:], resume=True)
    tuner().fit(other[:6], other[6:], overwrite=True)
    assert json.loads((out / "run.json").read_text())["data"]["train"] == other[:6].fingerprint()


def test_divergence_stops_training_and_saves_nothing(
    tiny: LoadedSam, cache: EmbeddingCache, tmp_path: Path
) -> None:
    data = make_phantoms(8, 64, seed=4)
    out = tmp_path / "run"
    tuner = Finetuner(
        tiny,
        get_strategy("mean-points"),
        FinetuneConfig(epochs=3, batch_size=3, lr=1e12, checkpoint_every=0),
        cache=cache,
        out_dir=out,
        progress=False,
    )
    with pytest.raises(TrainingDivergedError, match=r"epoch 1\b.*not finite|epoch 1\b.*non-finite"):
        tuner.fit(data[:6], data[6:])
    assert not (out / "model.json").exists() and not (out / "decoder.safetensors").exists()


@settings(max_examples=25, deadline=None)
@given(
    field=st.sampled_from(["lr", "weight_decay", "lambda_dice", "lambda_other"]),
    value=st.sampled_from([math.inf, -math.inf, math.nan, True, "1e-4", None]),
)
def test_config_rejects_non_finite_and_wrongly_typed_numbers(field: str, value: object) -> None:
    if field == "lr" and value is None:
        return  # None means "the model's recommended rate"
    with pytest.raises(ConfigError, match=field):
        FinetuneConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [{"batch_size": True}, {"epochs": 2.0}, {"seed": "0"}, {"keep_best": 1}, {"device": "tpu9"}],
)
def test_config_rejects_wrong_types(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        FinetuneConfig(**changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    data = write_folder_dataset(make_phantoms(10, 64, seed=11), root / "data")
    cache = root / "cache"
    args = ["finetune", "--data", str(data), "--checkpoint", "random:tiny", "--cache", str(cache)]
    args += ["--epochs", "1", "--batch-size", "6", "--lr", "1e-3", "-q"]
    assert main([*args, "--out", str(root / "run")]) == 0
    return root / "run", data, cache


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("samprompt: error:") and "Traceback" not in err, err
    return err


def test_cli_refuses_bad_inputs_with_one_line(
    trained_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, data, cache = trained_run
    common = ["--data", str(data), "--checkpoint", "random:tiny", "--cache", str(cache), "-q"]
    # rerun into the finished folder, and with another lr
    assert main(["finetune", *common, "--epochs", "1", "--batch-size", "6", "--lr", "1e-3",
                 "--out", str(run)]) == 2  # fmt: skip
    assert "already holds this finished run" in _one_line(capsys)
    assert main(["finetune", *common, "--epochs", "1", "--lr", "1e-2", "--out", str(run)]) == 2
    assert "config.lr" in _one_line(capsys)
    # --out is a file: refused before any training
    (tmp_path / "file").write_text("")
    assert main(["finetune", *common, "--epochs", "1", "--out", str(tmp_path / "file")]) == 2
    assert "not a folder" in _one_line(capsys)
    for device in ("tpu9", "cuda:7" if torch.cuda.is_available() else "cuda"):
        assert main(["cv", *common, "--device", device, "--out", str(tmp_path / "d")]) == 2
        assert device in _one_line(capsys)
    assert not (tmp_path / "d").exists()
    # --boxes: missing file and bad JSON
    (tmp_path / "bad.json").write_text("{not json")
    for boxes in (tmp_path / "missing.json", tmp_path / "bad.json"):
        code = main(["predict", "--model", str(run), "--images", str(data / "images"),
                     "--boxes", str(boxes), "--out", str(tmp_path / "p"), "-q"])  # fmt: skip
        assert code == 2
        assert str(boxes) in _one_line(capsys)
    # threshold outside (0, 1) is refused by the parser
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", str(run), *common, "--threshold", "1.5", "--out", "e"])
    assert exit_info.value.code == 2
    assert "between 0 and 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda meta: [meta], "not a samprompt model"),
        (lambda meta: {k: v for k, v in meta.items() if k != "sam"}, "field sam is missing"),
        (lambda meta: {**meta, "threshold": 5}, "field threshold: 5 is"),
        (lambda meta: {**meta, "sam": {**meta["sam"], "sha256": 3}}, "sam.sha256"),
        (lambda meta: {**meta, "kind": "unet"}, "model.json: invalid U-Net config"),
    ],
)
def test_broken_model_json_is_refused_naming_the_field(
    trained_run: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: object,
    message: str,
) -> None:
    run, data, cache = trained_run
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    meta = json.loads((broken / "model.json").read_text())
    (broken / "model.json").write_text(json.dumps(edit(meta)))  # type: ignore[operator]
    code = main(["predict", "--model", str(broken), "--images", str(data / "images"),
                 "--cache", str(cache), "--out", str(tmp_path / "p"), "-q"])  # fmt: skip
    assert code == 2
    assert re.search(message, _one_line(capsys))


def test_swapped_decoder_is_refused(
    trained_run: tuple[Path, Path, Path], tiny: LoadedSam, tmp_path: Path
) -> None:
    run, _, cache = trained_run
    swapped = tmp_path / "swapped"
    shutil.copytree(run, swapped)
    from samprompt.model import save_decoder_weights

    save_decoder_weights(tiny.sam, swapped / "decoder.safetensors")
    with pytest.raises(CheckpointError, match="not the file this model was saved with"):
        Finetuner.load(swapped, cache=EmbeddingCache(cache, progress=False))


def test_non_finite_cache_entry_is_recomputed(tiny: LoadedSam, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache", progress=False)
    data = make_phantoms(2, 64, seed=0)
    index = cache.embed(tiny, data)
    path = index.paths[0]
    poisoned = np.load(path)
    poisoned[0, 0, 0] = np.nan
    np.save(path, poisoned)
    calls = count_encoder_calls(tiny)
    with pytest.warns(UserWarning, match="non-finite"):
        index = cache.embed(tiny, data)
    assert calls[0] == 1
    assert np.isfinite(np.load(index.paths[0])).all()


class _Forgetful(BaseStrategy):
    """Learns a point in fit() but does not save it: the documented contract, half followed."""

    name = "forgetful-test"

    def __init__(self) -> None:
        self.xy = [1.0, 1.0]

    def fit(self, train):  # type: ignore[no-untyped-def]
        self.xy = [5.0, 7.0]

    def inference_prompt(self, sample):  # type: ignore[no-untyped-def]
        h, w = sample.size
        return Prompt((h, w), points=[self.xy], point_labels=[1])


def test_saving_checks_the_strategy_round_trip(
    tiny: LoadedSam, cache: EmbeddingCache, tmp_path: Path
) -> None:
    from samprompt.hookspecs import hookimpl

    class Plugin:
        @hookimpl
        def samprompt_prompt_strategies(self):  # type: ignore[no-untyped-def]
            return [_Forgetful]

    register_plugin(Plugin(), source="tests")
    data = make_phantoms(8, 64, seed=4)
    tuner = Finetuner(
        tiny,
        get_strategy("forgetful-test"),
        FinetuneConfig(epochs=1, batch_size=6, lr=1e-3),
        cache=cache,
        out_dir=tmp_path / "run",
        progress=False,
    )
    with pytest.raises(PluginError, match=r"forgetful-test.*another inference prompt"):
        tuner.fit(data[:6], data[6:])
    assert not (tmp_path / "run" / "model.json").exists()


def test_masks_in_other_encodings_are_read(tmp_path: Path) -> None:
    grid = np.zeros((6, 5), bool)
    grid[1:4, 2:4] = True
    rgba = np.dstack([grid * 255] * 3 + [np.full(grid.shape, 255)]).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray((grid * 65535).astype(np.uint16)).save(tmp_path / "deep.png")
    for name in ("rgba.png", "deep.png"):
        assert (read_mask(tmp_path / name) == grid).all()


def test_ambiguous_ids_and_orphan_masks_are_reported(tmp_path: Path) -> None:
    root = write_folder_dataset(make_phantoms(3, 32, seed=0), tmp_path / "d")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "masks" / "lonely.png")
    with pytest.warns(UserWarning, match="1 mask.*no image"):
        FolderDataset(root)
    first = sorted((root / "images").iterdir())[0]
    Image.open(first).convert("RGB").save(first.with_suffix(".jpg"))
    with pytest.raises(Exception, match="share the id"):
        FolderDataset(root)


def test_holds_run_says_whether_a_folder_records_this_run_without_claiming_it(
    tmp_path: Path,
) -> None:
    identity = {"settings": {"epochs": 3, "lrs": (1e-4, 1e-3)}, "data": "abc"}
    assert not holds_run(tmp_path / "absent", identity)
    assert RunFolder.claim(tmp_path / "run", identity).status == "new"
    record = (tmp_path / "run" / RUN_FILE).read_text()
    assert holds_run(tmp_path / "run", identity)  # tuples read back as lists still match
    assert not holds_run(tmp_path / "run", {**identity, "data": "abd"})
    assert (tmp_path / "run" / RUN_FILE).read_text() == record  # nothing rewritten
    (tmp_path / "run" / RUN_FILE).write_text("{not json")
    assert not holds_run(tmp_path / "run", identity)
