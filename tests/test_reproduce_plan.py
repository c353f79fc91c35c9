"""Budgets of ``samprompt reproduce``, its cost model and its progress bar."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from samprompt import EmbeddingCache, load_sam
from samprompt.cli import build_parser, main
from samprompt.commands import _budget_overrides
from samprompt.data import Dataset, make_phantoms, write_folder_dataset
from samprompt.errors import ConfigError
from samprompt.reproduce import BUDGETS, ReproduceSettings
from samprompt.reproduce_plan import (
    ProtocolProgress,
    UnitCosts,
    Workload,
    _encode_seconds,
    finished_in,
    format_duration,
    probe_costs,
)


def _workload(**changes: object) -> Workload:
    values: dict[str, object] = {
        "n": 100,
        "n_test": 40,
        "missing": 10,
        "missing_test": 40,
        "folds": 5,
        "epochs": 10,
        "grid_epochs": 3,
        "unet_epochs": 4,
        "control_epochs": 6,
        "zero_shot": ("box", "points"),
        "grid": ("a", "b", "c"),
        "finetune": ("box", "points", "both"),
    }
    values.update(changes)
    return Workload(**values)  # type: ignore[arg-type]


COSTS = UnitCosts(encode_s=2.0, train_s=0.5, eval_s=0.1, unet_s=0.05, control_encode_s=0.01)


def test_plan_counts_every_unit_of_work_by_hand() -> None:
    plan = _workload().plan(COSTS)
    # 5 folds of 100: 60 train, 20 val, 20 test; a fit = epochs x (train + val) + val sweep + test
    fit = lambda epochs: epochs * (60 * 0.5 + 20 * 0.1) + 40 * 0.1  # noqa: E731
    expected = {
        "embedding": 50 * 2.0 + 100 * 0.01,
        "zero-shot": 2 * 5 * 40 * 0.1,
        "grid": 3 * fit(3),
        "fine-tuning": 3 * 5 * fit(10),
        "U-Net": 5 * 4 * 80 * 0.05,
        "control": 5 * fit(6),
        # cross-dataset: each of the 3 x 5 fine-tuned fold models scores all 40 test images
        "cross-dataset": 3 * 5 * 40 * 0.1,
    }
    assert plan.by_phase() == pytest.approx(expected)
    assert plan.total_s == pytest.approx(sum(expected.values()))
    assert len({s.key for s in plan.steps}) == len(plan.steps)
    assert "at most" in plan.line(capped=True) and "at most" not in plan.line(capped=False)


def test_plan_without_control_or_second_dataset() -> None:
    phases = _workload(control_epochs=None, n_test=0, missing_test=0).plan(COSTS).by_phase()
    assert "control" not in phases and "cross-dataset" not in phases
    assert phases["embedding"] == pytest.approx(10 * 2.0)


def test_progress_eta_is_calibrated_on_steps_that_ran_not_on_resumed_ones() -> None:
    plan = _workload().plan(COSTS)
    progress = ProtocolProgress(plan, enabled=False)
    first, second, *_ = plan.steps
    assert progress.eta_s == pytest.approx(plan.total_s)
    progress.done(first.key, 0.0)  # read back from an earlier invocation: no calibration
    assert progress.eta_s == pytest.approx(plan.total_s - first.seconds)
    progress.done(second.key, 2 * second.seconds)  # this machine is twice as slow as probed
    left = plan.total_s - first.seconds - second.seconds
    assert progress.eta_s == pytest.approx(2 * left)
    progress.close()


def test_plan_without_finished_steps_and_a_bar_that_skips_them(tmp_path: Path) -> None:
    plan = _workload().plan(COSTS)
    for key in ("finetune/box/fold_2", "unet/fold_0", "zero_shot/points/fold_4"):
        (tmp_path / key).mkdir(parents=True)
        (tmp_path / key / "finished.json").write_text("{}")
    (tmp_path / "control" / "fold_1").mkdir(parents=True)  # begun, not finished
    left = plan.without(finished_in(tmp_path))
    gone = {s.key for s in plan.steps} - {s.key for s in left.steps}
    assert gone == {"finetune/box/fold_2", "unet/fold_0", "zero_shot/points/fold_4"}
    assert left.finished == 3 and left.steps[0].phase == "embedding"
    by_key = {s.key: s.seconds for s in plan.steps}
    assert left.total_s == pytest.approx(plan.total_s - sum(by_key[k] for k in gone))
    assert left.line(capped=False).endswith("; 3 finished sub-run folds left out")
    assert "left out" not in plan.line(capped=False)
    assert left.without(lambda key: key == "unet/fold_1").finished == 4
    progress = ProtocolProgress(left, enabled=False)
    progress.done("unet/fold_0", 50.0)  # read back, not in the plan: moves nothing
    assert progress.eta_s == pytest.approx(left.total_s) and progress.spent == 0.0
    progress.close()


@pytest.mark.parametrize(
    ("seconds", "text"), [(40, "40 s"), (600, "10 min"), (3900, "1 h 05 min"), (-3, "0 s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_budgets_and_command_line_overrides(tmp_path: Path) -> None:
    converged = ReproduceSettings.for_budget("converged", out=tmp_path)
    assert (converged.patience, converged.epochs, converged.compare_patience) == (5, 40, None)
    assert ReproduceSettings.for_budget("quick", out=tmp_path).quick
    paper = ReproduceSettings(out=tmp_path)
    assert (paper.epochs, paper.patience, paper.budget) == (100, None, "paper")
    assert set(BUDGETS) == {"paper", "converged", "quick"}
    with pytest.raises(ConfigError, match="unknown budget 'fast'"):
        ReproduceSettings.for_budget("fast", out=tmp_path)
    args = build_parser().parse_args(
        ["reproduce", "--data", "d", "--out", "o", "--budget", "converged", "--epochs", "12",
         "--compare-patience", "0", "--control", "none"]
    )  # fmt: skip
    overrides = _budget_overrides(args)
    assert overrides == {"epochs": 12, "compare_patience": None, "control": None}
    settings = ReproduceSettings.for_budget(args.budget, out=tmp_path, **overrides)
    assert (settings.epochs, settings.patience, settings.control) == (12, 5, None)


def test_probe_measures_positive_costs_and_leaves_the_decoder_alone(tmp_path: Path) -> None:
    model = load_sam("random:tiny")
    before = {k: v.clone() for k, v in model.sam.mask_decoder.state_dict().items()}
    data = make_phantoms(9, 64, seed=1)
    cache = EmbeddingCache(tmp_path, progress=False)
    costs = probe_costs(model, data, cache, batch_size=2, test_data=make_phantoms(2, 64, seed=2))
    assert costs.encode_s > 0 and costs.train_s > 0 and costs.eval_s > 0 and costs.unet_s > 0
    after = model.sam.mask_decoder.state_dict()
    assert all(bool((before[k] == after[k]).all()) for k in before)
    # the first missing image was encoded and cached; the 6 probe images too
    assert len(cache.missing(model, data)) == 9 - 6


def test_estimate_prints_the_cost_and_leaves_out_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_folder_dataset(make_phantoms(12, 64, seed=4), tmp_path / "data")
    out = tmp_path / "run"
    argv = [
        "reproduce",
        "--data",
        str(data),
        "--checkpoint",
        "random:tiny",
        "--budget",
        "converged",
        "--estimate",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        "-q",
    ]
    assert main(argv) == 0  # fmt: skip
    line = capsys.readouterr().out.strip()
    assert line.startswith("estimated wall time on this machine: at most ")
    for phase in ("embedding", "zero-shot", "grid", "fine-tuning", "U-Net", "control"):
        assert phase in line
    assert "cross-dataset" not in line  # no --test-data
    assert not out.exists()


class _SlowFirstCall:
    """A cache whose first encoder call carries a one-time set-up (like exporting the ONNX
    encoder) and whose later calls are quick."""

    def __init__(self) -> None:
        self.calls = 0

    def missing(self, model: object, data: Dataset) -> list[int]:
        return list(range(len(data)))

    def embed(self, model: object, data: Dataset) -> None:
        self.calls += 1
        time.sleep(0.5 if self.calls == 1 else 0.0)


def test_encoding_cost_leaves_out_one_time_set_up() -> None:
    cache = _SlowFirstCall()
    seconds = _encode_seconds(None, cache, None, make_phantoms(3, 32))  # type: ignore[arg-type]
    assert cache.calls == 2 and seconds < 0.25
