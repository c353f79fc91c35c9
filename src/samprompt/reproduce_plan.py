"""What a reproduction will cost before it starts, and one progress bar over all of it.

The cost model counts the work of every sub-run of ``samprompt reproduce`` in four units, each
timed on this machine by :func:`probe_costs` before the run starts: encoding one image, one
decoder training image-step, one decoder inference (validation, sweep, test) and one U-Net
training image-step. With early stopping the epochs are a cap, so the estimate is an upper
bound; :class:`ProtocolProgress` recalibrates its ETA from the steps that actually ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import attrs
from tqdm.auto import tqdm

from samprompt.baselines import UNetConfig, train_unet
from samprompt.config import FinetuneConfig
from samprompt.data.sample import Dataset
from samprompt.embeddings import EmbeddingCache
from samprompt.finetune import Finetuner
from samprompt.model import LoadedSam
from samprompt.plugins import get_strategy
from samprompt.runs import FINISHED

__all__ = [
    "Plan",
    "PlanStep",
    "ProtocolProgress",
    "UnitCosts",
    "Workload",
    "finished_in",
    "fit_seconds",
    "format_duration",
    "probe_costs",
]


def format_duration(seconds: float) -> str:
    """``1 h 05 min``, ``12 min``, ``40 s``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


@attrs.frozen
class UnitCosts:
    """Seconds per unit of work, as measured on this machine."""

    encode_s: float
    train_s: float
    eval_s: float
    unet_s: float
    control_encode_s: float = 0.0


def fit_seconds(costs: UnitCosts, epochs: int, train: int, val: int, test: int) -> float:
    """One fine-tuning's cost: ``epochs`` of training steps and validation, then the threshold
    sweep on validation and the test scoring."""
    per_epoch = train * costs.train_s + val * costs.eval_s
    return epochs * per_epoch + (val + test) * costs.eval_s


def finished_in(root: str | Path) -> Callable[[str], bool]:
    """Whether a plan step is a finished sub-run fold of the run folder ``root``: step keys are
    the folds' paths inside it (``"finetune/box/fold_2"``), finished once their completion
    marker is written."""
    return lambda key: (Path(root) / key / FINISHED).is_file()


@attrs.frozen
class PlanStep:
    """One unit of progress (a fold of a sub-run, or the embedding) and its estimated cost;
    a fold's ``key`` is its folder's path inside the run folder."""

    phase: str
    key: str
    seconds: float


@attrs.frozen
class Plan:
    """Every step of a run, in order; ``finished`` counts the steps left out because an earlier
    invocation finished them (:meth:`without`)."""

    steps: tuple[PlanStep, ...]
    finished: int = 0

    @property
    def total_s(self) -> float:
        """The estimated wall time of the whole run."""
        return sum(s.seconds for s in self.steps)

    def by_phase(self) -> dict[str, float]:
        """Estimated seconds per phase, in run order."""
        phases: dict[str, float] = {}
        for step in self.steps:
            phases[step.phase] = phases.get(step.phase, 0.0) + step.seconds
        return phases

    def without(self, done: Callable[[str], bool]) -> Plan:
        """The steps left once the ``done`` ones are left out (the embedding step stays: it
        prices only the images not cached yet)."""
        left = tuple(s for s in self.steps if s.phase == "embedding" or not done(s.key))
        return Plan(left, self.finished + len(self.steps) - len(left))

    def line(self, capped: bool) -> str:
        """The estimate as one line (``capped``: early stopping makes it an upper bound)."""
        parts = ", ".join(f"{k} {format_duration(v)}" for k, v in self.by_phase().items())
        bound = "at most " if capped else ""
        line = (
            f"estimated wall time on this machine: {bound}{format_duration(self.total_s)} ({parts})"
        )
        if self.finished:
            line += f"; {self.finished} finished sub-run fold{'s' * (self.finished != 1)} left out"
        return line


@attrs.frozen
class Workload:
    """The size of a reproduction: images, folds, epochs (caps under early stopping) and the
    sub-runs of each phase, by label."""

    n: int
    n_test: int
    missing: int
    missing_test: int
    folds: int
    epochs: int
    grid_epochs: int
    unet_epochs: int
    control_epochs: int | None
    zero_shot: tuple[str, ...]
    grid: tuple[str, ...]
    finetune: tuple[str, ...]

    def _fold_sizes(self) -> tuple[int, int, int]:
        test = self.n // self.folds
        return self.n - 2 * test, test, test

    def plan(self, costs: UnitCosts) -> Plan:
        """Every step, in the order :func:`~samprompt.reproduce.run_reproduce` runs them."""
        train, val, test = self._fold_sizes()
        folds = range(self.folds)
        steps = [
            PlanStep("embedding", "embedding", (self.missing + self.missing_test) * costs.encode_s)
        ]
        steps += [
            PlanStep("zero-shot", f"zero_shot/{label}/fold_{i}", (val + test) * costs.eval_s)
            for label in self.zero_shot
            for i in folds
        ]
        grid_s = fit_seconds(costs, self.grid_epochs, train, val, test)
        steps += [PlanStep("grid", f"grid/{label}/fold_0", grid_s) for label in self.grid]
        fit_s = fit_seconds(costs, self.epochs, train, val, test)
        steps += [
            PlanStep("fine-tuning", f"finetune/{label}/fold_{i}", fit_s)
            for label in self.finetune
            for i in folds
        ]
        unet_s = self.unet_epochs * (train + val) * costs.unet_s
        steps += [PlanStep("U-Net", f"unet/fold_{i}", unet_s) for i in folds]
        if self.control_epochs is not None:
            encode = self.n * costs.control_encode_s
            control_s = fit_seconds(costs, self.control_epochs, train, val, test)
            steps += [PlanStep("control", f"control/fold_{i}", control_s) for i in folds]
            steps[0] = attrs.evolve(steps[0], seconds=steps[0].seconds + encode)
        if self.n_test:  # each fine-tuned fold model scores every test image; no training
            steps += [
                PlanStep(
                    "cross-dataset",
                    f"cross_dataset_folds/{label}/fold_{i}",
                    self.n_test * costs.eval_s,
                )
                for label in self.finetune
                for i in folds
            ]
        return Plan(tuple(steps))


