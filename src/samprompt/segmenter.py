"""Models that turn samples into foreground probabilities: fine-tuned or zero-shot SAM, and the
mean-mask prior. The :class:`~samprompt.evaluate.Evaluator` scores any of them the same way.

Resolutions: ``"low"`` is SAM's low-res frame cropped to the image (256x256 for a square image,
as in the paper); ``"original"`` is each image's own size (logits upsampled bilinearly).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from samprompt.data.sample import Dataset, Sample, as_dataset
from samprompt.embeddings import EmbeddingCache, EmbeddingIndex
from samprompt.errors import ConfigError, PromptError
from samprompt.frames import (
    LOW_RES,
    RESOLUTIONS,
    autocast,
    check_resolution,
    resize_probability,
    target_at,
    valid_shape,
)
from samprompt.model import LoadedSam
from samprompt.passes import decode_passes
from samprompt.prompts.calls import inference_prompt, prompt_tokens
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.strategy import PromptStrategy
from samprompt.prompts.tokens import DecoderAndPrompt, PromptTokens

__all__ = ["RESOLUTIONS", "MeanMaskPrior", "SamSegmenter", "Segmenter", "target_at"]


@runtime_checkable
class Segmenter(Protocol):
    """Anything the evaluator can score: yields one ``(H, W)`` probability map per sample.

    Examples
    --------
    >>> isinstance(MeanMaskPrior(), Segmenter)
    True
    """

    threshold: float

    def predict_proba(self, samples: Dataset, *, resolution: str = "low") -> Iterator[np.ndarray]:
        """Foreground probabilities in [0, 1], one float32 array per sample, in order."""
        ...


class MeanMaskPrior:
    """Predicts the training split's mean mask for every image: the floor any method must beat.

    Parameters
    ----------
    grid : int
        Side of the unit-square grid the mean mask is averaged on.
    threshold : float
        Probability threshold (0.5: pixels that are foreground in most training masks).

    Examples
    --------
    >>> from samprompt.data import make_phantoms
    >>> data = make_phantoms(5, 64)
    >>> prior = MeanMaskPrior().fit(data[:4])
    >>> next(prior.predict_proba(data[4:])).shape
    (256, 256)
    """

    name = "mean-mask"

    def __init__(self, grid: int = LOW_RES, threshold: float = 0.5) -> None:
        self.grid = grid
        self.threshold = threshold
        self.mean: np.ndarray | None = None

    def fit(self, train: Iterable[Sample]) -> MeanMaskPrior:
        """Average the training masks on the grid; returns self."""
        total, count = np.zeros((self.grid, self.grid)), 0
        for sample in train:
            total += resize_probability(
                sample.require_mask().astype(np.float32), self.grid, self.grid
            )
            count += 1
        if not count:
            raise ConfigError("mean-mask prior: empty training split")
        self.mean = (total / count).astype(np.float32)
        return self

    def predict_proba(self, samples: Dataset, *, resolution: str = "low") -> Iterator[np.ndarray]:
        check_resolution(resolution)
        if self.mean is None:
            raise ConfigError("mean-mask prior is not fitted")
        for sample in samples:
            h, w = sample.size
            if resolution == "low":
                h, w = valid_shape(h, w, LOW_RES)
            yield resize_probability(self.mean, h, w)


class SamSegmenter:
    """SAM (fine-tuned or not) with a prompt strategy, reading embeddings from the cache.

    Parameters
    ----------
    model : LoadedSam
        The model; its decoder holds the fine-tuned (or original) weights.
    strategy : PromptStrategy
        A fitted strategy that makes the inference prompts.
    cache : EmbeddingCache
        Where image embeddings are computed once and read back.
    threshold : float
        Probability threshold for :meth:`predict_masks` (chosen on validation by the finetuner).
    batch_size : int
        Images per decoder call.
    device : str
        ``"cpu"`` or ``"cuda"``.
    precision : {"fp32", "bf16"}
        Autocast dtype of the decoder.
    multimask_output : bool
        See :func:`samprompt.decoder.decode_low_res`.
    prompts : mapping of str to Prompt, optional
        Prompts given by id (e.g. boxes from a JSON file) that replace the strategy's.
    passes : int, optional
        Refinement passes after the first (default: the strategy's ``refine_passes``; 0 scores
        a refining strategy's first pass).

    Examples
    --------
    >>> import tempfile
    >>> from samprompt import EmbeddingCache, get_strategy, load_sam
    >>> from samprompt.data import make_phantoms
    >>> data = make_phantoms(3, 64)
    >>> strategy = get_strategy("mean-points")
    >>> strategy.fit(data)
    >>> cache = EmbeddingCache(tempfile.mkdtemp(), progress=False)
    >>> segmenter = SamSegmenter(load_sam("random:tiny"), strategy, cache)
    >>> [mask.shape for _, mask in segmenter.predict_masks(data)]
    [(64, 64), (64, 64), (64, 64)]
    """

    def __init__(
        self,
        model: LoadedSam,
        strategy: PromptStrategy,
        cache: EmbeddingCache,
        *,
        threshold: float = 0.5,
        batch_size: int = 8,
        device: str = "cpu",
        precision: str = "fp32",
        multimask_output: bool = False,
        prompts: Mapping[str, Prompt] | None = None,
        passes: int | None = None,
    ) -> None:
        self.model = model
        self.strategy = strategy
        self.cache = cache
        self.threshold = threshold
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.multimask_output = multimask_output
        self.prompts = dict(prompts or {})
        self.passes = passes
        self._known: list[tuple[Dataset, EmbeddingIndex]] = []

    @property
    def tokens(self) -> PromptTokens | None:
        """The strategy's learned prompt (None for a strategy that learns none)."""
        return prompt_tokens(self.strategy, self.model.sam)

    @property
    def trained_module(self) -> torch.nn.Module:
        """What fine-tuning changed: the mask decoder, with the learned prompt if any."""
        decoder, tokens = self.model.sam.mask_decoder, self.tokens
        return decoder if tokens is None else DecoderAndPrompt(decoder, tokens)

    def remember(self, dataset: Dataset, index: EmbeddingIndex) -> None:
        """Use ``index`` for ``dataset`` (this very object) instead of looking its images up in
        the cache again: the fine-tuner hands over the validation split it already embedded."""
        self._known.append((dataset, index))

    def _index(self, dataset: Dataset) -> EmbeddingIndex:
        for known, index in self._known:
            if known is dataset:
                return index
        return self.cache.embed(self.model, dataset, device=self.device)

    def inference_prompt(self, sample: Sample) -> Prompt:
        """The given prompt for this id, else the strategy's (which may need the mask)."""
        if sample.id in self.prompts:
            return self.prompts[sample.id]
        if self.strategy.needs_mask_at_inference and sample.mask is None:
            raise PromptError(
                f"strategy {self.strategy.name!r} builds its prompt from the ground-truth mask "
                f"(oracle), but sample {sample.id!r} has no mask; give its boxes explicitly "
                "(samprompt predict --boxes FILE.json)"
            )
        return inference_prompt(self.strategy, sample)

    def low_res_logits(
        self, samples: Dataset, *, progress: bool = False
    ) -> Iterator[tuple[Sample, torch.Tensor]]:
        """Yield ``(sample, logits)`` with ``(S, S)`` float32 CPU logits in the low-res frame."""
        dataset = as_dataset(samples)
        index = self._index(dataset)
        sam = self.model.sam.to(self.device)
        tokens = self.tokens
        if tokens is not None:
            tokens.to(self.device)
        positions = list(range(len(dataset)))
        bar = tqdm(total=len(dataset), desc="predicting", unit="img", disable=not progress)
        for start in range(0, len(positions), self.batch_size):
            chunk = positions[start : start + self.batch_size]
            batch = [dataset[i] for i in chunk]
            prompts = [self.inference_prompt(s) for s in batch]
            with torch.inference_mode(), autocast(self.device, self.precision):
                logits = decode_passes(
                    sam,
                    index.load(chunk, self.device),
                    batch,
                    prompts,
                    self.strategy,
                    tokens=tokens,
                    multimask_output=self.multimask_output,
                    passes=self.passes,
                )[-1]
            yield from zip(batch, logits.float().cpu()[:, 0], strict=True)
            bar.update(len(chunk))
        bar.close()

    def predict_proba(
        self, samples: Dataset, *, resolution: str = "low", progress: bool = False
    ) -> Iterator[np.ndarray]:
        check_resolution(resolution)
        side = self.model.low_res_size
        for sample, logits in self.low_res_logits(samples, progress=progress):
            h, w = valid_shape(*sample.size, side)
            if resolution == "low":
                crop = logits[:h, :w]
                if side != LOW_RES:
                    crop = F.interpolate(
                        crop[None, None],
                        valid_shape(*sample.size, LOW_RES),
                        mode="bilinear",
                        align_corners=False,
                    )[0, 0]
                yield torch.sigmoid(crop).numpy()
                continue
            big = self.model.img_size
            up = F.interpolate(logits[None, None], (big, big), mode="bilinear", align_corners=False)
            hh, ww = valid_shape(*sample.size, big)
            full = F.interpolate(
                up[..., :hh, :ww], sample.size, mode="bilinear", align_corners=False
            )
            yield torch.sigmoid(full[0, 0]).numpy()

    def predict_masks(
        self, samples: Dataset, *, resolution: str = "original", progress: bool = False
    ) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(id, mask)`` with bool masks at ``resolution`` (default: each image's size)."""
        dataset = as_dataset(samples)
        for sample, prob in zip(
            dataset,
            self.predict_proba(dataset, resolution=resolution, progress=progress),
            strict=True,
        ):
            yield sample.id, prob >= self.threshold
