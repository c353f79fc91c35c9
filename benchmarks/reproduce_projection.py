"""What a finished (or partly finished) ``samprompt reproduce`` folder's work costs on this
machine, from an empty cache and with nothing else running.

A long run is resumed across sittings, beside other jobs and at one thread, so its own wall time
does not say what it costs on a quiet machine. This script counts the work the folder records
(epochs each fine-tuning actually ran before early stopping, images per fold, U-Net epochs,
images encoded) and prices it with the unit costs ``reproduce`` probes for its estimate
(:func:`samprompt.reproduce_plan.probe_costs`, timed here on a fresh cache), beside the capped
estimate ``reproduce --estimate`` prints and the folder's own recorded times. Run it alone on the
machine, with the threads the run would use.

    python benchmarks/reproduce_projection.py --run /work/runs/repro_mont \\
        --data ../shared/data/montgomery --test-data ../shared/data/shenzhen --threads 2
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import attrs
from _util import parser, run_main, setup, table

from samprompt import EmbeddingCache, keep_freed_memory, load_sam
from samprompt.commands import FORMATS
from samprompt.reproduce import ReproduceSettings, estimate_reproduce
from samprompt.reproduce_plan import UnitCosts, fit_seconds, format_duration, probe_costs

PHASES = {  # reproduce's phase names and the sub-folders whose folds belong to them
    "zero-shot": "zero_shot/*/fold_*",
    "grid": "grid/*/fold_*",
    "fine-tuning": "finetune/*/fold_*",
    "U-Net": "unet/fold_*",
    "control": "control/fold_*",
    "cross-dataset": "cross_dataset_folds/*/fold_*",
}


def _args() -> Any:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="the reproduce --out folder")
    p.add_argument("--data", required=True, help="the run's --data")
    p.add_argument("--format", default="folder", choices=sorted(FORMATS))
    p.add_argument("--test-data", default=None, help="the run's --test-data")
    p.add_argument("--test-format", default="folder", choices=sorted(FORMATS))
    p.add_argument("--encoder-backend", default="onnxruntime", choices=["torch", "onnxruntime"])
    p.add_argument(
        "--unit-costs",
        type=json.loads,
        default=None,
        metavar="JSON",
        help="price with these unit costs, e.g. the '# unit costs' line of an earlier run on a "
        'quiet machine as {"encode_s": 0.78, "train_s": 0.144, ...}, instead of timing them now',
    )
    return p.parse_args()


def _fold_seconds(record: dict[str, Any], phase: str, costs: UnitCosts) -> tuple[float, int]:
    """A fold's projected seconds and its training image-steps."""
    history, train = record.get("history", []), len(record.get("train_ids", []))
    val, test = len(record.get("val_ids", [])), int(record["n_images"])
    if phase == "U-Net":
        steps = len(history) * (train + val)
        return steps * costs.unet_s, steps
    if phase == "zero-shot":
        return (val + test) * costs.eval_s, 0
    if phase == "cross-dataset":  # a fine-tuned fold model scoring the other dataset
        return test * costs.eval_s, 0
    return fit_seconds(costs, len(history), train, val, test), len(history) * train


def _projection(run: Path, costs: UnitCosts, n: int, n_test: int) -> list[list[Any]]:
    rows = [["embedding", f"{n + n_test} images", n * (costs.encode_s + costs.control_encode_s)
             + n_test * costs.encode_s]]  # fmt: skip
    for phase, pattern in PHASES.items():
        seconds, steps, folds = 0.0, 0, 0
        for metrics in sorted(run.glob(f"{pattern}/metrics.json")):
            s, k = _fold_seconds(json.loads(metrics.read_text()), phase, costs)
            seconds, steps, folds = seconds + s, steps + k, folds + 1
        if folds:
            rows.append([phase, f"{folds} folds, {steps} image-steps", seconds])
    return rows


def main() -> None:
    args = _args()
    setup(args)
    keep_freed_memory()
    data = FORMATS[args.format](args.data)
    test_data = FORMATS[args.test_format](args.test_data) if args.test_data else None
    model = load_sam("litemedsam")
    with tempfile.TemporaryDirectory() as root:  # an empty cache: encoding is priced too
        # the capped estimate of the whole run, as before its start: ``out`` is not args.run,
        # whose finished folds the estimate would leave out
        settings = ReproduceSettings.for_budget("converged", out=Path(root) / "fresh")
        cache = EmbeddingCache(root, progress=False, backend=args.encoder_backend)
        control = load_sam(settings.control or "random:tiny", seed=settings.seed)
        if args.unit_costs is not None:
            costs = UnitCosts(**args.unit_costs)
        else:
            costs = probe_costs(model, data, cache, control=control, test_data=test_data)
        cache = EmbeddingCache(Path(root) / "empty", progress=False, backend=args.encoder_backend)
        plan = estimate_reproduce(
            data, model, settings, test_data=test_data, cache=cache, costs=costs
        )
    given = " (given, not timed now)" if args.unit_costs is not None else ""
    print(f"# unit costs{given}: {json.dumps(attrs.asdict(costs))}")
    rows = _projection(args.run, costs, len(data), len(test_data) if test_data else 0)
    capped = plan.by_phase()
    table(
        ["phase", "work recorded in the folder", "projected", "estimate (capped)"],
        [[p, w, format_duration(s), format_duration(capped.get(p, 0.0))] for p, w, s in rows],
    )
    total = sum(s for *_, s in rows)
    print(
        f"projected total {format_duration(total)}; capped estimate {format_duration(plan.total_s)}"
    )
    if not (args.run / "finished.json").is_file():
        print("the run is not finished: the projection counts only the work recorded so far")
    clock = args.run / "wall_time.json"
    if clock.is_file():
        record = json.loads(clock.read_text())
        note = "" if record["complete"] else " (earliest invocations not timed)"
        print(f"recorded wall time over {record['invocations']} invocations{note}: "
              f"{format_duration(sum(record['phases_s'].values()))}")  # fmt: skip


if __name__ == "__main__":
    run_main(main)
