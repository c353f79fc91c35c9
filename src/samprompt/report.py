"""Reports: ``metrics.json`` beside a Markdown summary, learning curves and mask overlays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from samprompt.atomic import write_atomic
from samprompt.runs import RunFolder

__all__ = [
    "format_pm",
    "markdown_table",
    "plot_comparison",
    "plot_label_efficiency",
    "plot_learning_curve",
    "plot_learning_curves",
    "plot_overlays",
    "write_metrics",
]


def format_pm(mean: float, std: float, digits: int = 3) -> str:
    """``"0.912 ± 0.034"``."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_metrics(
    run: RunFolder, metrics: Mapping[str, Any], title: str, notes: Sequence[str] = ()
) -> Path:
    """Write ``metrics.json`` and ``summary.md`` (summary first, then the per-image table)."""
    run.write_json("metrics.json", dict(metrics))
    lines = [f"# {title}", ""]
    lines += [f"- {n}" for n in notes]
    lines += [
        "",
        markdown_table(
            ["metric", "mean ± std"],
            [
                ["F1 (Dice)", format_pm(metrics["f1_mean"], metrics["f1_std"])],
                ["IoU", format_pm(metrics["iou_mean"], metrics["iou_std"])],
            ],
        ),
    ]
    if "prior_f1_mean" in metrics:
        lines += [
            "",
            "Mean-mask prior (the floor): F1 "
            + format_pm(metrics["prior_f1_mean"], metrics["prior_f1_std"])
            + ", IoU "
            + format_pm(metrics["prior_iou_mean"], metrics["prior_iou_std"]),
        ]
    lines += [
        "",
        f"Threshold: {metrics.get('threshold')}; resolution: {metrics.get('resolution')}",
        "",
        "## Per image",
        "",
    ]
    rows = metrics.get("per_image", [])
    cols = [c for c in ("fold", "id", "f1", "iou") if rows and c in rows[0]]
    lines.append(
        markdown_table(
            cols, [[f"{r[c]:.4f}" if isinstance(r[c], float) else r[c] for c in cols] for r in rows]
        )
    )
    run.write_text("summary.md", "\n".join(lines) + "\n")
    return run.root


def _save(fig: Any, path: Path, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Lay out, write (creating the folder) and close a figure."""
    fig.tight_layout(rect=rect)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
    return path


def plot_learning_curve(
    history: Sequence[Mapping[str, float]], path: str | Path, title: str = "Learning curve"
) -> Path:
    """Train and validation loss per epoch (left axis) and validation F1 (right axis)."""
    path = Path(path)
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    ax.plot(
        epochs, [h["train_loss"] for h in history], "o-", label="train loss", color="tab:blue", ms=3
    )
    ax.plot(
        epochs,
        [h["val_loss"] for h in history],
        "s-",
        label="validation loss",
        color="tab:orange",
        ms=3,
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (Dice + focal)")
    ax.grid(alpha=0.3)
    right = ax.twinx()
    right.plot(
        epochs,
        [h["val_f1"] for h in history],
        "^--",
        label="validation F1 (t=0.5)",
        color="tab:green",
        ms=3,
    )
    right.set_ylabel("validation F1")
    right.set_ylim(0, 1)
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    ax.legend(handles, labels, loc="center right")
    ax.set_title(title)
    return _save(fig, path)


def plot_overlays(
    items: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]],
    path: str | Path,
    title: str,
) -> Path:
    """Image with ground truth (green contour) and prediction (red fill), one panel per item.

    ``items`` holds ``(id, image, truth, prediction, f1)`` with image, truth and prediction in the
    same pixel frame.
    """
    path = Path(path)
    n = max(1, len(items))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.9), dpi=110, squeeze=False)
    for ax, (ident, image, truth, pred, f1) in zip(axes[0], items, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        overlay = np.zeros((*pred.shape, 4))
        overlay[pred] = (1.0, 0.1, 0.1, 0.35)
        ax.imshow(overlay)
        ax.contour(truth.astype(float), levels=[0.5], colors="lime", linewidths=1.0)
        ax.set_title(f"{ident}\nF1 {f1:.3f}", fontsize=8)
        ax.axis("off")
    for ax in axes[0][len(items) :]:
        ax.axis("off")
    fig.suptitle(f"{title} — green: ground truth, red: prediction", fontsize=9)
    return _save(fig, path, rect=(0, 0, 1, 0.9))


def plot_comparison(bars: Sequence[tuple[str, float, float]], path: str | Path, title: str) -> Path:
    """Horizontal bars of mean F1 with a ±std whisker, one per ``(label, mean, std)``."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.4, 0.6 * len(bars) + 1.2), dpi=110)
    labels = [b[0] for b in bars][::-1]
    means = [b[1] for b in bars][::-1]
    stds = [b[2] for b in bars][::-1]
    ax.barh(labels, means, xerr=stds, color="tab:blue", alpha=0.8, capsize=3)
    for y, (mean, std) in enumerate(zip(means, stds, strict=True)):
        # the value sits right of the whisker, or inside the bar when there is no room
        right = mean + std + 0.02
        if right < 0.9:
            ax.text(right, y, f"{mean:.3f}", va="center", fontsize=8)
        else:
            ax.text(0.02, y, f"{mean:.3f}", va="center", fontsize=8, color="white")
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (Dice), mean ± std over images")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def plot_learning_curves(
    histories: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path, title: str
) -> Path:
    """Validation F1 per epoch of several runs on one axis (one line per run)."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for label, history in histories.items():
        ax.plot(
            [h["epoch"] for h in history], [h["val_f1"] for h in history], "o-", ms=3, label=label
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation F1")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    return _save(fig, path)


def plot_label_efficiency(
    lines: Mapping[str, Sequence[tuple[int, float, float]]], path: str | Path, title: str
) -> Path:
    """Test F1 (mean ± std over folds) against the number of training images, one line per
    method; ``lines[name]`` holds ``(images, mean, std)`` points."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for label, points in lines.items():
        sizes, means, stds = zip(*points, strict=True)
        ax.errorbar(sizes, means, yerr=stds, marker="o", ms=4, capsize=3, label=label)
    ax.set_xscale("log", base=2)
    all_sizes = sorted({p[0] for points in lines.values() for p in points})
    ax.set_xticks(all_sizes, [str(s) for s in all_sizes])
    ax.set_xlabel("training images (validation and test folds unchanged)")
    ax.set_ylabel("test F1, mean ± std over folds")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title)
    return _save(fig, path)
