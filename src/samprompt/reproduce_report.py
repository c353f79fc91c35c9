"""``report.md`` of ``samprompt reproduce``, rendered from a typed
:class:`~samprompt.reproduce_result.ReproduceResult`: every number in it comes from there."""

from __future__ import annotations

from collections.abc import Mapping

from samprompt.metrics import Scores
from samprompt.report import format_pm, markdown_table
from samprompt.reproduce_result import EarlyStopRow, ReproduceResult, SummaryRow

__all__ = ["early_stop_line", "render_report"]


def _pm(scores: Scores, key: str) -> str:
    if key == "f1":
        return format_pm(scores.f1_mean, scores.f1_std)
    return format_pm(scores.iou_mean, scores.iou_std)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def early_stop_line(rows: Mapping[str, EarlyStopRow]) -> str:
    """One line: the range of F1 differences and the share of training time early stopping
    would have taken, over every fine-tuned model of the run."""
    first = next(iter(rows.values()))
    differences = [r.f1_difference for r in rows.values()]
    fixed = sum(r.training_s_fixed for r in rows.values())
    early = sum(r.training_s_early for r in rows.values())
    share = f"{early / fixed:.0%}" if fixed > 0 else "n/a"
    return (
        f"early stopping (patience {first.patience} on {first.monitor}) would have changed "
        f"test F1 by {min(differences):+.4f} to {max(differences):+.4f} and taken {share} of the "
        "fixed epochs' training time (report.md)"
    )


def _header(result: ReproduceResult) -> list[str]:
    meta = result.meta
    warning = [
        f"**These numbers are not meaningful: SAM has RANDOM weights ({meta.checkpoint}).** "
        "They show that the pipeline runs, not how good SAM is.",
        "",
    ]
    return [
        *(warning if meta.random_weights else []),
        f"# Reproduction report: {meta.dataset}",
        "",
        f"- checkpoint: `{meta.checkpoint}` (SAM {meta.variant}, sha256 `{meta.sha256}`)",
        f"- data: {meta.n_images} images; {meta.folds}-fold cross-validation (test fold i, "
        f"validation fold i+1, training on the rest), seed {meta.seed}",
        f"- budget `{meta.budget}`: fine-tuning {meta.epochs} epochs"
        f"{' at most (early stopping)' if meta.budget == 'converged' else ''}; "
        f"evaluation resolution: {meta.resolution}",
        "- **oracle**: box prompts (`box`, `both`) come from the ground-truth mask at test time, "
        "as in the paper; point prompts never read the test mask",
        f"- image-encoder calls in the last invocation: {meta.encoder_calls} (one per distinct "
        "image at most; images an earlier invocation encoded come from the cache)",
        f"- samprompt {meta.samprompt_version}; {result.timing.line()}",
        "",
    ]


def _zero_shot(result: ReproduceResult) -> list[str]:
    rows = [
        [k, _pm(v.scores, "f1"), _pm(v.scores, "iou"), _yes(v.oracle)]
        for k, v in result.zero_shot.items()
    ]
    return [
        "## Zero-shot SAM (paper Tables 1/2)",
        "",
        markdown_table(["prompt", "F1", "IoU", "oracle"], rows),
        "",
    ]


def _sweep(result: ReproduceResult) -> list[str]:
    sweep = result.sweep
    thresholds = [r.threshold for r in next(iter(sweep.values()))]
    rows = [
        [f"{t:.2f}", *[f"{sweep[k][i].f1_mean:.3f}" for k in sweep]]
        for i, t in enumerate(thresholds)
    ]
    return [
        "## Threshold sweep on validation, fine-tuned (paper Tables 3/4): mean F1 over folds",
        "",
        markdown_table(["threshold", *sweep.keys()], rows),
        "",
    ]


def _grid(result: ReproduceResult) -> list[str]:
    rows = [[f"{g.lr:g}", f"{g.weight_decay:g}", f"{g.val_f1:.3f}"] for g in result.grid]
    return [
        "## Learning-rate x weight-decay grid on validation (Section 5.4), point prompts",
        "",
        markdown_table(["lr", "weight decay", "validation F1"], rows),
        "",
        f"Chosen: lr {result.chosen.lr:g}, weight decay {result.chosen.weight_decay:g}.",
        "",
    ]


