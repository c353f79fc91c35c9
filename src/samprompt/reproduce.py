"""``samprompt reproduce``: every table and figure of the paper, plus its baselines, in one run.

The output folder is a resumable record: each sub-run (a zero-shot prompt type, a grid point, a
fine-tuned fold, a U-Net fold) lives in its own folder and is read back, not recomputed, when it
finished; all sub-runs share one embedding cache, so each image is encoded once. The result is a
typed :class:`~samprompt.reproduce_result.ReproduceResult`; ``report.md`` is rendered from it by
:mod:`samprompt.reproduce_report`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from samprompt._version import source_version
from samprompt.baselines import UNetConfig
from samprompt.config import FinetuneConfig
from samprompt.data.sample import Dataset, SampleList
from samprompt.embeddings import EmbeddingCache
from samprompt.errors import ConfigError, RandomWeightsWarning
from samprompt.finetune import Finetuner
from samprompt.model import LoadedSam, load_sam
from samprompt.phase_clock import PhaseClock
from samprompt.plugins import get_strategy
from samprompt.protocols import (
    ProtocolResult,
    cross_dataset_folds,
    cross_validate,
    unet_cross_validate,
)
from samprompt.report import plot_learning_curve, plot_overlays
from samprompt.reproduce_plan import (
    Plan,
    ProtocolProgress,
    UnitCosts,
    Workload,
    finished_in,
    probe_costs,
)
from samprompt.reproduce_report import early_stop_line, render_report
from samprompt.reproduce_result import (
    EarlyStopRow,
    GridPoint,
    ReproduceMeta,
    ReproduceResult,
    SummaryRow,
    SweepRow,
    Timing,
)
from samprompt.run_identity import describe_model
from samprompt.runs import RunFolder, holds_run

__all__ = [
    "BUDGETS",
    "PROMPT_TYPES",
    "ReproduceSettings",
    "budget_settings",
    "estimate_reproduce",
    "run_reproduce",
]

#: The paper's prompt types and the strategies that implement them.
PROMPT_TYPES: dict[str, str] = {"box": "perturbed-box", "points": "mean-points", "both": "combined"}

#: The run folder's record of wall time per phase over every invocation (:class:`PhaseClock`).
WALL_TIME = "wall_time.json"


#: What each ``--budget`` changes in the paper's protocol (:class:`ReproduceSettings`'s
#: defaults). ``converged`` stops every fine-tuning 5 epochs after its best validation loss
#: (at most 40 epochs; the random-encoder control at most 30) and runs the lr x weight-decay grid
#: for 10 epochs on fold 0; ``quick``
#: is a smoke test on at most 24 images.
BUDGETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "converged": {
        "epochs": 40,
        "patience": 5,
        "compare_patience": None,
        "grid_epochs": 10,
        "control_epochs": 30,
    },
    "quick": {
        "epochs": 2,
        "folds": 2,
        "lrs": (1e-4, 1e-3),
        "weight_decays": (0.0,),
        "grid_epochs": 1,
        "unet_epochs": 2,
        "control_epochs": 2,
    },
}


def budget_settings(name: str) -> dict[str, Any]:
    """The settings ``--budget name`` changes (see :data:`BUDGETS`)."""
    if name not in BUDGETS:
        raise ConfigError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}")
    return dict(BUDGETS[name])


@attrs.frozen
class ReproduceSettings:
    """What ``samprompt reproduce`` runs (defaults: the paper's protocol).

    Build a budget's settings with :meth:`for_budget`. ``patience`` and ``monitor`` apply early
    stopping (:class:`~samprompt.FinetuneConfig`) to every fine-tuning, the grid's included; off
    in the paper's protocol. Without ``patience``, every fine-tuning also records what early
    stopping with ``compare_patience`` epochs would have given (:mod:`samprompt.early_stopping`),
    and the report sets its F1 and training time beside the fixed epochs'; None turns that off.
    ``control`` names the random-weights model of the random-encoder control (trained with point
    prompts on the same folds for ``control_epochs``; None skips it). ``overwrite`` empties
    ``out`` first (without it a folder holding another reproduction is refused). ``data_path``
    and ``test_data_path`` name the datasets' folders, which ``out`` may not overlap.
    """

    out: Path
    budget: str = attrs.field(default="paper")
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
    control: str | None = "random:tiny"
    control_epochs: int = 30
    batch_size: int = 8
    device: str = "cpu"
    precision: str = "fp32"
    quick_images: int = 24
    overwrite: bool = False
    data_path: Path | None = None
    test_data_path: Path | None = None

    @budget.validator
    def _known_budget(self, _: attrs.Attribute[str], value: str) -> None:
        budget_settings(value)

    @classmethod
    def for_budget(cls, budget: str = "paper", **overrides: Any) -> ReproduceSettings:
        """``budget``'s settings (:data:`BUDGETS`), then ``overrides`` (e.g. ``out``)."""
        return cls(**{**budget_settings(budget), **overrides, "budget": budget})

    @property
    def quick(self) -> bool:
        """A smoke-test run (budget ``quick``): at most ``quick_images`` images."""
        return self.budget == "quick"


@attrs.define(eq=False)
class _Run:
    """What every phase of one reproduction shares."""

    data: Dataset
    test_data: Dataset | None
    model: LoadedSam
    settings: ReproduceSettings
    folder: RunFolder
    cache: EmbeddingCache
    progress: bool
    log: Callable[[str], None]
    clock: PhaseClock
    control: LoadedSam | None = None
    bar: ProtocolProgress | None = None
    trained: list[ProtocolResult] = attrs.field(factory=list)

    def ticker(self, out: Path) -> Callable[[int], None]:
        """``on_fold`` for the sub-run in ``out``: advances the protocol's bar by each finished
        fold (its plan key is the fold's path in the run folder) and saves the wall-time
        record."""
        last, prefix = [time.perf_counter()], out.relative_to(self.folder.root).as_posix()

        def tick(fold: int) -> None:
            now = time.perf_counter()
            if self.bar is not None:
                self.bar.done(f"{prefix}/fold_{fold}", now - last[0])
            last[0] = now
            self.clock.save()

        return tick

    def phase(self, name: str) -> AbstractContextManager[None]:
        """Add the block's wall time to phase ``name`` (this invocation's and the run's)."""
        return self.clock.phase(name)

    def sub(self, *parts: str) -> Path:
        """A sub-run's folder inside the reproduction folder."""
        return self.folder.root.joinpath(*parts)

    def cv(
        self, name: str, config: FinetuneConfig | None, out: Path, **kwargs: Any
    ) -> ProtocolResult:
        s = self.settings
        return cross_validate(
            self.data, kwargs.pop("model", self.model), get_strategy(name), config, k=s.folds,
            seed=s.seed, cache=self.cache, progress=self.progress, out_dir=out,
            on_fold=self.ticker(out), **kwargs,
        )  # fmt: skip


def _base_config(s: ReproduceSettings) -> FinetuneConfig:
    return FinetuneConfig(
        epochs=s.epochs,
        patience=s.patience,
        monitor=s.monitor,
        compare_patience=s.compare_patience if s.patience is None else None,
        batch_size=s.batch_size,
        seed=s.seed,
        device=s.device,
        precision=s.precision,
    )


def _zero_shot(run: _Run) -> dict[str, SummaryRow]:
    rows = {}
    for label, name in PROMPT_TYPES.items():
        run.log(f"[zero-shot] {label} ({name})")
        with run.phase("zero-shot"):
            result = run.cv(name, None, run.sub("zero_shot", label))
            rows[label] = SummaryRow.of(result)
    return rows


def _grid(run: _Run, base: FinetuneConfig) -> tuple[GridPoint, ...]:
    s, grid = run.settings, []
    for lr in s.lrs:
        for wd in s.weight_decays:
            run.log(f"[grid] lr={lr:g} weight decay={wd:g}")
            config = base.replace(lr=lr, weight_decay=wd, epochs=s.grid_epochs or s.epochs)
            label = f"lr{lr:g}_wd{wd:g}"
            with run.phase("lr x wd grid"):
                result = run.cv("mean-points", config, run.sub("grid", label), folds=[0])
            run.trained.append(result)
            grid.append(GridPoint(lr, wd, max(r["f1_mean"] for r in result.folds[0].sweep)))
    return tuple(grid)


def _finetune(run: _Run, config: FinetuneConfig) -> dict[str, ProtocolResult]:
    s, finetuned = run.settings, {}
    for label, name in PROMPT_TYPES.items():
        run.log(f"[fine-tune] {label} ({name}), {s.folds} folds x {s.epochs} epochs")
        with run.phase("fine-tuning"):
            finetuned[label] = run.cv(name, config, run.sub("finetune", label))
        run.trained.append(finetuned[label])
    return finetuned


def _unet(run: _Run) -> SummaryRow:
    s = run.settings
    run.log(f"[U-Net] {s.folds} folds x {s.unet_epochs} epochs")
    with run.phase("U-Net"):
        unet = unet_cross_validate(
            run.data,
            UNetConfig(epochs=s.unet_epochs, seed=s.seed, device=s.device),
            k=s.folds,
            seed=s.seed,
            out_dir=run.sub("unet"),
            progress=run.progress,
            on_fold=run.ticker(run.sub("unet")),
        )
    return SummaryRow.of(unet, seconds=training_seconds(unet))  # as recorded, resumes included


def _control(run: _Run, config: FinetuneConfig) -> SummaryRow | None:
    """The random-encoder control: point prompts on the same folds, a random-weights SAM."""
    s = run.settings
    if run.control is None:
        return None
    run.log(f"[control] {s.control}, point prompts, {s.folds} folds x {s.control_epochs} epochs")
    config = config.replace(lr=None, epochs=s.control_epochs)
    with run.phase("control"):
        result = run.cv("mean-points", config, run.sub("control"), model=run.control)
    run.trained.append(result)
    return SummaryRow.of(result, seconds=training_seconds(result))


def _cross_dataset(run: _Run, finetuned: dict[str, ProtocolResult]) -> dict[str, ProtocolResult]:
    """Each prompt type's fold models, scored on all of the second dataset (no training)."""
    cross: dict[str, ProtocolResult] = {}
    if run.test_data is None:
        return cross
    for label, folds in finetuned.items():
        run.log(f"[cross-dataset] {label}: its {len(folds.folds)} fold models on the test data")
        with run.phase("cross-dataset"):
            cross[label] = cross_dataset_folds(
                folds, run.data, run.test_data, run.model, cache=run.cache,
                out_dir=run.sub("cross_dataset_folds", label), progress=run.progress,
                on_fold=run.ticker(run.sub("cross_dataset_folds", label)),
            )  # fmt: skip
    return cross


def training_seconds(result: ProtocolResult) -> float:
    """Training wall time of a protocol's folds, as recorded epoch by epoch (resumes included)."""
    return sum(float(h["seconds"]) for f in result.folds for h in f.history)


def _figures(run: _Run, points: ProtocolResult) -> dict[str, str]:
    figures = run.sub("figures")
    plot_learning_curve(
        [dict(h) for h in points.folds[0].history],
        figures / "learning_curve.png",
        "Fine-tuning, point prompts, fold 0 (cf. paper Fig. 5)",
    )
    paths = {"learning_curve": "figures/learning_curve.png"}
    paths.update(_overlays(run, points, figures))
    return paths


def _meta(run: _Run, dataset_name: str, seconds: float) -> ReproduceMeta:
    s, model = run.settings, run.model
    return ReproduceMeta(
        samprompt_version=source_version(),
        dataset=dataset_name,
        n_images=len(run.data),
        test_dataset_images=len(run.test_data) if run.test_data is not None else None,
        checkpoint=model.spec,
        sha256=model.sha256,
        random_weights=model.is_random,
        variant=model.variant,
        seed=s.seed,
        folds=s.folds,
        epochs=s.epochs,
        quick=s.quick,
        budget=s.budget,
        encoder_calls=run.cache.stats.encoder_calls,
        seconds=seconds,
    )


def _quick_subsets(
    data: Dataset, test_data: Dataset | None, s: ReproduceSettings
) -> tuple[Dataset, Dataset | None]:
    if not s.quick or len(data) <= s.quick_images:
        return data, test_data
    keep = np.sort(np.random.default_rng(s.seed).permutation(len(data))[: s.quick_images])
    if test_data is not None and len(test_data) > s.quick_images:
        test_data = test_data.subset(np.arange(s.quick_images))
    return data.subset(keep), test_data


def _identity(
    data: Dataset, test_data: Dataset | None, model: LoadedSam, s: ReproduceSettings
) -> dict[str, Any]:
    settings = attrs.asdict(
        s, filter=lambda a, _: a.name not in ("out", "overwrite", "data_path", "test_data_path")
    )
    return {
        "reproduce": settings,
        "model": describe_model(model),
        "data": data.fingerprint(),
        "test_data": test_data.fingerprint() if test_data is not None else None,
    }


def _claim(
    data: Dataset, test_data: Dataset | None, model: LoadedSam, s: ReproduceSettings
) -> RunFolder:
    inputs = {"--data": s.data_path, "--test-data": s.test_data_path}
    identity = _identity(data, test_data, model, s)
    return RunFolder.claim(s.out, identity, overwrite=s.overwrite, inputs=inputs)


def _control_model(s: ReproduceSettings) -> LoadedSam | None:
    if s.control is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # the control is random on purpose
        return load_sam(s.control, seed=s.seed)


def _plan(
    data: Dataset,
    test_data: Dataset | None,
    model: LoadedSam,
    control: LoadedSam | None,
    cache: EmbeddingCache,
    s: ReproduceSettings,
    costs: UnitCosts | None = None,
) -> Plan:
    """Time one unit of each kind of work here (unless ``costs`` are given), then cost every
    step of the protocol."""
    costs = costs or probe_costs(
        model, data, cache, batch_size=s.batch_size, control=control, test_data=test_data
    )
    workload = Workload(
        n=len(data),
        n_test=len(test_data) if test_data is not None else 0,
        missing=len(cache.missing(model, data)),
        missing_test=len(cache.missing(model, test_data)) if test_data is not None else 0,
        folds=s.folds,
        epochs=s.epochs,
        grid_epochs=s.grid_epochs or s.epochs,
        unet_epochs=s.unet_epochs,
        control_epochs=s.control_epochs if control is not None else None,
        zero_shot=tuple(PROMPT_TYPES),
        grid=tuple(f"lr{lr:g}_wd{wd:g}" for lr in s.lrs for wd in s.weight_decays),
        finetune=tuple(PROMPT_TYPES),
    )
    return workload.plan(costs)


def estimate_reproduce(
    data: Dataset,
    model: LoadedSam,
    settings: ReproduceSettings,
    *,
    test_data: Dataset | None = None,
    cache: EmbeddingCache,
    costs: UnitCosts | None = None,
) -> Plan:
    """What :func:`run_reproduce` would cost here, without running it or touching
    ``settings.out`` (the probe embeds a few images into ``cache``; ``costs`` given: no probe,
    these unit costs). When ``settings.out`` holds this run already, its finished sub-run folds
    are left out: the estimate is of what is left."""
    data, test_data = _quick_subsets(data, test_data, settings)
    plan = _plan(data, test_data, model, _control_model(settings), cache, settings, costs)
    if holds_run(settings.out, _identity(data, test_data, model, settings)):
        return plan.without(finished_in(settings.out))
    return plan


def _start(run: _Run) -> None:
    """Time the units of work, print the estimate, embed everything the run will need."""
    s = run.settings
    full = _plan(run.data, run.test_data, run.model, run.control, run.cache, s)
    plan = full.without(finished_in(run.folder.root))  # a resumed run prices what is left
    threads = torch.get_num_threads()
    run.log(f"{plan.line(capped=s.patience is not None)}; {threads} thread{'s' * (threads != 1)}")
    run.bar = ProtocolProgress(plan, enabled=run.progress)
    with run.phase("embedding"), run.bar.step("embedding"):
        run.cache.embed(run.model, run.data, device=s.device)
        if run.test_data is not None:
            run.cache.embed(run.model, run.test_data, device=s.device)
        if run.control is not None:
            run.cache.embed(run.control, run.data, device=s.device)


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
) -> ReproduceResult:
    """Run the whole protocol into ``settings.out``; ``results.json`` holds the result's
    :meth:`~samprompt.reproduce_result.ReproduceResult.to_dict`. Prints the estimated wall
    time first (units of work timed on this machine), then one progress bar over the run."""
    s, tick = settings, time.perf_counter()
    data, test_data = _quick_subsets(data, test_data, s)
    folder = _claim(data, test_data, model, s)
    cache = cache or EmbeddingCache(folder.path("cache"), progress=progress)
    clock = PhaseClock.resume(folder.path(WALL_TIME), started_before=folder.status == "same")
    run = _Run(data, test_data, model, s, folder, cache, progress, log, clock, _control_model(s))
    _start(run)
    zero_shot, grid = _zero_shot(run), _grid(run, _base_config(s))
    chosen = max(grid, key=lambda g: (g.val_f1, -g.lr, -g.weight_decay))
    config = _base_config(s).replace(lr=chosen.lr, weight_decay=chosen.weight_decay)
    finetuned = _finetune(run, config)
    unet, control = _unet(run), _control(run, config)
    cross = _cross_dataset(run, finetuned)
    if run.bar is not None:
        run.bar.close()
    result = ReproduceResult(
        zero_shot=zero_shot,
        grid=grid,
        chosen=chosen,
        finetuned={k: SummaryRow.of(v, training_seconds(v)) for k, v in finetuned.items()},
        sweep={k: SweepRow.table(v) for k, v in finetuned.items()},
        unet=unet,
        prior=SummaryRow.of(finetuned["points"]).prior,
        cross_dataset={k: SummaryRow.of(v) for k, v in cross.items()},
        early_stopping=_early_rows(finetuned),
        figures=_figures(run, finetuned["points"]),
        meta=_meta(run, dataset_name, time.perf_counter() - tick),
        timing=Timing.of(run.trained, run.clock, time.perf_counter() - tick),
        control=control,
        control_checkpoint=s.control if control is not None else None,
    )
    _write(folder, result, log)
    return result