def _time(fn: object) -> float:
    tick = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - tick


def _encode_seconds(model: LoadedSam, cache: EmbeddingCache, *datasets: Dataset | None) -> float:
    """Seconds to encode one image: encodes (and caches) the first two images not cached yet and
    returns the second's time, so a one-time set-up (exporting and loading the ONNX encoder) is
    not counted once per image."""
    todo = [
        data.subset([i])
        for data in datasets
        if data is not None
        for i in cache.missing(model, data)[:2]
    ]
    seconds = [_time(partial(cache.embed, model, one)) for one in todo[:2]]
    return seconds[-1] if seconds else 0.0


def probe_costs(
    model: LoadedSam,
    data: Dataset,
    cache: EmbeddingCache,
    *,
    batch_size: int = 8,
    control: LoadedSam | None = None,
    test_data: Dataset | None = None,
) -> UnitCosts:
    """Time each unit of work on a few images of ``data`` (restoring the model afterwards).

    Embeds (and caches) the probe images: ``3 * batch_size`` of them, which the run needs anyway.
    """
    encode_s = _encode_seconds(model, cache, data, test_data)
    control_s = _encode_seconds(control, cache, data) if control is not None else 0.0
    n = min(len(data), 3 * batch_size)
    cut = max(1, n - max(1, n // 3))  # at least one image on each side when there are two
    train, val = data.subset(range(cut)), data.subset(range(cut, n) if n > 1 else range(n))
    cache.embed(model, data.subset(range(n)))
    initial = {k: v.clone() for k, v in model.sam.mask_decoder.state_dict().items()}
    config = FinetuneConfig(epochs=1, batch_size=batch_size)
    try:
        tuner = Finetuner(model, get_strategy("mean-points"), config, cache=cache, progress=False)
        fitted = tuner.fit(train, val)
        eval_s = _time(lambda: list(fitted.segmenter.predict_proba(val))) / len(val)
    finally:
        model.sam.mask_decoder.load_state_dict(initial)
    epoch_s = fitted.history[0].seconds
    train_s = max(epoch_s - len(val) * eval_s, 0.0) / len(train)
    unet = train_unet(train, val, UNetConfig(epochs=1, batch_size=batch_size), progress=False)
    unet_s = unet.history[0].seconds / n
    return UnitCosts(encode_s, train_s, eval_s, unet_s, control_s)


class ProtocolProgress:
    """One bar over the whole run, in estimated seconds, with an ETA calibrated on the steps run.

    A step that finishes in under a tenth of its estimate was read back from an earlier
    invocation (resumed): it moves the bar but does not calibrate the ETA.
    """

    def __init__(self, plan: Plan, *, enabled: bool = True) -> None:
        self.estimates: Mapping[str, float] = {s.key: s.seconds for s in plan.steps}
        self.remaining = plan.total_s
        self.spent = 0.0
        self.estimated_spent = 0.0
        self._bar = tqdm(
            total=max(1, round(plan.total_s)),
            desc="reproduce",
            unit="s",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| elapsed {elapsed}{postfix}",
            disable=not enabled,
        )

    @property
    def eta_s(self) -> float:
        """Seconds left: the remaining estimate scaled by actual / estimated so far."""
        ratio = self.spent / self.estimated_spent if self.estimated_spent > 0 else 1.0
        return self.remaining * ratio

    @contextmanager
    def step(self, key: str) -> Iterator[None]:
        """Time the block as step ``key`` and advance the bar by its estimate."""
        tick = time.perf_counter()
        yield
        self.done(key, time.perf_counter() - tick)

    def done(self, key: str, seconds: float) -> None:
        """Step ``key`` took ``seconds`` (a step left out of the plan, finished before this
        invocation, moves nothing)."""
        if key not in self.estimates:
            return
        estimate = self.estimates[key]
        self.remaining = max(0.0, self.remaining - estimate)
        if seconds >= 0.1 * estimate:
            self.spent += seconds
            self.estimated_spent += estimate
        self._bar.update(round(estimate))
        self._bar.set_postfix_str(f"ETA {format_duration(self.eta_s)} ({key} done)")

    def close(self) -> None:
        """End the bar."""
        self._bar.close()
