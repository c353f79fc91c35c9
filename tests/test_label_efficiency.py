"""``samprompt label-efficiency``: nested training subsets on fixed folds, both methods alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest

from samprompt import EmbeddingCache, FinetuneConfig, LoadedSam, get_strategy
from samprompt.baselines import UNetConfig
from samprompt.cli import main
from samprompt.data import make_phantoms, nested_subset, write_folder_dataset
from samprompt.errors import ConfigError
from samprompt.label_efficiency import (
    LabelEfficiencySettings,
    label_efficiency,
    label_efficiency_plan,
    scaled_epochs,
)
from samprompt.report import format_pm
from samprompt.reproduce_plan import UnitCosts


def _folds(run: Path) -> dict[int, dict]:
    return {
        int(p.parent.name.split("_")[1]): json.loads(p.read_text())
        for p in run.glob("fold_*/metrics.json")
    }


@pytest.mark.slow
def test_subsets_are_nested_fixed_folds_and_shared_by_both_methods(
    tiny: LoadedSam, cache: EmbeddingCache, tmp_path: Path
) -> None:
    data = make_phantoms(15, 48, seed=2)
    config = FinetuneConfig(epochs=1, batch_size=4, lr=1e-3, thresholds=(0.5,))
    settings = LabelEfficiencySettings(
        sizes=(2, 4, None), unet=UNetConfig(epochs=1, batch_size=4), k=3
    )
    rows = label_efficiency(
        data, tiny, get_strategy("mean-points"), config, tmp_path, settings, cache=cache,
        progress=False,
    )  # fmt: skip
    full = 15 - 2 * 5
    assert [(r.method.split(",")[0], r.images) for r in rows] == [
        (m, n) for n in (2, 4, full) for m in ("SAM decoder", "U-Net")
    ]
    assert [r.epochs for r in rows] == [3, 3, 2, 2, 1, 1]  # same image-steps as 1 epoch of 5
    runs = {(m, n): _folds(tmp_path / f"{m}_{n}") for m in ("sam", "unet") for n in (2, 4, full)}
    for fold in range(3):
        train = {n: runs[("sam", n)][fold]["train_ids"] for n in (2, 4, full)}
        assert [len(train[n]) for n in (2, 4, full)] == [2, 4, full]
        assert set(train[2]) <= set(train[4]) <= set(train[full])
        for n in (2, 4, full):
            sam, unet = runs[("sam", n)][fold], runs[("unet", n)][fold]
            assert unet["train_ids"] == sam["train_ids"]
            assert sam["val_ids"] == runs[("sam", full)][fold]["val_ids"]
            assert {r["id"] for r in sam["per_image"]} == {
                r["id"] for r in runs[("sam", full)][fold]["per_image"]
            }
    for row in rows:
        prefix = "sam" if row.method.startswith("SAM") else "unet"
        folds = runs[(prefix, row.images)].values()
        means = [np.mean([r["f1"] for r in f["per_image"]]) for f in folds]
        assert row.f1[0] == pytest.approx(np.mean(means))
        assert row.f1[1] == pytest.approx(np.std(means))  # over folds, population std
    table = (tmp_path / "table.md").read_text()
    assert f"| {full} (all) |" in table and "| 2 |" in table
    assert (tmp_path / "label_efficiency.png").stat().st_size > 10_000
    assert len(json.loads((tmp_path / "results.json").read_text())) == 6
    check_results_tables(tmp_path, rows, runs, full)


def check_results_tables(out: Path, rows: list, runs: dict, full: int) -> None:
    """benchmarks/results_tables.py --label-efficiency prints each size's row from the folder:
    summary, epochs, every fold's F1 and threshold, the full split marked "(all)"."""
    script = Path(__file__).parents[1] / "benchmarks" / "results_tables.py"
    printed = subprocess.run(
        [sys.executable, str(script), "--label-efficiency", str(out)],
        capture_output=True, text=True, check=True, cwd=script.parent,
    ).stdout  # fmt: skip
    sam, unet = printed.split(".. list-table:: U-Net")
    assert sam.startswith(".. list-table:: fine-tuned decoder, ``mean-points``")
    for row in rows:
        table = sam if row.method.startswith("SAM") else unet
        folds = [
            f for _, f in sorted(runs[("sam" if table is sam else "unet", row.images)].items())
        ]
        label = f"{row.images} (all)" if row.images == full else str(row.images)
        cells = [
            label, str(row.epochs), format_pm(*row.f1), format_pm(*row.iou),
            " / ".join(f"{f['f1_mean']:.4f}" for f in folds),
            " / ".join(f"{f['threshold']:.2f}" for f in folds),
        ]  # fmt: skip
        assert f"   * - {cells[0]}\n" + "".join(f"     - {c}\n" for c in cells[1:]) in table


def test_nested_subset_and_epoch_scaling() -> None:
    small, large = nested_subset(30, 5, seed=3), nested_subset(30, 12, seed=3)
    assert set(small) <= set(large) and len(set(large)) == 12
    assert not np.array_equal(nested_subset(30, 12, seed=4), large)
    with pytest.raises(ConfigError, match="1 to 30"):
        nested_subset(30, 31)
    assert scaled_epochs(10, 100, 25, 1000) == 40
    assert scaled_epochs(10, 100, 1, 50) == 50
    assert scaled_epochs(10, 100, 100, 50) == 10


