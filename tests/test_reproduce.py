from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samprompt.cli import main
from samprompt.data import make_phantoms, write_folder_dataset
from samprompt.report import format_pm
from tests.conftest import shared_dataset


def _reproduce(data: Path, out: Path, *extra: str) -> list[str]:
    """``samprompt reproduce`` arguments (pass to ``main``, or after ``_CLI`` for a process)."""
    return [
        "reproduce",
        "--data",
        str(data),
        "--checkpoint",
        "random:tiny",
        "--quick",
        "--out",
        str(out),
        "-q",
        *extra,
    ]


_CLI = [sys.executable, "-m", "samprompt.cli"]


def check_report_matches_results(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert report.startswith("**These numbers are not meaningful")
    summaries = [
        *results["zero_shot"].values(),
        *results["finetuned"].values(),
        *results["cross_dataset"].values(),
        results["unet"],
        results["prior"],
        results["control"],
    ]
    for row in summaries:
        assert format_pm(row["f1_mean"], row["f1_std"]) in report
        assert format_pm(row["iou_mean"], row["iou_std"]) in report
    for row in results["grid"]:
        assert f"| {row['lr']:g} | {row['weight_decay']:g} | {row['val_f1']:.3f} |" in report
    for label, rows in results["sweep"].items():
        assert label in report
        for row in rows:
            assert f"{row['f1_mean']:.3f}" in report
    assert results["meta"]["sha256"] in report and "oracle" in report
    # throughput counted from the runs' own records: epochs trained x training images per fold
    steps = 0
    for folder in [out / "control", *out.glob("grid/*"), *out.glob("finetune/*")]:
        for fold in folder.glob("fold_*"):
            record = json.loads((fold / "metrics.json").read_text())
            steps += len(record["history"]) * len(record["train_ids"])
    timing = results["timing"]
    assert timing["training_image_steps"] == steps > 0
    assert timing["total_s"] >= sum(timing["phases_s"].values()) * 0.999
    assert f"{timing['training_image_steps']} image-steps" in report
    check_early_stopping_rows(out, results, report)
    check_cross_dataset_rows(out, results)
    unet_history = [
        epoch
        for path in out.glob("unet/fold_*/metrics.json")
        for epoch in json.loads(path.read_text())["history"]
    ]  # training time as the folds recorded it, also when a later invocation read them back
    unet_s = sum(epoch["seconds"] for epoch in unet_history)
    assert results["unet"]["seconds"] == pytest.approx(unet_s) and unet_s > 0
    assert f"U-Net (MONAI, from scratch, {unet_s:.0f} s training)" in report
    for path in results["figures"].values():
        assert f"]({path})" in report
        width, height = Image.open(out / path).size
        assert width > 300 and height > 200
    return results


def check_early_stopping_rows(out: Path, results: dict, report: str) -> None:
    """Each early-stopping row against its folds' own records, and the report against it."""
    early = results["early_stopping"]
    assert set(early) == {f"fine-tuned {k}" for k in results["finetuned"]}
    for name, row in early.items():
        label = name.removeprefix("fine-tuned ")
        paths = sorted((out / "finetune" / label).glob("fold_*/metrics.json"))
        summary = results["finetuned"][label]
        folds = [json.loads(path.read_text()) for path in paths]
        fold_means = [f["f1_mean"] for f in folds]
        assert row["f1_fixed"] == pytest.approx([np.mean(fold_means), np.std(fold_means)])
        assert row["f1_fixed"][0] == pytest.approx(summary["f1_mean"])
        stops = [f["early_stop"] for f in folds]
        assert row["epochs_early"] == [e["epochs_run"] for e in stops]
        assert row["epochs_fixed"] == [len(f["history"]) for f in folds]
        differences = [e["f1_mean"] - f["f1_mean"] for e, f in zip(stops, folds, strict=True)]
        assert row["f1_difference"] == pytest.approx(sum(differences) / len(folds))
        for stop, fold in zip(stops, folds, strict=True):
            if not stop["stopped"]:  # early stopping would have changed nothing
                assert (stop["f1_mean"], stop["threshold"]) == (fold["f1_mean"], fold["threshold"])
        assert (
            f"| {name} | {format_pm(*row['f1_fixed'])} | {format_pm(*row['f1_early'])} | " in report
        )
        assert f"{row['f1_difference']:+.4f}" in report


def check_cross_dataset_rows(out: Path, results: dict) -> None:
    """Each cross-dataset row: the fine-tuned fold models of its prompt type (same thresholds,
    same training images, no training of their own) on every test image, mean ± std over them."""
    for label, row in results["cross_dataset"].items():
        paths = sorted((out / "cross_dataset_folds" / label).glob("fold_*/metrics.json"))
        folds = [json.loads(path.read_text()) for path in paths]
        trained = [
            json.loads(path.read_text())
            for path in sorted((out / "finetune" / label).glob("fold_*/metrics.json"))
        ]
        assert len(folds) == len(trained) > 1
        for fold, source in zip(folds, trained, strict=True):
            assert (fold["threshold"], fold["train_ids"]) == (
                source["threshold"],
                source["train_ids"],
            )
            assert (
                fold["history"] == [] and fold["n_images"] == results["meta"]["test_dataset_images"]
            )
        means = [f["f1_mean"] for f in folds]
        assert (row["f1_mean"], row["f1_std"]) == pytest.approx((np.mean(means), np.std(means)))


def check_results_tables(out: Path) -> None:
    """benchmarks/results_tables.py prints the folder's own numbers: every fine-tuned and
    cross-dataset fold's F1, epochs and threshold, and each summary row."""
    script = Path(__file__).parents[1] / "benchmarks" / "results_tables.py"
    printed = subprocess.run(
        [sys.executable, str(script), "--run", str(out), "--paper", "montgomery"],
        capture_output=True, text=True, check=True, cwd=script.parent,
    ).stdout  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    for sub in ("finetune", "cross_dataset_folds"):
        for label in results["finetuned"]:
            folds = [
                json.loads(p.read_text())
                for p in sorted((out / sub / label).glob("fold_*/metrics.json"))
            ]
            assert " / ".join(f"{f['f1_mean']:.4f}" for f in folds) in printed
            if sub == "finetune":
                assert " / ".join(f"{f['threshold']:.2f}" for f in folds) in printed
                assert " / ".join(str(len(f["history"])) for f in folds) in printed
    for row in [*results["zero_shot"].values(), results["unet"], results["control"]]:
        assert f"- {format_pm(row['f1_mean'], row['f1_std'])}\n" in printed
    assert printed.count(".. list-table::") == 6 and "0.943 ± 0.007" in printed
    # the same folder before results.json: only the fine-tuned table, the same rows
    (out / "results.json").rename(out / "results.later")
    try:
        partial = subprocess.run(
            [sys.executable, str(script), "--run", str(out), "--paper", "montgomery"],
            capture_output=True, text=True, check=True, cwd=script.parent,
        )  # fmt: skip
    finally:
        (out / "results.later").rename(out / "results.json")
    table = partial.stdout.split("\n", 1)[1]
    assert partial.stdout.count(".. list-table::") == 1 and table in printed
    assert "not finished" in partial.stderr and table.count("   * - ") == 4


@pytest.mark.slow
def test_reproduce_quick_is_resumable_and_consistent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_folder_dataset(make_phantoms(8, 64, seed=3), tmp_path / "data")
    test_data = write_folder_dataset(make_phantoms(3, (64, 96), seed=4), tmp_path / "other")
    out = tmp_path / "run"
    process = subprocess.Popen(
        [*_CLI, *_reproduce(data, out, "--test-data", str(test_data), "--compare-patience", "1")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = out / "finetune" / "box" / "fold_0" / "finished.json"
    wall = out / "wall_time.json"

    def fold_saved() -> bool:  # the fold's marker, then the wall-time record saved after it
        return marker.exists() and wall.exists() and '"fine-tuning"' in wall.read_text()

    deadline = time.monotonic() + 600
    while not fold_saved() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "reproduce finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "results.json").exists()
    # A sub-run is finished when its completion marker (written after metrics.json) exists.
    finished = {
        p.with_name("metrics.json"): p.with_name("metrics.json").stat().st_mtime_ns
        for p in out.rglob("fold_*/finished.json")
    }
    assert marker.with_name("metrics.json") in finished
    assert len(finished) >= 6  # zero-shot folds, grid, first fine-tuned fold
    # the killed invocation's wall time was saved up to its last finished fold
    killed = json.loads((out / "wall_time.json").read_text())
    assert killed["invocations"] == 1 and killed["complete"] is True
    assert {"embedding", "zero-shot", "lr x wd grid", "fine-tuning"} <= set(killed["phases_s"])
    rerun = _reproduce(data, out, "--test-data", str(test_data), "--compare-patience", "1")
    assert main(rerun) == 0  # in this process
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    results = check_report_matches_results(out)
    printed = capsys.readouterr().out
    fixed = sum(r["training_s_fixed"] for r in results["early_stopping"].values())
    early = sum(r["training_s_early"] for r in results["early_stopping"].values())
    assert "early stopping (patience 1 on val_loss) would have changed test F1 by " in printed
    assert printed.startswith("estimated wall time on this machine: ")  # before any sub-run
    assert "fine-tuning" in printed.splitlines()[0] and "control" in printed.splitlines()[0]
    # the resumed run prices only what is left: every fold the killed one finished is left out
    assert f"; {len(finished)} finished sub-run folds left out;" in printed.splitlines()[0]
    assert f"taken {early / fixed:.0%} of the fixed epochs' training time" in printed
    # The run embeds every image it needs (both datasets, the control's too) before its first
    # sub-run, so the rerun read them all from the first run's cache.
    assert results["meta"]["encoder_calls"] == 0
    assert set(results["cross_dataset"]) == {"box", "points", "both"}
    timing = results["timing"]
    assert timing["invocations"] == 2 and timing["all_timed"] is True
    for phase, seconds in killed["phases_s"].items():  # the two invocations added up
        assert timing["all_phases_s"][phase] == pytest.approx(
            seconds + timing["phases_s"].get(phase, 0.0)
        )
    assert f"over 2 invocations: {sum(timing['all_phases_s'].values()):.0f} s" in printed
    assert main(rerun) == 0  # a third invocation reads every sub-run back
    again = check_report_matches_results(out)
    assert again["unet"] == results["unet"] and again["cross_dataset"] == results["cross_dataset"]
    folds = len(list(out.rglob("fold_*/finished.json")))
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("estimated wall time on this machine: 0 s (embedding 0 s); ")
    assert f"; {folds} finished sub-run folds left out;" in first
    check_results_tables(out)
    # --estimate on the finished folder: nothing left but the probe cache's embedding
    estimate = [*rerun, "--estimate", "--cache", str(tmp_path / "probe_cache")]
    assert main(estimate) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith(f"; {folds} finished sub-run folds left out")
    assert "(embedding " in line and "fine-tuning" not in line and "U-Net" not in line


@pytest.mark.realdata
@pytest.mark.slow
def test_reproduce_quick_on_real_montgomery(tmp_path: Path) -> None:
    from samprompt.data import FolderDataset

    # 8 real X-rays (of --quick's 24) keep the CI fast; the pipeline is the same
    real = FolderDataset(shared_dataset("montgomery"))
    data = write_folder_dataset(real.subset(range(0, 138, 18)), tmp_path / "mont8")
    tick = time.perf_counter()
    assert main(_reproduce(data, tmp_path / "run")) == 0
    print(f"reproduce --quick on Montgomery: {time.perf_counter() - tick:.0f} s")
    results = check_report_matches_results(tmp_path / "run")
    assert results["meta"]["n_images"] == 8 and results["meta"]["encoder_calls"] == 8


@pytest.mark.slow
def test_reproduce_quick_on_real_ph2_colour_without_a_second_dataset(tmp_path: Path) -> None:
    from samprompt.data import FolderDataset

    real = FolderDataset(shared_dataset("ph2"))
    data = write_folder_dataset(real.subset(range(0, len(real), 20)), tmp_path / "ph2")
    assert main(_reproduce(data, tmp_path / "run")) == 0
    results = check_report_matches_results(tmp_path / "run")
    assert results["cross_dataset"] == {}
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Not run: no second dataset was given (`--test-data`)." in report
    unet = json.loads(next((tmp_path / "run").rglob("unet/fold_0/model.json")).read_text())
    assert unet["config"]["in_channels"] == 3  # dermoscopy stays in colour
