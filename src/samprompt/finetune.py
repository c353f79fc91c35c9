"""The :class:`Finetuner`: trains SAM's mask decoder only, on cached image embeddings.

Per step: embeddings come memory-mapped from the :class:`~samprompt.embeddings.EmbeddingCache`,
prompts from the strategy, targets are the masks at 256x256, and the frozen prompt encoder plus
the trainable mask decoder run in one batched forward (:func:`~samprompt.decoder.decode_low_res`).
The epochs run in the loop every trainer shares (:mod:`samprompt.training`).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from samprompt import distributed
from samprompt.atomic import write_json_atomic
from samprompt.config import FinetuneConfig, check_device
from samprompt.data.sample import Dataset, Sample, as_dataset
from samprompt.early_stopping import EarlyStopOutcome, EarlyStopProbe
from samprompt.embeddings import EmbeddingCache
from samprompt.errors import ConfigError, SampromptError
from samprompt.evaluate import Evaluator, SweepResult
from samprompt.hashing import tensors_sha256
from samprompt.model import LoadedSam
from samprompt.prompts.calls import (
    fit_strategy,
    load_strategy_state,
    prompt_lr,
    prompt_tokens,
    refine_passes,
    strategy_state,
)
from samprompt.prompts.strategy import PromptStrategy
from samprompt.prompts.tokens import DecoderAndPrompt, PromptTokens
from samprompt.run_identity import describe_model, describe_strategy
from samprompt.runs import RunFolder, released_on_error
from samprompt.saved import load_sam_model, save_sam_model
from samprompt.segmenter import SamSegmenter
from samprompt.training.loop import (
    EpochHandler,
    checkpoint_every,
    observe_probe,
    on_record,
    run_epochs,
    track_best,
)
from samprompt.training.records import EpochRecord, loss_function
from samprompt.training.sam_step import SamStep, SplitTensors
from samprompt.training.state import RunState

__all__ = ["EpochRecord", "FitResult", "Finetuner", "loss_function"]

logger = logging.getLogger(__name__)


@attrs.define(eq=False)
class FitResult:
    """What :meth:`Finetuner.fit` returns.

    Attributes
    ----------
    history : list of EpochRecord
        One record per epoch trained (including epochs before a resume).
    best_epoch : int
        Epoch (1-based) with the lowest validation loss; its decoder is kept when
        ``config.keep_best``.
    threshold : float
        Threshold chosen on validation by the sweep.
    sweep : SweepResult
        The validation sweep.
    segmenter : SamSegmenter
        The fine-tuned model, ready for :class:`~samprompt.Evaluator` or prediction.
    strategy_state : dict
        The fitted strategy's ``state_dict()``.
    early_stop : EarlyStopOutcome or None
        With ``config.compare_patience``: what early stopping would have given in this run.

    Examples
    --------
    >>> result = tuner.fit(train, val)  # doctest: +SKIP
    >>> result.best_epoch, result.threshold, len(result.history)  # doctest: +SKIP
    (97, 0.55, 100)
    """

    history: list[EpochRecord]
    best_epoch: int
    threshold: float
    sweep: SweepResult
    segmenter: SamSegmenter
    strategy_state: dict[str, Any]
    early_stop: EarlyStopOutcome | None = None

    @property
    def decoder_state(self) -> dict[str, torch.Tensor]:
        """The fine-tuned mask decoder's weights."""
        return dict(self.segmenter.model.sam.mask_decoder.state_dict())


