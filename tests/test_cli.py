from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samprompt.cli import main
from samprompt.data import make_phantoms, write_folder_dataset
from tests.conftest import shared_dataset


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "samprompt.cli", *args], capture_output=True, text=True
    )


def test_help_explains_commands(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run("--help")  # the installed module's own entry point
    assert out.returncode == 0
    for command in ("demo", "embed", "finetune", "cv", "evaluate", "predict", "plugins"):
        assert command in out.stdout
    with pytest.raises(SystemExit) as done:
        main(["finetune", "--help"])
    finetune = capsys.readouterr().out
    assert done.value.code == 0 and "--prompt-param" in finetune and "1e-5" in finetune


_HEAVY = ("torch", "torchvision", "segment_anything", "monai", "matplotlib")


def test_help_and_argument_errors_import_nothing_heavy() -> None:
    """--help and a bad argument answer in a fraction of a second: no PyTorch, no MONAI."""
    probe = (
        "import sys\n"
        "from samprompt.cli import main\n"
        "for argv in (['--help'], ['finetune', '--help'], ['finetune', '--epochs', 'x']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as done:\n"
        "        print('exit', done.code)\n"
        f"print(sorted(m for m in {_HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("exit 0") == 2 and "exit 2" in out.stdout
    assert "invalid int value: 'x'" in out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_cli_format_names_are_the_readers() -> None:
    from samprompt.cli import FORMAT_NAMES
    from samprompt.commands import FORMATS

    assert sorted(FORMAT_NAMES) == sorted([*FORMATS, "nifti"])  # nifti: NiftiDataset


def test_package_names_load_on_first_use() -> None:
    import samprompt

    probe = "import sys, samprompt; print('torch' in sys.modules)"
    light = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert light.stdout.strip() == "False", light.stderr
    for name in samprompt.__all__:
        value = getattr(samprompt, name)
        if name != "__version__":
            assert value.__name__ == name and name in dir(samprompt)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        samprompt.Nope  # noqa: B018


def test_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["embed", "--data", str(tmp_path / "none"), "--checkpoint", "random:tiny", "-q"])
    assert code == 2
    assert "samprompt: error:" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    data = write_folder_dataset(make_phantoms(10, (60, 80), seed=11), root / "data")
    cache = root / "cache"
    code = main(
        [
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
            "6",
            "--lr",
            "1e-3",
            "--out",
            str(root / "run"),
            "-q",
        ]
    )
    assert code == 0
    return data, cache, root


def test_finetune_writes_model_metrics_and_plot(trained: tuple[Path, Path, Path]) -> None:
    _, _, root = trained
    run = root / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"f1_mean", "f1_std", "iou_mean", "iou_std", "threshold", "per_image"} <= metrics.keys()
    assert len(metrics["per_image"]) == 2 and {"id", "f1", "iou"} <= metrics["per_image"][0].keys()
    assert np.mean([r["f1"] for r in metrics["per_image"]]) == pytest.approx(metrics["f1_mean"])
    summary = (run / "summary.md").read_text()
    assert "RANDOM WEIGHTS" in summary and f"{metrics['f1_mean']:.3f}" in summary
    assert Image.open(run / "learning_curve.png").size[0] > 300


def test_evaluate_and_predict(trained: tuple[Path, Path, Path]) -> None:
    data, cache, root = trained
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(root / "run"),
                "--data",
                str(data),
                "--cache",
                str(cache),
                "--out",
                str(root / "eval"),
                "--resolution",
                "original",
                "-q",
            ]
        )
        == 0
    )
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["resolution"] == "original" and len(metrics["per_image"]) == 10
    assert (
        main(
            [
                "predict",
                "--model",
                str(root / "run"),
                "--images",
                str(data / "images"),
                "--cache",
                str(cache),
                "--out",
                str(root / "pred"),
                "-q",
            ]
        )
        == 0
    )
    for path in (data / "images").iterdir():
        mask = np.asarray(Image.open(root / "pred" / path.name))
        assert mask.shape == (60, 80) and set(np.unique(mask).tolist()) <= {0, 255}


def test_predict_with_oracle_strategy_needs_boxes(
    trained: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, cache, _root = trained
    run = tmp_path / "box_run"
    assert (
        main(
            [
                "finetune",
                "--data",
                str(data),
                "--checkpoint",
                "random:tiny",
                "--cache",
                str(cache),
                "--prompt",
                "perturbed-box",
                "--epochs",
                "1",
                "--batch-size",
                "6",
                "--out",
                str(run),
                "-q",
            ]
        )
        == 0
    )
    assert json.loads((run / "metrics.json").read_text())["oracle"] is True
    predict = [
        "predict",
        "--model",
        str(run),
        "--images",
        str(data / "images"),
        "--cache",
        str(cache),
        "--out",
        str(tmp_path / "p"),
        "-q",
    ]
    capsys.readouterr()
    assert main(predict) == 2 and "--boxes" in capsys.readouterr().err
    boxes = {p.stem: [[5, 5, 70, 50]] for p in (data / "images").iterdir()}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    assert main([*predict, "--boxes", str(tmp_path / "boxes.json")]) == 0
    assert len(list((tmp_path / "p").glob("*.png"))) == 10


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "2", "--images", "10", "-q"])
    out = capsys.readouterr()
    assert code == 0, out.err
    from samprompt.demo import OUTPUTS

    assert "summary.md" in OUTPUTS and "overlays.png" in OUTPUTS
    for name in (*OUTPUTS, "control/model.json", "finished.json"):
        assert (tmp_path / "demo" / name).is_file(), name
    assert "test F1" in out.out
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    rows = {r["name"]: r for r in metrics["rows"]}
    assert list(rows) == ["zero-shot", "fine-tuned", "random-encoder control", "mean-mask floor"]
    assert all(0.0 <= r["f1_mean"] <= 1.0 for r in rows.values())
    # the fine-tuned model is the pretrained LiteMedSAM, never flagged random; the control is
    assert (
        "litemedsam" in rows["fine-tuned"]["model"] and "pretrained" in rows["fine-tuned"]["model"]
    )
    assert "RANDOM" in rows["random-encoder control"]["model"]
    model_json = json.loads((tmp_path / "demo" / "model" / "model.json").read_text())
    assert model_json["sam"]["random_weights"] is False
    assert model_json["sam"]["family"] == "litemedsam"