def _finetuned(result: ReproduceResult) -> list[str]:
    rows = [
        [
            k,
            _pm(v.scores, "f1"),
            _pm(v.scores, "iou"),
            ", ".join(f"{t:.2f}" for t in v.thresholds),
            _yes(v.oracle),
        ]
        for k, v in result.finetuned.items()
    ]
    return [
        "## Fine-tuned mask decoder (paper Tables 7/8)",
        "",
        markdown_table(["prompt", "F1", "IoU", "thresholds per fold", "oracle"], rows),
        "",
    ]


def _cross_dataset(result: ReproduceResult) -> list[str]:
    if not result.cross_dataset:
        return [
            "## Cross-dataset (paper Tables 5/6)",
            "",
            "Not run: no second dataset was given (`--test-data`).",
            "",
        ]
    rows = [[k, _pm(v.scores, "f1"), _pm(v.scores, "iou")] for k, v in result.cross_dataset.items()]
    return [
        "## Cross-dataset (paper Tables 5/6)",
        "",
        "Each prompt type's fold models of the cross-validation above, each tested on every "
        "image of the second dataset at the threshold its own validation chose (no training on "
        "the second): mean ± std over the fold models.",
        "",
        markdown_table(["prompt", "F1", "IoU"], rows),
        "",
    ]


def _early_stopping(rows: Mapping[str, EarlyStopRow]) -> list[str]:
    if not rows:
        return []
    first = next(iter(rows.values()))
    table = [
        [
            name,
            format_pm(*r.f1_fixed),
            format_pm(*r.f1_early),
            f"{r.f1_difference:+.4f}",
            f"{', '.join(map(str, r.epochs_fixed))} -> {', '.join(map(str, r.epochs_early))}",
            f"{r.training_s_fixed:.0f} -> {r.training_s_early:.0f}",
        ]
        for name, r in rows.items()
    ]
    return [
        f"## Early stopping (patience {first.patience} on {first.monitor}) vs the fixed epochs",
        "",
        "Measured in this run: every fine-tuning trained all its epochs and recorded the decoder "
        "early stopping would have kept (on a CPU exactly what a run with that patience gives); "
        "both were swept on validation and scored on the same test images. Training seconds are "
        "those of the epochs each would have run, as timed here.",
        "",
        markdown_table(
            ["model", "F1 fixed", "F1 early stop", "difference", "epochs per fold", "training s"],
            table,
        ),
        "",
    ]


def _comparison(result: ReproduceResult) -> list[str]:
    def row(name: str, scores: Scores) -> list[str]:
        return [name, _pm(scores, "f1"), _pm(scores, "iou")]

    unet: SummaryRow = result.unet
    rows = [
        row("mean-mask prior (floor)", result.prior),
        row(f"U-Net (MONAI, from scratch, {unet.seconds or 0:.0f} s training)", unet.scores),
    ]
    if result.control is not None:
        rows.append(
            row(
                f"random-encoder control ({result.control_checkpoint}, point prompts, "
                f"{result.control.seconds or 0:.0f} s training)",
                result.control.scores,
            )
        )
    rows += [row(f"zero-shot SAM, {k}", v.scores) for k, v in result.zero_shot.items()]
    rows += [
        row(f"fine-tuned SAM, {k} ({v.seconds or 0:.0f} s training)", v.scores)
        for k, v in result.finetuned.items()
    ]
    return ["## Comparison (paper Table 9)", "", markdown_table(["method", "F1", "IoU"], rows), ""]


def _figures(result: ReproduceResult) -> list[str]:
    figs = result.figures
    lines = ["## Figures", "", f"![learning curve]({figs['learning_curve']})", ""]
    for key in ("overlays_best", "overlays_worst"):
        if key in figs:
            lines += [f"![{key}]({figs[key]})", ""]
    return lines


def render_report(result: ReproduceResult) -> str:
    """``report.md``: header, then the paper's tables in its order, then the figures."""
    lines = _header(result)
    for section in (_zero_shot, _sweep, _grid, _finetuned, _cross_dataset):
        lines += section(result)
    lines += _early_stopping(result.early_stopping)
    lines += _comparison(result)
    lines += _figures(result)
    return "\n".join(lines)
