"""How many labelled images does a user need? Test F1 against the number of training images.

For each size (e.g. 8, 16, 32, 64 and all), every cross-validation fold trains on that many of
its training images (nested: the 8 lie inside the 16, and so on; :func:`~samprompt.data.nested_subset`)
and is validated and tested on its usual folds, for the fine-tuned SAM decoder and the U-Net on
the same subsets. Each size trains for the same number of image-steps as the full training
split (``epochs x full size / size`` epochs, at most ``max_epochs``), so a smaller set is not
also a shorter training. Every (method, size) is a resumable sub-run of ``out``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from samprompt.atomic import write_json_atomic, write_text_atomic
from samprompt.baselines import UNetConfig
from samprompt.config import FinetuneConfig
from samprompt.data.sample import Dataset
from samprompt.embeddings import EmbeddingCache
from samprompt.errors import ConfigError
from samprompt.metrics import summarize
from samprompt.model import LoadedSam
from samprompt.prompts.strategy import PromptStrategy
from samprompt.protocols import ProtocolResult, cross_validate, unet_cross_validate
from samprompt.report import format_pm, markdown_table, plot_label_efficiency
from samprompt.reproduce_plan import (
    Plan,
    PlanStep,
    UnitCosts,
    finished_in,
    fit_seconds,
    probe_costs,
)

__all__ = [
    "LabelEfficiencyRow",
    "LabelEfficiencySettings",
    "estimate_label_efficiency",
    "label_efficiency",
    "label_efficiency_plan",
    "scaled_epochs",
]


@attrs.frozen
class LabelEfficiencyRow:
    """One method at one training size, over the folds."""

    method: str
    images: int
    epochs: int
    f1: tuple[float, float]
    iou: tuple[float, float]

    @classmethod
    def of(
        cls, method: str, images: int, epochs: int, result: ProtocolResult
    ) -> LabelEfficiencyRow:
        """The row of a finished protocol."""
        f1 = summarize([f.test.f1_mean for f in result.folds])
        iou = summarize([f.test.iou_mean for f in result.folds])
        return cls(method, images, epochs, f1, iou)


@attrs.frozen
class LabelEfficiencySettings:
    """What a label-efficiency study runs, shared by the run and its estimate.

    Parameters
    ----------
    sizes : tuple of int or None
        Training images per fold; None is the full training split (8, 16, 32, 64, None).
    unet : UNetConfig or None
        The U-Net's settings on the full split (its epochs are scaled per size like the
        decoder's); None leaves the U-Net out.
    sam : bool
        Whether the SAM decoder runs (False: the U-Net only).
    k : int
        Cross-validation folds (5).
    seed : int
        Seed of the folds, the nested subsets and the shuffling (0).
    max_epochs : int
        Epoch cap of the small sizes (100).

    Raises
    ------
    ConfigError
        When both methods are switched off, or a size is below 1.
    """

    sizes: tuple[int | None, ...] = attrs.field(default=(8, 16, 32, 64, None), converter=tuple)
    unet: UNetConfig | None = attrs.field(factory=UNetConfig)
    sam: bool = True
    k: int = 5
    seed: int = 0
    max_epochs: int = 100

    def __attrs_post_init__(self) -> None:
        if not self.sam and self.unet is None:
            raise ConfigError("nothing to run: both the SAM decoder and the U-Net are switched off")
        if not self.sizes:
            raise ConfigError("no training sizes given")
        if any(s is not None and s < 1 for s in self.sizes):
            raise ConfigError(f"training sizes must be >= 1, got {self.sizes}")

    def full(self, n: int) -> int:
        """Training images of a fold of ``n`` images (the rest is one validation and one test
        fold)."""
        return n - 2 * (n // self.k)

    def resolved_sizes(self, n: int) -> list[int]:
        """The sizes on ``n`` images, None resolved to the full split, sorted, each checked.

        >>> LabelEfficiencySettings(sizes=(32, None, 8, 32)).resolved_sizes(100)
        [8, 32, 60]
        """
        full = self.full(n)
        sizes = sorted({full if s is None else s for s in self.sizes})
        if sizes[-1] > full:
            raise ConfigError(f"a fold trains on {full} images at most; size {sizes[-1]} is larger")
        return sizes


def scaled_epochs(epochs: int, full: int, size: int, max_epochs: int) -> int:
    """Epochs that give ``size`` images the image-steps ``epochs`` give ``full`` images.

    >>> scaled_epochs(8, 80, 16, 100), scaled_epochs(8, 80, 80, 100), scaled_epochs(8, 80, 2, 100)
    (40, 8, 100)
    """
    return max(epochs, min(max_epochs, math.ceil(epochs * full / size)))


def label_efficiency_plan(
    n: int,
    settings: LabelEfficiencySettings,
    costs: UnitCosts,
    *,
    epochs: int,
    missing: int = 0,
    done: Callable[[str], bool] = lambda _: False,
) -> Plan:
    """What :func:`label_efficiency` costs here on ``n`` images: encoding the ``missing`` ones,
    then every fold of every (method, size) sub-run not ``done`` (``done("sam_8/fold_0")``), the
    decoder's ``epochs`` and the U-Net's scaled per size as the run scales them."""
    val = test = n // settings.k
    full = settings.full(n)
    unet_epochs = settings.unet.epochs if settings.unet is not None else None
    steps = [PlanStep("embedding", "embedding", missing * costs.encode_s)]
    for size in settings.resolved_sizes(n):
        for prefix, base in (("sam", epochs if settings.sam else None), ("unet", unet_epochs)):
            if base is None:
                continue
            scaled = scaled_epochs(base, full, size, settings.max_epochs)
            if prefix == "unet":
                phase, seconds = "U-Net", scaled * (size + val) * costs.unet_s
            else:
                phase, seconds = "SAM decoder", fit_seconds(costs, scaled, size, val, test)
            steps += [
                PlanStep(phase, f"{prefix}_{size}/fold_{i}", seconds) for i in range(settings.k)
            ]
    return Plan(tuple(steps)).without(done)


def estimate_label_efficiency(
    data: Dataset,
    model: LoadedSam,
    config: FinetuneConfig,
    out: str | Path,
    settings: LabelEfficiencySettings,
    *,
    cache: EmbeddingCache,
) -> Plan:
    """What :func:`label_efficiency` with these arguments has left to run here: one unit of each
    kind of work timed on a few images (embedded into ``cache``), then every fold of ``out`` not
    finished yet priced (:func:`label_efficiency_plan`). Writes nothing to ``out``."""
    settings.resolved_sizes(len(data))  # a bad size is refused before anything is timed
    costs = probe_costs(model, data, cache, batch_size=config.batch_size)
    return label_efficiency_plan(
        len(data), settings, costs, epochs=config.epochs,
        missing=len(cache.missing(model, data)) if settings.sam else 0,
        done=finished_in(out),
    )  # fmt: skip


def label_efficiency(
    data: Dataset,
    model: LoadedSam,
    strategy: PromptStrategy,
    config: FinetuneConfig,
    out: str | Path,
    settings: LabelEfficiencySettings | None = None,
    *,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[LabelEfficiencyRow]:
    """Both methods at every size of ``settings`` (default :class:`LabelEfficiencySettings`);
    writes ``out/table.md``, ``out/results.json`` and ``out/label_efficiency.png``. The table
    covers this call's rows; a later call with more methods or sizes reuses every finished
    sub-run of ``out``. ``overwrite`` redoes sub-runs that hold other settings (else they are
    refused). With ``log``, the estimated wall time of what is left
    (:func:`label_efficiency_plan`, units timed here first) goes to ``log`` before anything runs."""
    settings = settings or LabelEfficiencySettings()
    root = Path(out)
    full = settings.full(len(data))
    sizes = settings.resolved_sizes(len(data))
    if log is not None:
        cache = cache or EmbeddingCache(progress=progress)
        plan = estimate_label_efficiency(data, model, config, root, settings, cache=cache)
        log(plan.line(capped=config.patience is not None))
    rows = []
    for size in sizes:
        epochs = scaled_epochs(config.epochs, full, size, settings.max_epochs)
        if settings.sam:
            sam_run = cross_validate(
                data, model, strategy, config.replace(epochs=epochs), k=settings.k,
                seed=settings.seed, cache=cache, out_dir=root / f"sam_{size}", progress=progress,
                train_size=size, overwrite=overwrite,
            )  # fmt: skip
            rows.append(
                LabelEfficiencyRow.of(f"SAM decoder, {strategy.name}", size, epochs, sam_run)
            )
        if settings.unet is not None:
            unet_epochs = scaled_epochs(settings.unet.epochs, full, size, settings.max_epochs)
            unet_run = unet_cross_validate(
                data, attrs.evolve(settings.unet, epochs=unet_epochs), k=settings.k,
                seed=settings.seed, out_dir=root / f"unet_{size}", progress=progress,
                train_size=size, overwrite=overwrite,
            )  # fmt: skip
            rows.append(LabelEfficiencyRow.of("U-Net", size, unet_epochs, unet_run))
    _write(root, rows, full)
    return rows


def _write(root: Path, rows: list[LabelEfficiencyRow], full: int) -> None:
    methods = list(dict.fromkeys(r.method for r in rows))
    sizes = sorted({r.images for r in rows})
    cell = {(r.method, r.images): r for r in rows}
    table = [
        [
            str(size) + (" (all)" if size == full else ""),
            *[_cell(cell.get((m, size))) for m in methods],
        ]
        for size in sizes
    ]
    text = markdown_table(["training images", *methods], table)
    write_text_atomic(root / "table.md", text + "\n")
    write_json_atomic(root / "results.json", [_row_dict(r) for r in rows])
    plot_label_efficiency(
        {m: [(r.images, *r.f1) for r in rows if r.method == m] for m in methods},
        root / "label_efficiency.png",
        "Test F1 against the number of labelled training images",
    )


def _cell(row: LabelEfficiencyRow | None) -> str:
    return "—" if row is None else f"{format_pm(*row.f1)} ({row.epochs} ep.)"


def _row_dict(row: LabelEfficiencyRow) -> dict[str, Any]:
    return {
        "method": row.method,
        "images": row.images,
        "epochs": row.epochs,
        "f1_mean": row.f1[0],
        "f1_std": row.f1[1],
        "iou_mean": row.iou[0],
        "iou_std": row.iou[1],
    }