class Finetuner:
    """Fine-tunes only SAM's mask decoder with a prompt strategy.

    Parameters
    ----------
    model : LoadedSam
        From :func:`samprompt.load_sam`; its decoder is trained in place.
    strategy : PromptStrategy
        Makes training and inference prompts; fitted on the training split by :meth:`fit`.
    config : FinetuneConfig, optional
        Training settings (defaults: the paper's).
    cache : EmbeddingCache, optional
        Embedding cache (default: the user cache folder, see
        :func:`samprompt.embeddings.default_cache_dir`).
    out_dir : str, pathlib.Path or RunFolder, optional
        Run folder: checkpoints, then the saved model (``decoder.safetensors`` + ``model.json``).
        A path is claimed for this run (:class:`~samprompt.runs.RunFolder`); a ``RunFolder``
        already claimed by a protocol (a cross-validation fold) is used as it is.
    progress : bool
        Show progress bars.

    Notes
    -----
    :meth:`fit` claims ``out_dir`` before any work: a folder holding another run (other model,
    strategy, config or data) is refused with the differences named (``RunFolderError``) unless
    ``overwrite``, and one holding this same run is only continued with ``resume``. A loss or a
    weight that becomes non-finite stops training with ``TrainingDivergedError`` naming the
    epoch; nothing from that epoch is saved.

    Examples
    --------
    >>> from samprompt import Finetuner, FinetuneConfig, get_strategy, load_sam
    >>> from samprompt.data import make_phantoms
    >>> data = make_phantoms(12, 128)
    >>> tuner = Finetuner(load_sam("random:tiny"), get_strategy("mean-points"),
    ...                   FinetuneConfig(epochs=2, lr=1e-4), progress=False)  # doctest: +SKIP
    >>> result = tuner.fit(data[:8], data[8:])  # doctest: +SKIP
    >>> len(result.history)  # doctest: +SKIP
    2
    """

    def __init__(
        self,
        model: LoadedSam,
        strategy: PromptStrategy,
        config: FinetuneConfig | None = None,
        *,
        cache: EmbeddingCache | None = None,
        out_dir: str | Path | RunFolder | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.strategy = strategy
        config = config or FinetuneConfig()
        check_device(config.device)
        if config.lr is None:
            config = config.replace(lr=model.recommended_lr)
        self.config = config
        self.cache = cache or EmbeddingCache(progress=progress)
        self.out_dir = out_dir if isinstance(out_dir, RunFolder | None) else Path(out_dir)
        self.progress = progress
        self.on_epoch_end: list[Callable[[EpochRecord], None]] = []
        self._reading: dict[str, Any] | None = None

    def run_identity(self, train: Dataset, val: Dataset) -> dict[str, Any]:
        """What this run is: base model, strategy, configuration and data (see
        :mod:`samprompt.run_identity`)."""
        return {
            "model": describe_model(self.model),
            "strategy": describe_strategy(self.strategy),
            "config": self.config.to_dict(),
            "data": {"train": train.fingerprint(), "val": val.fingerprint()},
        }

    def fit(
        self,
        train: Dataset | Sequence[Sample],
        val: Dataset | Sequence[Sample],
        *,
        resume: bool = False,
        overwrite: bool = False,
    ) -> FitResult:
        """Fit the strategy on ``train``, train the decoder, pick the threshold on ``val``.

        ``train`` and ``val`` hold masks; the strategy sees ``train`` only. ``resume`` continues
        from ``out_dir/checkpoint.pt`` (on CPU exactly as an uninterrupted run); ``overwrite``
        replaces what ``out_dir`` holds. See the class notes for the folder rules and errors.
        """
        cfg = self.config
        train_ds, val_ds = _non_empty(train, val)
        identity = self.run_identity(train_ds, val_ds)
        self._reading = train_ds.reading_record()
        folder = self._claim(identity, resume, overwrite)
        with released_on_error(folder if self.out_dir is not folder else None):
            checkpoint = folder.load_checkpoint(identity) if folder and resume else None
            self.model.sam.to(cfg.device)
            tokens = self._fit_strategy(train_ds, checkpoint)
            train_split = self._prepare(train_ds, None)
            val_split = self._prepare(val_ds, self.strategy)
            encoder_hash = tensors_sha256(self.model.sam.image_encoder.state_dict())
            state = self._initial_state(identity, checkpoint, tokens)
            step = self._step(state, train_split, val_split, tokens)
            run_epochs(
                step, state, epochs=cfg.epochs, handlers=self._handlers(folder), patience=cfg.patience,
                desc="fine-tuning", progress=self.progress,
            )  # fmt: skip
            self._check_encoder(encoder_hash)
            result = self._result(state, val_split)
            self._finish(folder, result)
        return result

    # ------------------------------------------------------------ the parts of fit
    def _check_encoder(self, before: str) -> None:
        if tensors_sha256(self.model.sam.image_encoder.state_dict()) != before:
            raise SampromptError("internal error: the frozen image encoder changed during training")

    def _step(
        self,
        state: RunState,
        train: SplitTensors,
        val: SplitTensors,
        tokens: PromptTokens | None,
    ) -> SamStep:
        cfg = self.config
        if distributed.world_size() > 1 and refine_passes(self.strategy):
            raise ConfigError(
                f"prompt strategy {self.strategy.name!r} refines its prompt over passes, which "
                "train in one process only; run without torchrun"
            )
        ddp = distributed.wrap_decoder(self.model.sam, cfg.multimask_output, cfg.device, tokens)
        return SamStep(
            self.model, self.strategy, cfg, train, val, state.optimizer, loss_function(cfg), ddp,
            tokens,
        )  # fmt: skip

    def _claim(self, identity: dict[str, Any], resume: bool, overwrite: bool) -> RunFolder | None:
        """Claim ``out_dir`` for this run before any work is done (other ranks only read it)."""
        if self.out_dir is None:
            return None
        if isinstance(self.out_dir, RunFolder):
            return self.out_dir
        if not distributed.is_main():
            return RunFolder(self.out_dir, identity, "same")
        folder = RunFolder.claim(self.out_dir, identity, overwrite=overwrite)
        folder.check_resumable(resume)
        return folder

    def _fit_strategy(
        self, train: Dataset, checkpoint: dict[str, Any] | None
    ) -> PromptTokens | None:
        """Fit (or restore) the strategy; its learned prompt, if any, on the training device."""
        if checkpoint is not None:
            load_strategy_state(self.strategy, checkpoint["strategy_state"])
        else:
            fit_strategy(self.strategy, train)
        tokens = prompt_tokens(self.strategy, self.model.sam)
        return None if tokens is None else tokens.to(self.config.device).requires_grad_(True)

    def _prepare(self, dataset: Dataset, strategy: PromptStrategy | None) -> SplitTensors:
        """Embed a split once (each rank its share under torchrun) and build its targets; the
        validation split also gets its inference prompts."""
        cfg = self.config
        index = self.cache.embed(
            self.model,
            dataset,
            device=cfg.device,
            rank=distributed.rank(),
            world_size=distributed.world_size(),
        )
        distributed.barrier()
        if torch.device(cfg.device).type == "cuda":
            # Held on the GPU for the whole run: no host-to-device copy per step. On a CPU the
            # page cache already serves the files, and a batch costs the same either way.
            index = index.to_resident(cfg.device)
        return SplitTensors.build(dataset, index, self.model.low_res_size, cfg.device, strategy)

    def _initial_state(
        self,
        identity: dict[str, Any],
        checkpoint: dict[str, Any] | None,
        tokens: PromptTokens | None,
    ) -> RunState:
        """A fresh state, or the checkpoint's; a learned prompt trains in the same optimizer
        (its own learning rate) and is kept with the decoder as one module."""
        cfg, decoder = self.config, self.model.sam.mask_decoder
        lr = float(cfg.lr or 0)
        groups: list[dict[str, Any]] = [
            {"params": [p for p in decoder.parameters() if p.requires_grad]}
        ]
        module: torch.nn.Module = decoder
        if tokens is not None:
            groups.append({"params": list(tokens.parameters()), "lr": prompt_lr(self.strategy, lr)})
            module = DecoderAndPrompt(decoder, tokens)
        optim_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        optimizer = optim_cls(groups, lr=lr, weight_decay=cfg.weight_decay)
        if checkpoint is not None:
            logger.info("resuming %s after epoch %d", self.out_dir, checkpoint["epoch"])
            return RunState.from_checkpoint(checkpoint, module, optimizer)
        probe = EarlyStopProbe(cfg.compare_patience) if cfg.compare_patience is not None else None
        extra = strategy_state(self.strategy)
        return RunState(module, optimizer, identity, probe=probe, extra=extra)

    def _handlers(self, folder: RunFolder | None) -> list[EpochHandler]:
        cfg = self.config
        handlers = [
            track_best(cfg.monitor),
            observe_probe(cfg.keep_best),
            on_record(self.on_epoch_end),
        ]
        if folder is not None and distributed.is_main():
            save = folder.save_checkpoint
            handlers.append(
                checkpoint_every(
                    cfg.checkpoint_every, cfg.epochs, lambda s: save(s.to_checkpoint())
                )
            )
        return handlers

    def _result(self, state: RunState, val: SplitTensors) -> FitResult:
        """Keep the best decoder (``keep_best``), then pick the threshold on validation."""
        cfg = self.config
        if cfg.keep_best and state.best_epoch:
            state.module.load_state_dict(state.best_weights)
        state.module.eval()
        segmenter = SamSegmenter(
            self.model,
            self.strategy,
            self.cache,
            batch_size=cfg.batch_size,
            device=cfg.device,
            precision=cfg.precision,
            multimask_output=cfg.multimask_output,
        )
        segmenter.remember(val.dataset, val.index)
        sweep = Evaluator(cfg.eval_resolution, cfg.thresholds).threshold_sweep(
            segmenter, val.dataset
        )
        segmenter.threshold = sweep.best_threshold
        return FitResult(
            state.history,
            state.best_epoch or len(state.history),
            sweep.best_threshold,
            sweep,
            segmenter,
            strategy_state(self.strategy),
            self._early_stop_outcome(state, sweep, segmenter, val.dataset),
        )

    def _finish(self, folder: RunFolder | None, result: FitResult) -> None:
        """Save the model into a folder this run claimed itself and mark it finished (the
        checkpoint, with the optimizer's moments, is dropped); a folder handed in by a protocol
        is finished by that protocol."""
        if folder is not None and distributed.is_main():
            self.save(result, folder.root)
            if not isinstance(self.out_dir, RunFolder):
                folder.finish()
        distributed.barrier()

    def _early_stop_outcome(
        self, state: RunState, sweep: SweepResult, segmenter: SamSegmenter, val: Dataset
    ) -> EarlyStopOutcome | None:
        """The probe's decoder with its own validation threshold; the run's own result where
        the rule never fired before the last epoch (early stopping would have changed nothing)."""
        cfg, probe = self.config, state.probe
        if probe is None:
            return None
        trained = state.module
        fixed = len(state.history)
        if probe.epochs_run is None or probe.decoder_state is None or probe.epochs_run >= fixed:
            return EarlyStopOutcome(
                patience=probe.patience,
                monitor=cfg.monitor,
                epochs_run=fixed,
                epochs_fixed=fixed,
                kept_epoch=state.best_epoch if cfg.keep_best and state.best_epoch else fixed,
                threshold=sweep.best_threshold,
                sweep=sweep,
                decoder_state=copy.deepcopy(trained.state_dict()),
            )
        outcome = EarlyStopOutcome(
            patience=probe.patience,
            monitor=cfg.monitor,
            epochs_run=probe.epochs_run,
            epochs_fixed=fixed,
            kept_epoch=probe.kept_epoch or probe.epochs_run,
            threshold=sweep.best_threshold,
            sweep=sweep,
            decoder_state=probe.decoder_state,
        )
        with outcome.applied(trained):
            own = Evaluator(cfg.eval_resolution, cfg.thresholds).threshold_sweep(segmenter, val)
        return attrs.evolve(outcome, threshold=own.best_threshold, sweep=own)

    def save(self, result: FitResult, folder: str | Path) -> Path:
        """Write the model folder (``decoder.safetensors``, ``model.json``, ``history.json``)."""
        folder = Path(folder)
        save_sam_model(
            folder,
            self.model,
            self.strategy,
            threshold=result.threshold,
            config=self.config.to_dict(),
            extra={
                "best_epoch": result.best_epoch,
                "sweep": result.sweep.rows(),
                **({"reading": self._reading} if self._reading else {}),
            },
        )
        write_json_atomic(folder / "history.json", [attrs.asdict(r) for r in result.history])
        return folder

    @staticmethod
    def load(
        folder: str | Path,
        checkpoint: str | Path | LoadedSam | None = None,
        *,
        cache: EmbeddingCache | None = None,
        device: str = "cpu",
    ) -> SamSegmenter:
        """Load a saved model folder onto its base SAM checkpoint.

        Parameters
        ----------
        folder : str or pathlib.Path
            A folder written by :meth:`save` (or ``samprompt finetune``).
        checkpoint : str, pathlib.Path or LoadedSam, optional
            The base SAM checkpoint (or a loaded model to reuse); default: the one recorded in
            ``model.json``. A checkpoint whose sha256 differs from the recorded one is refused.
        """
        return load_sam_model(folder, checkpoint, cache=cache, device=device)


def _non_empty(
    train: Dataset | Sequence[Sample], val: Dataset | Sequence[Sample]
) -> tuple[Dataset, Dataset]:
    train_ds, val_ds = as_dataset(train), as_dataset(val)
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise SampromptError(
            f"need training and validation samples, got {len(train_ds)} and {len(val_ds)}"
        )
    return train_ds, val_ds


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))
