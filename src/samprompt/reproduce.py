"""``samprompt reproduce``: every table and figure of the paper, plus its baselines, in one run.

The output folder is a resumable record: each sub-run (a zero-shot prompt type, a grid point, a
fine-tuned fold, a U-Net fold) lives in its own folder and is read back, not recomputed, when its
``metrics.json`` exists; all sub-runs share one embedding cache, so each image is encoded once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from samprompt._version import __version__
from samprompt.atomic import write_json_atomic
from samprompt.baselines import UNetConfig
from samprompt.config import FinetuneConfig
from samprompt.data.sample import Dataset, SampleList
from samprompt.embeddings import EmbeddingCache
from samprompt.finetune import Finetuner
from samprompt.metrics import summarize
from samprompt.model import LoadedSam
from samprompt.plugins import get_strategy
from samprompt.protocols import ProtocolResult, cross_dataset, cross_validate, unet_cross_validate
from samprompt.report import format_pm, markdown_table, plot_learning_curve, plot_overlays

__all__ = ["PROMPT_TYPES", "ReproduceSettings", "run_reproduce"]

#: The paper's prompt types and the strategies that implement them.
PROMPT_TYPES: dict[str, str] = {"box": "perturbed-box", "points": "mean-points", "both": "combined"}


@attrs.frozen
class ReproduceSettings:
    """What ``samprompt reproduce`` runs (defaults: the paper's protocol).

    ``quick`` shrinks everything for smoke tests: at most ``quick_images`` images, 2 folds,
    2 epochs, a 2-point learning-rate grid and a 2-epoch U-Net. ``patience`` and ``monitor``
    apply early stopping (:class:`~samprompt.FinetuneConfig`) to every fine-tuning, the grid's
    included; off by default, as in the paper. Without ``patience``, every fine-tuning also
    records what early stopping with ``compare_patience`` epochs would have given
    (:mod:`samprompt.early_stopping`), and the report sets its F1 and training time beside the
    fixed epochs'; None turns that off.
    """

    out: Path
    epochs: int = 100
    folds: int = 5
    seed: int = 0
    lrs: tuple[float, ...] = (1e-5, 1e-4, 1e-3)
    weight_decays: tuple[float, ...] = (0.0, 1e-1, 1e-3)
    grid_epochs: int | None = None
    unet_epochs: int = 30
    patience: int | None = None
    monitor: str = "val_loss"
    compare_patience: int | None = 5
    batch_size: int = 8
    device: str = "cpu"
    precision: str = "fp32"
    quick: bool = False
    quick_images: int = 24

    def effective(self) -> ReproduceSettings:
        """The settings after ``quick`` is applied."""
        if not self.quick:
            return self
        return attrs.evolve(
            self,
            epochs=min(self.epochs, 2),
            folds=2,
            lrs=(1e-4, 1e-3),
            weight_decays=(0.0,),
            grid_epochs=1,
            unet_epochs=2,
        )


def _summary_row(result: ProtocolResult) -> dict[str, Any]:
    s = result.summary()
    thresholds = [f.threshold for f in result.folds]
    return {**s, "thresholds": thresholds, "oracle": result.meta.get("oracle", False)}


def _sweep_table(result: ProtocolResult) -> list[dict[str, float]]:
    """Validation F1/IoU per threshold, mean over folds."""
    rows: dict[float, list[dict[str, float]]] = {}
    for fold in result.folds:
        for row in fold.sweep:
            rows.setdefault(float(row["threshold"]), []).append(row)
    return [
        {
            "threshold": t,
            "f1_mean": float(np.mean([r["f1_mean"] for r in rs])),
            "iou_mean": float(np.mean([r["iou_mean"] for r in rs])),
        }
        for t, rs in sorted(rows.items())
    ]


def run_reproduce(
    data: Dataset,
    model: LoadedSam,
    settings: ReproduceSettings,
    *,
    test_data: Dataset | None = None,
    cache: EmbeddingCache | None = None,
    dataset_name: str = "dataset",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole protocol into ``settings.out``; return what ``results.json`` holds."""
    s = settings.effective()
    tick = time.perf_counter()
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    if s.quick and len(data) > s.quick_images:
        keep = np.sort(np.random.default_rng(s.seed).permutation(len(data))[: s.quick_images])
        data = data.subset(keep)
        if test_data is not None and len(test_data) > s.quick_images:
            test_data = test_data.subset(np.arange(s.quick_images))
    cache = cache or EmbeddingCache(out / "cache", progress=progress)
    base = FinetuneConfig(
        epochs=s.epochs,
        patience=s.patience,
        monitor=s.monitor,
        compare_patience=s.compare_patience if s.patience is None else None,
        batch_size=s.batch_size,
        seed=s.seed,
        device=s.device,
        precision=s.precision,
    )
    common: dict[str, Any] = {"k": s.folds, "seed": s.seed, "cache": cache, "progress": progress}
    results: dict[str, Any] = {"zero_shot": {}, "finetuned": {}, "sweep": {}, "cross_dataset": {}}

    clock = PhaseClock()
    with clock("embedding"):
        cache.embed(model, data, device=s.device)
    trained: list[ProtocolResult] = []
    for label, name in PROMPT_TYPES.items():
        log(f"[zero-shot] {label} ({name})")
        with clock("zero-shot"):
            zs = cross_validate(
                data, model, get_strategy(name), None, out_dir=out / "zero_shot" / label, **common
            )
        results["zero_shot"][label] = _summary_row(zs)

    grid = []
    for lr in s.lrs:
        for wd in s.weight_decays:
            log(f"[grid] lr={lr:g} weight decay={wd:g}")
            config = base.replace(lr=lr, weight_decay=wd, epochs=s.grid_epochs or s.epochs)
            with clock("lr x wd grid"):
                run = cross_validate(
                    data,
                    model,
                    get_strategy("mean-points"),
                    config,
                    folds=[0],
                    out_dir=out / "grid" / f"lr{lr:g}_wd{wd:g}",
                    **common,
                )
            trained.append(run)
            val_f1 = max(r["f1_mean"] for r in run.folds[0].sweep)
            grid.append({"lr": lr, "weight_decay": wd, "val_f1": val_f1})
    chosen = max(grid, key=lambda g: (g["val_f1"], -g["lr"], -g["weight_decay"]))
    results["grid"] = grid
    results["chosen"] = {"lr": chosen["lr"], "weight_decay": chosen["weight_decay"]}
    config = base.replace(lr=chosen["lr"], weight_decay=chosen["weight_decay"])

    finetuned: dict[str, ProtocolResult] = {}
    for label, name in PROMPT_TYPES.items():
        log(f"[fine-tune] {label} ({name}), {s.folds} folds x {s.epochs} epochs")
        with clock("fine-tuning"):
            finetuned[label] = cross_validate(
                data, model, get_strategy(name), config, out_dir=out / "finetune" / label, **common
            )
        trained.append(finetuned[label])
        results["finetuned"][label] = _summary_row(finetuned[label])
        results["sweep"][label] = _sweep_table(finetuned[label])

    log(f"[U-Net] {s.folds} folds x {s.unet_epochs} epochs")
    unet_tick = time.perf_counter()
    with clock("U-Net"):
        unet = unet_cross_validate(
            data,
            UNetConfig(epochs=s.unet_epochs, seed=s.seed, device=s.device),
            k=s.folds,
            seed=s.seed,
            out_dir=out / "unet",
            progress=progress,
        )
    results["unet"] = _summary_row(unet) | {"seconds": time.perf_counter() - unet_tick}
    points = finetuned["points"].summary()
    results["prior"] = {
        "f1_mean": points["prior_f1_mean"],
        "f1_std": points["prior_f1_std"],
        "iou_mean": points["prior_iou_mean"],
        "iou_std": points["prior_iou_std"],
    }

    cross: dict[str, ProtocolResult] = {}
    if test_data is not None:
        for label, name in PROMPT_TYPES.items():
            log(f"[cross-dataset] {label}")
            with clock("cross-dataset"):
                cd = cross_dataset(
                    data,
                    test_data,
                    model,
                    get_strategy(name),
                    config,
                    seed=s.seed,
                    cache=cache,
                    out_dir=out / "cross_dataset" / label,
                    progress=progress,
                )
            trained.append(cd)
            cross[label] = cd
            results["cross_dataset"][label] = _summary_row(cd)

    early = {
        f"{kind} {label}": row
        for kind, runs in (("fine-tuned", finetuned), ("cross-dataset", cross))
        for label, run in runs.items()
        if (row := early_stop_row(run)) is not None
    }
    if early:
        results["early_stopping"] = early

    figures = out / "figures"
    history = [dict(h) for h in finetuned["points"].folds[0].history]
    plot_learning_curve(
        history,
        figures / "learning_curve.png",
        "Fine-tuning, point prompts, fold 0 (cf. paper Fig. 5)",
    )
    results["figures"] = {"learning_curve": "figures/learning_curve.png"}
    results["figures"].update(_overlays(data, model, finetuned["points"], out, figures, cache, s))

    results["meta"] = {
        "samprompt_version": __version__,
        "dataset": dataset_name,
        "n_images": len(data),
        "test_dataset_images": len(test_data) if test_data is not None else None,
        "checkpoint": model.spec,
        "sha256": model.sha256,
        "random_weights": model.is_random,
        "variant": model.variant,
        "seed": s.seed,
        "folds": s.folds,
        "epochs": s.epochs,
        "quick": s.quick,
        "resolution": "low (256x256)",
        "oracle_prompts": ["box", "both"],
        "encoder_calls": cache.stats.encoder_calls,
        "seconds": time.perf_counter() - tick,
    }
    results["timing"] = clock.summary(trained, time.perf_counter() - tick)
    write_json_atomic(out / "results.json", results)
    (out / "report.md").write_text(render_report(results))
    log(timing_line(results["timing"]))
    if early:
        log(early_stop_line(early))
    log(f"report: {out / 'report.md'}")
    return results


def early_stop_row(result: ProtocolResult) -> dict[str, Any] | None:
    """Early stopping against the fixed epochs over a protocol's folds: F1 of each (mean ± std
    over folds), their mean paired difference, and epochs and training seconds of each."""
    folds = [(f, f.early_stop) for f in result.folds]
    if not folds or any(e is None for _, e in folds):
        return None
    rows = [(f, e) for f, e in folds if e is not None]
    fixed = [f.test.f1_mean for f, _ in rows]
    early = [float(e["f1_mean"]) for _, e in rows]
    first = rows[0][1]
    return {
        "patience": first["patience"],
        "monitor": first["monitor"],
        "f1_fixed": summarize(fixed),
        "f1_early": summarize(early),
        "f1_difference": float(np.mean(np.subtract(early, fixed))),
        "epochs_fixed": [int(e["epochs_fixed"]) for _, e in rows],
        "epochs_early": [int(e["epochs_run"]) for _, e in rows],
        "training_s_fixed": sum(float(e["training_s_fixed"]) for _, e in rows),
        "training_s_early": sum(float(e["training_s"]) for _, e in rows),
    }


def early_stop_line(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: the range of F1 differences and the share of training time early stopping
    would have taken, over every fine-tuned model of the run."""
    first = next(iter(rows.values()))
    differences = [r["f1_difference"] for r in rows.values()]
    fixed = sum(r["training_s_fixed"] for r in rows.values())
    early = sum(r["training_s_early"] for r in rows.values())
    share = f"{early / fixed:.0%}" if fixed > 0 else "n/a"
    return (
        f"early stopping (patience {first['patience']} on {first['monitor']}) would have changed "
        f"test F1 by {min(differences):+.4f} to {max(differences):+.4f} and taken {share} of the "
        "fixed epochs' training time (report.md)"
    )


class PhaseClock:
    """Wall time of this invocation per phase, and the training throughput of the whole run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def summary(self, trained: Sequence[ProtocolResult], total: float) -> dict[str, Any]:
        """Phases of this invocation, and image-steps / training seconds recorded per epoch by
        every fine-tuning fold (so folds reused from an earlier invocation still count)."""
        steps = sum(len(f.history) * len(f.train_ids) for r in trained for f in r.folds)
        seconds = sum(float(h["seconds"]) for r in trained for f in r.folds for h in f.history)
        return {
            "total_s": total,
            "phases_s": dict(self.seconds),
            "training_image_steps": steps,
            "training_s": seconds,
            "image_steps_per_s": steps / seconds if seconds > 0 else None,
        }


def timing_line(timing: Mapping[str, Any]) -> str:
    """One line: total and per-phase wall time, and the training throughput."""
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in timing["phases_s"].items())
    rate = timing["image_steps_per_s"]
    speed = (
        f"; training {timing['training_image_steps']} image-steps in {timing['training_s']:.0f} s "
        f"({rate:.1f}/s, validation included)"
        if rate
        else ""
    )
    return f"wall time {timing['total_s']:.0f} s ({phases}){speed}"


def _overlays(
    data: Dataset,
    model: LoadedSam,
    result: ProtocolResult,
    out: Path,
    figures: Path,
    cache: EmbeddingCache,
    s: ReproduceSettings,
) -> dict[str, str]:
    """Best and worst test images of the point-prompt model (paper Figs. 6/7)."""
    rows = sorted((r.f1, r.id, f.fold) for f in result.folds for r in f.test.per_image)
    picks = {"worst": rows[:3], "best": rows[-3:][::-1]}
    index = {ident: i for i, ident in enumerate(data.ids)}
    initial = {k: v.clone() for k, v in model.sam.mask_decoder.state_dict().items()}
    paths = {}
    try:
        for kind, chosen in picks.items():
            items = []
            for f1, ident, fold in chosen:
                segmenter = Finetuner.load(
                    out / "finetune" / "points" / f"fold_{fold}",
                    model,
                    cache=cache,
                    device=s.device,
                )
                sample = data[index[ident]]
                prob = next(
                    iter(segmenter.predict_proba(SampleList([sample]), resolution="original"))
                )
                items.append(
                    (ident, sample.image, sample.require_mask(), prob >= segmenter.threshold, f1)
                )
            name = f"overlays_{kind}.png"
            plot_overlays(
                items,
                figures / name,
                f"{kind.capitalize()} test images, point prompts (cf. Figs. 6/7)",
            )
            paths[f"overlays_{kind}"] = f"figures/{name}"
    finally:
        model.sam.mask_decoder.load_state_dict(initial)
    return paths


def _early_stop_section(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    first = next(iter(rows.values()))
    return [
        f"## Early stopping (patience {first['patience']} on {first['monitor']}) vs the fixed "
        "epochs",
        "",
        "Measured in this run: every fine-tuning trained all its epochs and recorded the decoder "
        "early stopping would have kept (on a CPU exactly what a run with that patience gives); "
        "both were swept on validation and scored on the same test images. Training seconds are "
        "those of the epochs each would have run, as timed here.",
        "",
        markdown_table(
            ["model", "F1 fixed", "F1 early stop", "difference", "epochs per fold", "training s"],
            [
                [
                    name,
                    format_pm(*r["f1_fixed"]),
                    format_pm(*r["f1_early"]),
                    f"{r['f1_difference']:+.4f}",
                    f"{', '.join(map(str, r['epochs_fixed']))} -> "
                    f"{', '.join(map(str, r['epochs_early']))}",
                    f"{r['training_s_fixed']:.0f} -> {r['training_s_early']:.0f}",
                ]
                for name, r in rows.items()
            ],
        ),
        "",
    ]


def _pm(row: dict[str, Any], key: str) -> str:
    return format_pm(row[f"{key}_mean"], row[f"{key}_std"])


def render_report(results: dict[str, Any]) -> str:
    """``report.md`` from ``results.json`` content (every number in it comes from there)."""
    meta = results["meta"]
    lines = []
    if meta["random_weights"]:
        lines.append(
            f"**These numbers are not meaningful: SAM has RANDOM weights ({meta['checkpoint']}).** "
            "They show that the pipeline runs, not how good SAM is."
        )
    else:
        lines.append(f"SAM checkpoint `{meta['checkpoint']}`.")
    lines += [
        "",
        f"# Reproduction report: {meta['dataset']}",
        "",
        f"- checkpoint: `{meta['checkpoint']}` (SAM {meta['variant']}, sha256 `{meta['sha256']}`)",
        f"- data: {meta['n_images']} images; {meta['folds']}-fold cross-validation (test fold i, "
        f"validation fold i+1, training on the rest), seed {meta['seed']}",
        f"- fine-tuning: {meta['epochs']} epochs; evaluation resolution: {meta['resolution']}",
        "- **oracle**: box prompts (`box`, `both`) come from the ground-truth mask at test time, as in "
        "the paper; point prompts never read the test mask",
        f"- image-encoder calls: {meta['encoder_calls']} (one per distinct image at most)",
        f"- samprompt {meta['samprompt_version']}; {timing_line(results['timing'])}"
        if "timing" in results
        else f"- samprompt {meta['samprompt_version']}; {meta['seconds']:.0f} s",
        "",
    ]
    zs = results["zero_shot"]
    lines += [
        "## Zero-shot SAM (paper Tables 1/2)",
        "",
        markdown_table(
            ["prompt", "F1", "IoU", "oracle"],
            [
                [k, _pm(v, "f1"), _pm(v, "iou"), "yes" if v["oracle"] else "no"]
                for k, v in zs.items()
            ],
        ),
        "",
    ]
    sweep = results["sweep"]
    thresholds = [r["threshold"] for r in next(iter(sweep.values()))]
    lines += [
        "## Threshold sweep on validation, fine-tuned (paper Tables 3/4): mean F1 over folds",
        "",
        markdown_table(
            ["threshold", *sweep.keys()],
            [
                [f"{t:.2f}", *[f"{sweep[k][i]['f1_mean']:.3f}" for k in sweep]]
                for i, t in enumerate(thresholds)
            ],
        ),
        "",
    ]
    lines += [
        "## Learning-rate x weight-decay grid on validation (Section 5.4), point prompts",
        "",
        markdown_table(
            ["lr", "weight decay", "validation F1"],
            [
                [f"{g['lr']:g}", f"{g['weight_decay']:g}", f"{g['val_f1']:.3f}"]
                for g in results["grid"]
            ],
        ),
        "",
        f"Chosen: lr {results['chosen']['lr']:g}, weight decay {results['chosen']['weight_decay']:g}.",
        "",
    ]
    ft = results["finetuned"]
    lines += [
        "## Fine-tuned mask decoder (paper Tables 7/8)",
        "",
        markdown_table(
            ["prompt", "F1", "IoU", "thresholds per fold", "oracle"],
            [
                [
                    k,
                    _pm(v, "f1"),
                    _pm(v, "iou"),
                    ", ".join(f"{t:.2f}" for t in v["thresholds"]),
                    "yes" if v["oracle"] else "no",
                ]
                for k, v in ft.items()
            ],
        ),
        "",
    ]
    if results["cross_dataset"]:
        lines += [
            "## Cross-dataset (paper Tables 5/6)",
            "",
            markdown_table(
                ["prompt", "F1", "IoU"],
                [[k, _pm(v, "f1"), _pm(v, "iou")] for k, v in results["cross_dataset"].items()],
            ),
            "",
        ]
    if results.get("early_stopping"):
        lines += _early_stop_section(results["early_stopping"])
    rows = [
        ["mean-mask prior (floor)", _pm(results["prior"], "f1"), _pm(results["prior"], "iou")],
        [
            f"U-Net (MONAI, from scratch, {results['unet']['seconds']:.0f} s CPU)",
            _pm(results["unet"], "f1"),
            _pm(results["unet"], "iou"),
        ],
    ]
    rows += [[f"zero-shot SAM, {k}", _pm(v, "f1"), _pm(v, "iou")] for k, v in zs.items()]
    rows += [[f"fine-tuned SAM, {k}", _pm(v, "f1"), _pm(v, "iou")] for k, v in ft.items()]
    lines += [
        "## Comparison (paper Table 9)",
        "",
        markdown_table(["method", "F1", "IoU"], rows),
        "",
    ]
    figs = results["figures"]
    lines += ["## Figures", "", f"![learning curve]({figs['learning_curve']})", ""]
    for key in ("overlays_best", "overlays_worst"):
        if key in figs:
            lines += [f"![{key}]({figs[key]})", ""]
    return "\n".join(lines)