def test_cli_refuses_a_size_above_the_training_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_folder_dataset(make_phantoms(10, 64, seed=1), tmp_path / "data")
    argv = ["label-efficiency", "--data", str(data), "--checkpoint", "random:tiny", "-q",
            "--sizes", "4", "50", "--folds", "5", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "6 images at most; size 50" in err[0]
    assert not (tmp_path / "out").exists()


def test_unet_only_call_is_reused_by_a_later_call_with_both(
    tiny: LoadedSam, cache: EmbeddingCache, tmp_path: Path
) -> None:
    data = make_phantoms(9, 48, seed=3)
    config = FinetuneConfig(epochs=1, batch_size=4, lr=1e-3, thresholds=(0.5,))
    both_methods = LabelEfficiencySettings(sizes=(2,), unet=UNetConfig(epochs=1, batch_size=4), k=3)
    first = label_efficiency(
        data, tiny, get_strategy("mean-points"), config, tmp_path,
        attrs.evolve(both_methods, sam=False), cache=cache, progress=False,
    )  # fmt: skip
    assert [r.method for r in first] == ["U-Net"] and not (tmp_path / "sam_2").exists()
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "unet_2").glob("fold_*/metrics.json")}
    assert len(stamp) == 3
    printed: list[str] = []
    both = label_efficiency(
        data, tiny, get_strategy("mean-points"), config, tmp_path, both_methods, cache=cache,
        progress=False, log=printed.append,
    )  # fmt: skip
    # the estimate, printed before anything ran, leaves out the finished U-Net folds
    assert len(printed) == 1 and printed[0].startswith("estimated wall time on this machine: ")
    assert "SAM decoder" in printed[0] and "U-Net" not in printed[0]
    assert [r.method.split(",")[0] for r in both] == ["SAM decoder", "U-Net"]
    assert both[1] == first[0]
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp  # not retrained
    with pytest.raises(ConfigError, match="nothing to run"):
        attrs.evolve(both_methods, sam=False, unet=None)


def test_settings_refuse_bad_sizes_before_any_work() -> None:
    with pytest.raises(ConfigError, match="must be >= 1"):
        LabelEfficiencySettings(sizes=(0, 8))
    with pytest.raises(ConfigError, match="no training sizes"):
        LabelEfficiencySettings(sizes=())
    settings = LabelEfficiencySettings(sizes=(None, 4, 4, 2), k=5)
    assert settings.full(23) == 23 - 2 * 4
    assert settings.resolved_sizes(23) == [2, 4, 15]
    with pytest.raises(ConfigError, match="15 images at most; size 16"):
        attrs.evolve(settings, sizes=(16,)).resolved_sizes(23)


def test_plan_prices_every_fold_left_by_hand() -> None:
    costs = UnitCosts(encode_s=2.0, train_s=0.5, eval_s=0.1, unet_s=0.05)
    settings = LabelEfficiencySettings(sizes=(8, None), unet=UNetConfig(epochs=30), k=5)
    plan = label_efficiency_plan(
        100, settings, costs, epochs=8, missing=7,
        done=lambda key: key in {"sam_8/fold_0", "unet_60/fold_4"},
    )  # fmt: skip
    # 100 images, 5 folds: 20 val, 20 test, 60 train; 8 images get 60 SAM epochs (same
    # image-steps as 8 epochs of 60) and 100 U-Net epochs (225 capped)
    fit = lambda epochs, train: epochs * (train * 0.5 + 20 * 0.1) + 40 * 0.1  # noqa: E731
    expected = {
        "embedding": 7 * 2.0,
        "SAM decoder": 4 * fit(60, 8) + 5 * fit(8, 60),
        "U-Net": 5 * 100 * (8 + 20) * 0.05 + 4 * 30 * (60 + 20) * 0.05,
    }
    assert plan.by_phase() == pytest.approx(expected)
    assert len(plan.steps) == 1 + 4 + 5 + 5 + 4 and plan.finished == 2
    unet_only = label_efficiency_plan(100, attrs.evolve(settings, sam=False), costs, epochs=8)
    assert set(unet_only.by_phase()) == {"embedding", "U-Net"}


def test_cli_estimate_prints_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_folder_dataset(make_phantoms(10, 64, seed=1), tmp_path / "data")
    argv = ["label-efficiency", "--data", str(data), "--checkpoint", "random:tiny", "-q",
            "--sizes", "2", "all", "--epochs", "1", "--cache", str(tmp_path / "cache"),
            "--estimate", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("estimated wall time on this machine: ")
    assert "SAM decoder" in out[0] and "U-Net" in out[0]
    assert not (tmp_path / "out").exists()


def test_cli_with_both_methods_off_ends_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_folder_dataset(make_phantoms(10, 64, seed=1), tmp_path / "data")
    argv = ["label-efficiency", "--data", str(data), "--checkpoint", "random:tiny", "-q",
            "--no-sam", "--no-unet", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to run" in err[0]
    assert not (tmp_path / "out").exists()