@pytest.mark.realdata
@pytest.mark.slow
def test_cv_on_real_montgomery_with_tiny(tmp_path: Path) -> None:
    from samprompt.data import FolderDataset

    # 24 real X-rays keep the CI fast; the protocol is the same as on all 138
    data = write_folder_dataset(
        FolderDataset(shared_dataset("montgomery")).subset(range(24)), tmp_path / "mont24"
    )
    out = tmp_path / "cv"
    assert (
        main(
            [
                "cv",
                "--data",
                str(data),
                "--checkpoint",
                "random:tiny",
                "--cache",
                str(tmp_path / "cache"),
                "--folds",
                "2",
                "--epochs",
                "1",
                "--lr",
                "1e-3",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["per_image"]) == 24 and metrics["n_folds"] == 2
    for fold in (0, 1):
        fold_metrics = json.loads((out / f"fold_{fold}" / "metrics.json").read_text())
        assert fold_metrics["f1_mean"] == pytest.approx(
            np.mean([r["f1"] for r in fold_metrics["per_image"]])
        )
        assert fold_metrics["prior"]["f1_mean"] > 0.6
    means = [
        json.loads((out / f"fold_{f}" / "metrics.json").read_text())["f1_mean"] for f in (0, 1)
    ]
    assert metrics["f1_mean"] == pytest.approx(np.mean(means))


@pytest.mark.realdata
@pytest.mark.slow
def test_litemedsam_trained_on_shenzhen_scores_unseen_xrays_as_its_predicted_pngs_do(
    tmp_path: Path,
) -> None:
    """`evaluate` on X-rays the model never saw agrees with F1 computed from `predict`'s PNGs."""
    from samprompt.data import FolderDataset

    shenzhen, montgomery = shared_dataset("shenzhen"), shared_dataset("montgomery")
    train = write_folder_dataset(FolderDataset(shenzhen).subset(range(10)), tmp_path / "train")
    unseen = write_folder_dataset(FolderDataset(montgomery).subset(range(4)), tmp_path / "unseen")
    common = ["--cache", str(tmp_path / "cache"), "-q"]
    assert main(["finetune", "--data", str(train), "--epochs", "1", "--out",
                 str(tmp_path / "model"), *common]) == 0  # fmt: skip
    assert main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(unseen),
                 "--resolution", "original", "--out", str(tmp_path / "eval"), *common]) == 0  # fmt: skip
    assert main(["predict", "--model", str(tmp_path / "model"), "--images",
                 str(unseen / "images"), "--out", str(tmp_path / "png"), *common]) == 0  # fmt: skip
    reported = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert json.loads((tmp_path / "model" / "model.json").read_text())["sam"]["family"] == (
        "litemedsam"
    )
    by_id = {r["id"]: r["f1"] for r in reported["per_image"]}
    assert len(by_id) == 4
    for ident, f1 in by_id.items():
        pred = np.asarray(Image.open(tmp_path / "png" / f"{ident}.png")) > 127
        truth = np.asarray(Image.open(unseen / "masks" / f"{ident}.png")) > 127
        dice = 2 * np.logical_and(pred, truth).sum() / (pred.sum() + truth.sum())
        assert f1 == pytest.approx(dice, abs=1e-6), ident
    assert reported["f1_mean"] == pytest.approx(np.mean(list(by_id.values())))


def test_early_stopping_flags_reach_the_config() -> None:
    from samprompt.cli import build_parser
    from samprompt.commands import _config

    args = build_parser().parse_args(
        ["finetune", "--data", "d", "--out", "o", "--monitor", "val_f1", "--patience", "7"]
    )
    config = _config(args)
    assert (config.monitor, config.patience) == ("val_f1", 7)
    default = _config(build_parser().parse_args(["cv", "--data", "d", "--out", "o"]))
    assert (default.monitor, default.patience) == ("val_loss", None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["finetune", "--data", "d", "--out", "o", "--monitor", "iou"])


def test_zero_shot_cv_scores_at_the_resolution_its_report_names(tmp_path: Path) -> None:
    """``cv --zero-shot --resolution original`` scores at image size, as its summary says."""
    data = write_folder_dataset(make_phantoms(10, (96, 128), seed=5), tmp_path / "data")
    out = tmp_path / "zs"
    argv = ["cv", "--data", str(data), "--checkpoint", "random:tiny", "--zero-shot"]
    argv += ["--folds", "2", "--resolution", "original", "--cache", str(tmp_path / "c")]
    assert main([*argv, "--out", str(out), "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    summary = (out / "summary.md").read_text()
    assert "evaluation resolution: original image size" in summary
    assert metrics["resolution"] == "original"
    assert all(f["resolution"] == "original" for f in metrics["folds"])
    assert "resolution: original" in summary
    assert (out / "finished.json").is_file()
