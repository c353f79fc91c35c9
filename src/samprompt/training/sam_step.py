"""One epoch of SAM's mask decoder on cached embeddings: the SAM side of the shared loop.

Per split, what every epoch needs is built once (:class:`SplitTensors`): the embedding index, the
low-res targets as one tensor and, for validation, the inference prompts (a fitted strategy's
inference prompt does not change during training). A training step then reads only what the
strategy needs to make a training prompt (the sample), and the embeddings.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import attrs
import numpy as np
import torch

from samprompt import distributed
from samprompt.config import FinetuneConfig
from samprompt.data.sample import Dataset
from samprompt.embeddings import EmbeddingIndex
from samprompt.errors import SampromptError, TrainingDivergedError
from samprompt.frames import autocast, low_res_target
from samprompt.metrics import f1_iou
from samprompt.model import LoadedSam
from samprompt.passes import decode_passes
from samprompt.prompts.calls import inference_prompt, training_prompt
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.strategy import PromptStrategy
from samprompt.prompts.tokens import PromptTokens
from samprompt.training.loop import check_finite, weights_finite

__all__ = ["SamStep", "SplitTensors"]


@attrs.frozen(eq=False)
class SplitTensors:
    """A split made ready for training once: samples, embeddings and low-res targets.

    Attributes
    ----------
    dataset : Dataset
        The samples (read for training prompts).
    index : EmbeddingIndex
        Their cached embeddings.
    targets : torch.Tensor
        ``(N, 1, S, S)`` float32 masks in the low-res frame, on the training device.
    prompts : tuple of Prompt
        Inference prompts per sample (validation splits); empty for training splits.
    """

    dataset: Dataset
    index: EmbeddingIndex
    targets: torch.Tensor = attrs.field(repr=False)
    prompts: tuple[Prompt, ...] = ()

    @classmethod
    def build(
        cls,
        dataset: Dataset,
        index: EmbeddingIndex,
        side: int,
        device: str,
        strategy: PromptStrategy | None = None,
    ) -> SplitTensors:
        """Read every sample once; with ``strategy``, also make its inference prompts."""
        targets, prompts = [], []
        for sample in dataset:
            targets.append(low_res_target(sample.require_mask(), side))
            if strategy is not None:
                prompts.append(inference_prompt(strategy, sample))
        stacked = torch.from_numpy(np.stack(targets))[:, None].float().to(device)
        return cls(dataset, index, stacked, tuple(prompts))


class SamStep:
    """Trains SAM's mask decoder for an epoch and validates it (see :class:`TrainStep`).

    Parameters
    ----------
    model : LoadedSam
        Its mask decoder trains; image and prompt encoders stay frozen (checked every step).
    strategy : PromptStrategy
        Makes the training prompts.
    config : FinetuneConfig
        Batch size, seed, device, precision, learning rate (for messages).
    train, val : SplitTensors
        The splits (``val`` with its inference prompts).
    optimizer : torch.optim.Optimizer
        Over the decoder's trainable parameters.
    loss_fn : torch.nn.Module
        On logits.
    ddp : torch.nn.Module, optional
        The decoder wrapped in ``DistributedDataParallel`` under torchrun.
    tokens : PromptTokens, optional
        The strategy's learned prompt, trained with the decoder (same optimizer).

    A strategy that refines decodes ``1 + refine_passes`` times per batch, each pass prompted by
    the previous (detached) one; the training loss is the mean over the passes, and validation
    scores the last.
    """

    def __init__(
        self,
        model: LoadedSam,
        strategy: PromptStrategy,
        config: FinetuneConfig,
        train: SplitTensors,
        val: SplitTensors,
        optimizer: torch.optim.Optimizer,
        loss_fn: torch.nn.Module,
        ddp: torch.nn.Module | None = None,
        tokens: PromptTokens | None = None,
    ) -> None:
        self.sam = model.sam
        self.tokens = tokens
        self.strategy = strategy
        self.config = config
        self.train, self.val = train, val
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.ddp = ddp
        self._epoch = 0
        self._prompt_encoder = copy.deepcopy(self.sam.prompt_encoder.state_dict())

    def _logits(
        self, split: SplitTensors, positions: Sequence[int], prompts: Sequence[Prompt]
    ) -> list[torch.Tensor]:
        """Logits of every pass (one unless the strategy refines)."""
        embeddings = split.index.load(positions, self.config.device)
        if self.ddp is not None and torch.is_grad_enabled():
            logits: torch.Tensor = self.ddp(embeddings, list(prompts))
            return [logits]
        return decode_passes(
            self.sam,
            embeddings,
            [split.dataset[i] for i in positions],
            prompts,
            self.strategy,
            tokens=self.tokens,
            multimask_output=self.config.multimask_output,
        )

    def _training_prompts(self, positions: Sequence[int], epoch: int) -> list[Prompt]:
        seed = self.config.seed
        return [
            training_prompt(
                self.strategy, self.train.dataset[i], np.random.default_rng([seed, epoch, int(i)])
            )
            for i in positions
        ]

    def train_epoch(self, epoch: int) -> float:
        cfg, decoder = self.config, self.sam.mask_decoder
        self._epoch = epoch + 1
        decoder.train()
        order = torch.randperm(
            len(self.train.dataset),
            generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch),
        )
        world, me = distributed.world_size(), distributed.rank()
        losses, sizes = [], []
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start : start + cfg.batch_size].tolist()
            # Each rank takes every world-th item of the global batch; weighting its mean loss by
            # its share makes DDP's gradient average equal the single-process batch mean.
            positions = batch[me::world] or batch[:1]
            weight = world * len(batch[me::world]) / len(batch)
            with autocast(cfg.device, cfg.precision):
                passes = self._logits(
                    self.train, positions, self._training_prompts(positions, epoch)
                )
                target = self.train.targets[positions]
                per_pass = [self.loss_fn(p.float(), target) for p in passes]
                loss = per_pass[0] if len(per_pass) == 1 else sum(per_pass) / len(per_pass)
            check_finite(epoch + 1, "training loss", float(loss.detach()), float(cfg.lr or 0))
            self.optimizer.zero_grad(set_to_none=True)
            (loss * weight).backward()
            self.optimizer.step()
            self._check_frozen()
            losses.append(float(loss.detach()) * weight / world)
            sizes.append(len(batch))
        if world > 1:
            losses = [sum(parts) for parts in zip(*distributed.all_gather(losses), strict=True)]
        decoder.eval()
        bad = weights_finite(decoder)
        if bad:
            raise TrainingDivergedError(
                f"epoch {epoch + 1}: non-finite decoder weights ({', '.join(bad[:3])}); training "
                f"stopped and nothing from this epoch was saved (lr={cfg.lr:g})"
            )
        return float(np.average(losses, weights=sizes))

    def validate(self) -> tuple[float, float]:
        """Validation loss and F1 (threshold 0.5); each rank scores its share, results gathered."""
        cfg = self.config
        mine = list(range(distributed.rank(), len(self.val.dataset), distributed.world_size()))
        weighted_loss, f1s = 0.0, []
        with torch.inference_mode(), autocast(cfg.device, cfg.precision):
            for start in range(0, len(mine), cfg.batch_size):
                positions = mine[start : start + cfg.batch_size]
                prompts = [self.val.prompts[i] for i in positions]
                logits = self._logits(self.val, positions, prompts)[-1].float()
                targets = self.val.targets[positions]
                weighted_loss += float(self.loss_fn(logits, targets)) * len(positions)
                f1, _ = f1_iou((logits > 0).cpu()[:, 0], targets.bool().cpu()[:, 0])
                f1s.extend(f1.tolist())
        gathered = distributed.all_gather((weighted_loss, f1s))
        val_loss = sum(loss for loss, _ in gathered) / len(self.val.dataset)
        check_finite(self._epoch, "validation loss", val_loss, float(cfg.lr or 0))
        return val_loss, float(np.mean([f for _, part in gathered for f in part]))

    def _check_frozen(self) -> None:
        after = self.sam.prompt_encoder.state_dict()
        before = self._prompt_encoder
        if any(not torch.equal(before[k].to(after[k].device), after[k]) for k in before):
            raise SampromptError(
                "internal error: the frozen prompt encoder changed during training"
            )