def _early_rows(finetuned: dict[str, ProtocolResult]) -> dict[str, EarlyStopRow]:
    return {
        f"fine-tuned {label}": row
        for label, result in finetuned.items()
        if (row := EarlyStopRow.of(result)) is not None
    }


def _write(folder: RunFolder, result: ReproduceResult, log: Callable[[str], None]) -> None:
    folder.write_json("results.json", result.to_dict())
    folder.write_text("report.md", render_report(result))
    folder.finish()
    log(result.timing.line())
    if result.early_stopping:
        log(early_stop_line(result.early_stopping))
    log(f"report: {folder.path('report.md')}")


def _overlays(run: _Run, result: ProtocolResult, figures: Path) -> dict[str, str]:
    """Best and worst test images of the point-prompt model (paper Figs. 6/7)."""
    rows = sorted((r.f1, r.id, f.fold) for f in result.folds for r in f.test.per_image)
    picks = {"worst": rows[:3], "best": rows[-3:][::-1]}
    data, model = run.data, run.model
    index = {ident: i for i, ident in enumerate(data.ids)}
    initial = {k: v.clone() for k, v in model.sam.mask_decoder.state_dict().items()}
    paths = {}
    try:
        for kind, chosen in picks.items():
            items = []
            for f1, ident, fold in chosen:
                segmenter = Finetuner.load(
                    run.sub("finetune", "points", f"fold_{fold}"),
                    model,
                    cache=run.cache,
                    device=run.settings.device,
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
