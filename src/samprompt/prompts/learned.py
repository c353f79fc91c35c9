"""``learned``: prompt tokens trained with the mask decoder; at inference only the image."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from samprompt.data.sample import Sample
from samprompt.errors import ConfigError
from samprompt.prompts.geometry import bounding_box
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.strategy import BaseStrategy
from samprompt.prompts.tokens import PromptTokens

__all__ = ["Learned"]

#: Side of the unit-square grid the mean training mask is kept on (for ``mask_prior``).
_MASK_GRID = 64


class Learned(BaseStrategy):
    """Trainable prompt tokens: the decoder learns its own prompt, nothing is read at inference.

    :meth:`fit` measures the training masks' mean bounding box (in unit coordinates), and, with
    ``mask_prior``, their mean mask. The tokens start as SAM's own prompt encoding of that box
    (two corner tokens, so training starts from a sensible box prompt rather than noise), plus
    ``extra_tokens`` free tokens; with ``mask_prior`` a learned low-res mask starts at the mean
    mask's logits and is fed through SAM's frozen mask encoder as its dense prompt. The
    :class:`~samprompt.Finetuner` then optimises the tokens with the decoder at learning rate
    ``lr``; they are checkpointed, saved beside the decoder (``prompt.safetensors``) and exported.

    At inference the prompt holds no points or boxes (:meth:`inference_prompt` reads only the
    image size), so a deployment needs nothing but the image.

    Parameters
    ----------
    extra_tokens : int
        Free tokens besides the two box-corner tokens (default 0).
    mask_prior : bool
        Also learn a dense mask prompt, initialised at the mean training mask (default False).
    lr : float
        Learning rate of the prompt parameters (default 1e-3: tokens move much further than
        decoder weights need to).

    Examples
    --------
    >>> from samprompt.data import make_phantoms
    >>> strategy = Learned()
    >>> strategy.fit(make_phantoms(4, 64))
    >>> strategy.inference_prompt(make_phantoms(1, 64)[0]).is_empty
    True
    """

    name = "learned"
    needs_mask_at_inference = False

    def __init__(self, extra_tokens: int = 0, mask_prior: bool = False, lr: float = 1e-3) -> None:
        if isinstance(extra_tokens, bool) or not isinstance(extra_tokens, int) or extra_tokens < 0:
            raise ConfigError(
                f"learned: extra_tokens must be a whole number >= 0, got {extra_tokens!r}"
            )
        if not (isinstance(lr, int | float) and np.isfinite(lr) and lr > 0):
            raise ConfigError(f"learned: lr must be a positive number, got {lr!r}")
        self.extra_tokens = extra_tokens
        self.mask_prior = bool(mask_prior)
        self.lr = float(lr)
        self.box: list[float] | None = None
        self.mean_mask: list[list[float]] | None = None
        self._tokens: PromptTokens | None = None

    @property
    def prompt_lr(self) -> float:
        """Learning rate the finetuner gives the prompt parameters."""
        return self.lr

    def params(self) -> dict[str, Any]:
        return {"extra_tokens": self.extra_tokens, "mask_prior": self.mask_prior, "lr": self.lr}

    def fit(self, train: Iterable[Sample]) -> None:
        """The mean unit-square bounding box (and mean mask) of the training masks."""
        boxes, total, count = [], np.zeros((_MASK_GRID, _MASK_GRID)), 0
        for sample in train:
            mask = sample.require_mask()
            h, w = mask.shape
            if mask.any():
                x0, y0, x1, y1 = bounding_box(mask)
                boxes.append(
                    [x0 / max(w - 1, 1), y0 / max(h - 1, 1), x1 / max(w - 1, 1), y1 / max(h - 1, 1)]
                )
            grid = torch.from_numpy(mask.astype(np.float32))[None, None]
            total += F.adaptive_avg_pool2d(grid, _MASK_GRID)[0, 0].double().numpy()
            count += 1
        if not boxes:
            raise ConfigError(
                "learned: every training mask is empty; nothing to learn a prompt from"
            )
        self.box = np.mean(boxes, axis=0).round(6).tolist()
        self.mean_mask = (total / count).round(4).tolist() if self.mask_prior else None
        self._tokens = None

    def fitted_state(self) -> dict[str, Any]:
        return {"box": self.box, "mean_mask": self.mean_mask}

    def load_fitted(self, fitted: Mapping[str, Any]) -> None:
        self.box = fitted.get("box")
        self.mean_mask = fitted.get("mean_mask")
        self._tokens = None

    def inference_prompt(self, sample: Sample) -> Prompt:
        """No points, no boxes: the learned tokens are the prompt."""
        return Prompt(sample.size)

    def prompt_tokens(self, sam: Sam) -> PromptTokens:
        """The trainable tokens for ``sam`` (built on first call from the fitted box)."""
        if self._tokens is None:
            self._tokens = self._initial_tokens(sam)
        return self._tokens

    def _initial_tokens(self, sam: Sam) -> PromptTokens:
        if self.box is None:
            raise ConfigError("learned: not fitted; call fit(train) first")
        encoder = sam.prompt_encoder
        side = float(sam.image_encoder.img_size)
        device = encoder.no_mask_embed.weight.device
        box = torch.tensor([self.box], dtype=torch.float32, device=device) * (side - 1)
        with torch.no_grad():
            corners, _ = encoder(points=None, boxes=box, masks=None)
            extra = encoder.not_a_point_embed.weight.expand(self.extra_tokens, -1)
        sparse = torch.cat([corners[0], extra]).cpu()
        mask = None
        if self.mask_prior and self.mean_mask is not None:
            mean = torch.tensor(self.mean_mask, dtype=torch.float32)[None, None]
            low_res = 4 * encoder.image_embedding_size[0]
            mean = F.interpolate(mean, (low_res, low_res), mode="bilinear", align_corners=False)
            mask = torch.logit(mean[0, 0].clamp(0.02, 0.98))
        return PromptTokens(sparse, mask).to(device)
