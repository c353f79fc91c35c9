"""The :class:`Finetuner`: trains SAM's mask decoder only, on cached image embeddings.

Per step: embeddings come memory-mapped from the :class:`~samprompt.embeddings.EmbeddingCache`,
prompts from the strategy, targets are the masks at 256x256, and the frozen prompt encoder plus
the trainable mask decoder run in one batched forward (:func:`~samprompt.decoder.decode_low_res`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from monai.losses import DiceCELoss, DiceFocalLoss
from tqdm.auto import tqdm

from samprompt import distributed
from samprompt.atomic import write_json_atomic
from samprompt.config import FinetuneConfig, check_device
from samprompt.data.preprocess import low_res_target
from samprompt.data.sample import Dataset, as_dataset
from samprompt.decoder import decode_low_res
from samprompt.distributed import DecoderModule
from samprompt.early_stopping import EarlyStopOutcome, EarlyStopProbe
from samprompt.embeddings import EmbeddingCache, EmbeddingIndex
from samprompt.errors import (
    CheckpointError,
    RunFolderError,
    SampromptError,
    TrainingDivergedError,
)
from samprompt.evaluate import Evaluator, SweepResult
from samprompt.hashing import tensors_sha256
from samprompt.metrics import f1_iou
from samprompt.model import LoadedSam
from samprompt.prompts.strategy import PromptStrategy
from samprompt.run_identity import (
    claim_run_folder,
    describe_model,
    describe_strategy,
    differences,
)
from samprompt.saved import save_sam_model
from samprompt.segmenter import SamSegmenter

__all__ = ["EpochRecord", "FitResult", "Finetuner"]

logger = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


@attrs.frozen
class EpochRecord:
    """Losses and validation F1 (threshold 0.5, low-res) after one epoch.

    Examples
    --------
    >>> EpochRecord(epoch=1, train_loss=0.8, val_loss=0.7, val_f1=0.6, seconds=2.0).val_f1
    0.6
    """

    epoch: int
    train_loss: float
    val_loss: float
    val_f1: float
    seconds: float


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


def loss_function(config: FinetuneConfig) -> torch.nn.Module:
    if config.loss == "dice_ce":
        return DiceCELoss(
            sigmoid=True, lambda_dice=config.lambda_dice, lambda_ce=config.lambda_other
        )
    return DiceFocalLoss(
        sigmoid=True, lambda_dice=config.lambda_dice, lambda_focal=config.lambda_other
    )


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
    out_dir : str or pathlib.Path, optional
        Run folder: checkpoints, then the saved model (``decoder.safetensors`` + ``model.json``).
    progress : bool
        Show progress bars.

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
        out_dir: str | Path | None = None,
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
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.on_epoch_end: list[Callable[[EpochRecord], None]] = []
        self._ddp: torch.nn.Module | None = None
        self._identity: dict[str, Any] = {}

    # ------------------------------------------------------------------ steps
    def _batch(
        self, dataset: Dataset, index: EmbeddingIndex, positions: Sequence[int], epoch: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and targets of a batch; ``epoch=None`` uses inference prompts."""
        side = self.model.low_res_size
        samples = [dataset[i] for i in positions]
        if epoch is None:
            prompts = [self.strategy.inference_prompt(s) for s in samples]
        else:
            prompts = [
                self.strategy.training_prompt(
                    s, np.random.default_rng([self.config.seed, epoch, int(i)])
                )
                for s, i in zip(samples, positions, strict=True)
            ]
        targets = torch.from_numpy(
            np.stack([low_res_target(s.require_mask(), side) for s in samples])
        )
        targets = targets[:, None].float().to(self.config.device)
        embeddings = index.load(positions, self.config.device)
        if self._ddp is not None and epoch is not None:
            return self._ddp(embeddings, prompts), targets
        logits = decode_low_res(
            self.model.sam, embeddings, prompts, multimask_output=self.config.multimask_output
        )
        return logits, targets

    def _autocast(self) -> Any:
        if self.config.precision != "bf16":
            return nullcontext()
        return torch.autocast(
            device_type=torch.device(self.config.device).type, dtype=torch.bfloat16
        )

    def _validate(
        self, val: Dataset, index: EmbeddingIndex, loss_fn: torch.nn.Module
    ) -> tuple[float, float]:
        """Validation loss and F1 (threshold 0.5); each rank scores its share, results gathered."""
        mine = list(range(distributed.rank(), len(val), distributed.world_size()))
        weighted_loss, f1s = 0.0, []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(mine), self.config.batch_size):
                positions = mine[start : start + self.config.batch_size]
                logits, targets = self._batch(val, index, positions, None)
                logits = logits.float()
                weighted_loss += float(loss_fn(logits, targets)) * len(positions)
                f1, _ = f1_iou((logits > 0).cpu()[:, 0], targets.bool().cpu()[:, 0])
                f1s.extend(f1.tolist())
        gathered = distributed.all_gather((weighted_loss, f1s))
        all_f1 = [f for _, part in gathered for f in part]
        return sum(loss for loss, _ in gathered) / len(val), float(np.mean(all_f1))

    # ------------------------------------------------------------ checkpoint
    def _save_checkpoint(self, state: dict[str, Any]) -> None:
        if self.out_dir is None or not distributed.is_main():
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.out_dir / (CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.out_dir / CHECKPOINT)

    def _load_checkpoint(self) -> dict[str, Any] | None:
        if self.out_dir is None or not (self.out_dir / CHECKPOINT).is_file():
            return None
        path = self.out_dir / CHECKPOINT
        try:
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path}: unreadable training checkpoint ({exc})") from exc
        found = differences(self._identity, state.get("identity") or {})
        if found:
            raise CheckpointError(
                f"{path}: was written by another run ({'; '.join(found[:4])}); use a new --out "
                "folder, the same settings and data, or --overwrite"
            )
        return state

    # ------------------------------------------------------------------- fit
    def run_identity(self, train: Dataset, val: Dataset) -> dict[str, Any]:
        """What this run is: base model, strategy, configuration and data (see
        :mod:`samprompt.run_identity`)."""
        return {
            "model": describe_model(self.model),
            "strategy": describe_strategy(self.strategy),
            "config": self.config.to_dict(),
            "data": {"train": train.fingerprint(), "val": val.fingerprint()},
        }

    def _claim(self, identity: dict[str, Any], resume: bool, overwrite: bool) -> None:
        """Check ``out_dir`` may hold this run before any work is done."""
        if self.out_dir is None or not distributed.is_main():
            return
        status = claim_run_folder(self.out_dir, identity, overwrite=overwrite)
        if status != "same" or resume:
            return
        if (self.out_dir / CHECKPOINT).is_file():
            raise RunFolderError(
                f"{self.out_dir} holds an unfinished run with these same settings; pass --resume "
                "(resume=True) to continue it, or --overwrite (overwrite=True) to start again"
            )
        if (self.out_dir / "model.json").is_file():
            raise RunFolderError(
                f"{self.out_dir} already holds this finished run; pass --overwrite "
                "(overwrite=True) to train it again, or choose a new output folder"
            )

    def fit(
        self,
        train: Dataset | Sequence[Any],
        val: Dataset | Sequence[Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
    ) -> FitResult:
        """Fit the strategy on ``train``, train the decoder, pick the threshold on ``val``.

        Parameters
        ----------
        train, val : Dataset or sequence of Sample
            Training and validation samples (with masks). The strategy sees ``train`` only.
        resume : bool
            Continue from ``out_dir/checkpoint.pt`` when present. On CPU the result equals an
            uninterrupted run with the same seed.
        overwrite : bool
            Replace whatever ``out_dir`` holds. Without it, a folder holding another run (other
            model, strategy, config or data) is refused with the differences named, and one
            holding this same run is only continued with ``resume``.

        Raises
        ------
        RunFolderError
            ``out_dir`` cannot be used (see ``overwrite``).
        TrainingDivergedError
            A loss or a weight became non-finite; the message names the epoch. Nothing from the
            diverged epoch is saved.

        Returns
        -------
        FitResult
        """
        cfg = self.config
        train_ds, val_ds = as_dataset(train), as_dataset(val)
        if len(train_ds) == 0 or len(val_ds) == 0:
            raise SampromptError(
                f"need training and validation samples, got {len(train_ds)} and {len(val_ds)}"
            )
        identity = self.run_identity(train_ds, val_ds)
        self._claim(identity, resume, overwrite)
        self._identity = identity
        sam = self.model.sam.to(cfg.device)
        decoder = sam.mask_decoder
        state = self._load_checkpoint() if resume else None
        if state is not None:
            self.strategy.load_state_dict(state["strategy_state"])
        else:
            self.strategy.fit(train_ds)
        train_index, val_index = self._embed(train_ds), self._embed(val_ds)
        if torch.device(cfg.device).type == "cuda":
            # Held on the GPU for the whole run: no host-to-device copy per step. On a CPU the
            # page cache already serves the files, and a batch costs the same either way (the
            # fp16 -> fp32 conversion dominates; benchmarks/README.md).
            train_index = train_index.to_resident(cfg.device)
            val_index = val_index.to_resident(cfg.device)
        encoder_hash = tensors_sha256(sam.image_encoder.state_dict())
        prompt_encoder_before = copy.deepcopy(sam.prompt_encoder.state_dict())

        if distributed.world_size() > 1:
            from torch.nn.parallel import DistributedDataParallel

            self._ddp = DistributedDataParallel(
                DecoderModule(sam, cfg.multimask_output),
                find_unused_parameters=True,
                device_ids=[torch.device(cfg.device).index or 0]
                if cfg.device.startswith("cuda")
                else None,
            )
        params = [p for p in decoder.parameters() if p.requires_grad]
        optim_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        optimizer = optim_cls(params, lr=float(cfg.lr or 0), weight_decay=cfg.weight_decay)
        loss_fn = loss_function(cfg)
        history: list[EpochRecord] = []
        best_score, best_epoch, best_state = -math.inf, 0, copy.deepcopy(decoder.state_dict())
        start_epoch = 0
        probe = EarlyStopProbe(cfg.compare_patience) if cfg.compare_patience is not None else None
        if state is not None:
            decoder.load_state_dict(state["decoder"])
            optimizer.load_state_dict(state["optimizer"])
            history = [EpochRecord(**r) for r in state["history"]]
            best_score, best_epoch = state["best_score"], state["best_epoch"]
            best_state = state["best_decoder"]
            start_epoch = state["epoch"]
            if probe is not None:
                probe = EarlyStopProbe.from_state_dict(state["early_stop_probe"])
            logger.info("resuming %s after epoch %d", self.out_dir, start_epoch)

        stale = 0 if not history else start_epoch - best_epoch
        bar = tqdm(
            range(start_epoch, cfg.epochs),
            desc="fine-tuning",
            unit="epoch",
            initial=start_epoch,
            total=cfg.epochs,
            disable=not self.progress,
        )
        for epoch in bar:
            if cfg.patience is not None and stale >= cfg.patience:
                logger.info(
                    "early stop after epoch %d: %s best at epoch %d (patience %d)",
                    epoch,
                    cfg.monitor,
                    best_epoch,
                    cfg.patience,
                )
                break
            tick = time.perf_counter()
            decoder.train()
            order = torch.randperm(
                len(train_ds), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            )
            losses, sizes = [], []
            world, me = distributed.world_size(), distributed.rank()
            for start in range(0, len(order), cfg.batch_size):
                batch = order[start : start + cfg.batch_size].tolist()
                # Each rank takes every world-th item of the global batch; weighting its mean loss
                # by its share makes DDP's gradient average equal the single-process batch mean.
                positions = batch[me::world] or batch[:1]
                weight = world * len(batch[me::world]) / len(batch)
                with self._autocast():
                    logits, targets = self._batch(train_ds, train_index, positions, epoch)
                    loss = loss_fn(logits.float(), targets)
                if not torch.isfinite(loss.detach()):
                    raise TrainingDivergedError(
                        f"epoch {epoch + 1}: the training loss is {float(loss.detach()):.4g}, not finite; "
                        f"training stopped and nothing from this epoch was saved (lr={cfg.lr:g}: "
                        "try a lower learning rate)"
                    )
                optimizer.zero_grad(set_to_none=True)
                (loss * weight).backward()
                optimizer.step()
                self._check_frozen(prompt_encoder_before)
                losses.append(float(loss.detach()) * weight / world)
                sizes.append(len(batch))
            if world > 1:
                losses = [sum(parts) for parts in zip(*distributed.all_gather(losses), strict=True)]
            decoder.eval()
            self._check_finite_weights(epoch + 1)
            val_loss, val_f1 = self._validate(val_ds, val_index, loss_fn)
            if not np.isfinite(val_loss):
                raise TrainingDivergedError(
                    f"epoch {epoch + 1}: the validation loss is {val_loss:.4g}, not finite; "
                    f"training stopped and nothing from this epoch was saved (lr={cfg.lr:g})"
                )
            record = EpochRecord(
                epoch + 1,
                float(np.average(losses, weights=sizes)),
                val_loss,
                val_f1,
                time.perf_counter() - tick,
            )
            history.append(record)
            bar.set_postfix(
                train=f"{record.train_loss:.4f}", val=f"{val_loss:.4f}", f1=f"{val_f1:.3f}"
            )
            score = -val_loss if cfg.monitor == "val_loss" else val_f1
            if score > best_score:
                best_score, best_epoch, best_state, stale = (
                    score,
                    epoch + 1,
                    copy.deepcopy(decoder.state_dict()),
                    0,
                )
            else:
                stale += 1
            if probe is not None:
                probe.observe(
                    epoch + 1, stale, best_epoch, best_state, decoder.state_dict(), cfg.keep_best
                )
            for callback in self.on_epoch_end:
                callback(record)
            if cfg.checkpoint_every and (
                (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs
            ):
                self._save_checkpoint(
                    {
                        "epoch": epoch + 1,
                        "decoder": decoder.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "history": [attrs.asdict(r) for r in history],
                        "best_score": best_score,
                        "best_epoch": best_epoch,
                        "best_decoder": best_state,
                        "strategy_state": _jsonable(self.strategy.state_dict()),
                        "identity": self._identity,
                        "early_stop_probe": probe.state_dict() if probe is not None else None,
                    }
                )
        bar.close()
        if tensors_sha256(sam.image_encoder.state_dict()) != encoder_hash:
            raise SampromptError("internal error: the frozen image encoder changed during training")
        if cfg.keep_best and best_epoch:
            decoder.load_state_dict(best_state)
        decoder.eval()
        segmenter = SamSegmenter(
            self.model,
            self.strategy,
            self.cache,
            batch_size=cfg.batch_size,
            device=cfg.device,
            precision=cfg.precision,
            multimask_output=cfg.multimask_output,
        )
        sweep = Evaluator(cfg.eval_resolution, cfg.thresholds).threshold_sweep(segmenter, val_ds)
        segmenter.threshold = sweep.best_threshold
        result = FitResult(
            history,
            best_epoch or len(history),
            sweep.best_threshold,
            sweep,
            segmenter,
            _jsonable(self.strategy.state_dict()),
            self._early_stop_outcome(probe, history, best_epoch, sweep, segmenter, val_ds),
        )
        if self.out_dir is not None and distributed.is_main():
            self.save(result, self.out_dir)
            # The saved model is the run's record now; the resumable state (with the optimizer's
            # moments, several times the decoder's size) is not needed any more.
            (self.out_dir / CHECKPOINT).unlink(missing_ok=True)
        distributed.barrier()
        self._ddp = None
        return result

    def _early_stop_outcome(
        self,
        probe: EarlyStopProbe | None,
        history: Sequence[EpochRecord],
        best_epoch: int,
        sweep: SweepResult,
        segmenter: SamSegmenter,
        val: Dataset,
    ) -> EarlyStopOutcome | None:
        """The probe's decoder with its own validation threshold; the run's own result where
        the rule never fired before the last epoch (early stopping would have changed nothing)."""
        cfg = self.config
        if probe is None:
            return None
        decoder = self.model.sam.mask_decoder
        fixed = len(history)
        if probe.epochs_run is None or probe.decoder_state is None or probe.epochs_run >= fixed:
            return EarlyStopOutcome(
                patience=probe.patience,
                monitor=cfg.monitor,
                epochs_run=fixed,
                epochs_fixed=fixed,
                kept_epoch=best_epoch if cfg.keep_best and best_epoch else fixed,
                threshold=sweep.best_threshold,
                sweep=sweep,
                decoder_state=copy.deepcopy(decoder.state_dict()),
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
        with outcome.applied(decoder):
            own = Evaluator(cfg.eval_resolution, cfg.thresholds).threshold_sweep(segmenter, val)
        return attrs.evolve(outcome, threshold=own.best_threshold, sweep=own)

    def _embed(self, dataset: Dataset) -> EmbeddingIndex:
        """Cache embeddings; under torchrun each rank computes its share, then all ranks wait."""
        index = self.cache.embed(
            self.model,
            dataset,
            device=self.config.device,
            rank=distributed.rank(),
            world_size=distributed.world_size(),
        )
        distributed.barrier()
        return index

    def _check_finite_weights(self, epoch: int) -> None:
        bad = [
            name
            for name, p in self.model.sam.mask_decoder.named_parameters()
            if not bool(torch.isfinite(p).all())
        ]
        if bad:
            raise TrainingDivergedError(
                f"epoch {epoch}: non-finite decoder weights ({', '.join(bad[:3])}); training "
                f"stopped and nothing from this epoch was saved (lr={self.config.lr:g})"
            )

    def _check_frozen(self, before: dict[str, torch.Tensor]) -> None:
        after = self.model.sam.prompt_encoder.state_dict()
        if any(not torch.equal(before[k].to(after[k].device), after[k]) for k in before):
            raise SampromptError(
                "internal error: the frozen prompt encoder changed during training"
            )

    def save(self, result: FitResult, folder: str | Path) -> Path:
        """Write the model folder (``decoder.safetensors``, ``model.json``, ``history.json``)."""
        folder = Path(folder)
        save_sam_model(
            folder,
            self.model,
            self.strategy,
            threshold=result.threshold,
            config=self.config.to_dict(),
            extra={"best_epoch": result.best_epoch, "sweep": result.sweep.rows()},
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
        from samprompt.saved import load_sam_model

        return load_sam_model(folder, checkpoint, cache=cache, device=device)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))
