"""A fine-tuned model as two ONNX files for deployment without PyTorch.

``encoder.onnx``
    ``image`` (``(h, w, 3)`` uint8, the RGB image resized so its longest side is the model's
    input size, PIL bilinear) -> ``image_embeddings`` (``(1, 256, 64, 64)`` float32). Normalising
    and padding happen inside, as in ``Sam.preprocess``.
``decoder.onnx``
    ``image_embeddings``, ``point_coords`` (``(R, N, 2)`` float32, pixel ``(x, y)`` of the
    *original* image), ``point_labels`` (``(R, N)`` float32: 1 foreground, 0 background, 2/3 a
    box's top-left/bottom-right corner, -1 padding) and ``orig_size`` (``(2,)`` int64 ``H, W``)
    -> ``logits`` and ``mask`` (``(H, W)``, float32 and bool). Each of the ``R`` rows is one
    decoder call; the rows' logits are combined by their maximum (the union of their masks), as
    samprompt does for several boxes. The prompt encoder, the fine-tuned mask decoder, the
    resizing of the prompts, the up-sampling to ``(H, W)`` and the saved threshold are all inside.

``refine.onnx`` (models of the built-in ``refine`` strategy)
    One refinement pass: the previous pass's boxes as rows, its ``low_res`` logits as
    ``mask_input`` (unless trained without) -> ``logits``, ``mask`` and ``low_res``;
    ``decoder.onnx`` then also outputs ``low_res``. The boxes between passes (connected
    components) are the runtime's: ``export.json``'s ``refine`` block says how.

``export.json`` beside them holds the fitted prompts for each listed image size, already as
``point_coords`` / ``point_labels`` arrays, and the threshold as probability and logit.
:func:`prompt_arrays` turns any :class:`~samprompt.prompts.prompt.Prompt` into those arrays.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from torch import nn

from samprompt.atomic import staged_folder, write_json_atomic
from samprompt.errors import PromptError, SampromptError
from samprompt.hashing import file_sha256
from samprompt.interop import check_image_sizes, logit, sidecar
from samprompt.onnx_graphs import (
    BOX_LABELS,
    PAD_LABEL,
    LearnedPromptDecoder,
    PreprocessingEncoder,
    PromptedDecoder,
)
from samprompt.prompts.calls import refine_passes
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.refine import Refine
from samprompt.runs import check_apart
from samprompt.saved import load_sam_model
from samprompt.segmenter import SamSegmenter

__all__ = ["ONNX_OPSET", "export_onnx", "prompt_arrays"]

#: The opset the files are written with: LayerNormalization is a single op from 17 on, and
#: onnxruntime >= 1.14 and every current runtime (TensorRT, OpenVINO, onnxruntime-web) take it.
ONNX_OPSET = 17


def prompt_arrays(prompt: Prompt) -> tuple[np.ndarray, np.ndarray]:
    """``decoder.onnx``'s ``point_coords`` ``(R, N, 2)`` and ``point_labels`` ``(R, N)``.

    One row per box (each with all of the prompt's points, then the box's two corners labelled 2
    and 3), or one row of points followed by a padding point (label -1) when there is no box: SAM's
    prompt encoder pads exactly so.

    Examples
    --------
    >>> coords, labels = prompt_arrays(Prompt((100, 200), boxes=[[10, 20, 50, 60], [0, 0, 9, 9]]))
    >>> coords.shape, labels.tolist()
    ((2, 2, 2), [[2.0, 3.0], [2.0, 3.0]])
    >>> coords, labels = prompt_arrays(Prompt((100, 200), points=[[5, 6]], point_labels=[1]))
    >>> coords.tolist(), labels.tolist()
    ([[[5.0, 6.0], [0.0, 0.0]]], [[1.0, -1.0]])
    """
    points = np.zeros((0, 2), np.float32) if prompt.points is None else prompt.points
    labels = np.zeros(0, np.float32) if prompt.point_labels is None else prompt.point_labels
    points = np.asarray(points, np.float32).reshape(-1, 2)
    labels = np.asarray(labels, np.float32).reshape(-1)
    if prompt.boxes is None or len(prompt.boxes) == 0:
        if len(points) == 0:
            raise PromptError("a prompt needs points or boxes")
        coords = np.concatenate([points, np.zeros((1, 2), np.float32)])[None]
        return coords, np.concatenate([labels, [PAD_LABEL]]).astype(np.float32)[None]
    rows, row_labels = [], []
    for box in np.asarray(prompt.boxes, np.float32).reshape(-1, 4):
        rows.append(np.concatenate([points, box.reshape(2, 2)]))
        row_labels.append(np.concatenate([labels, BOX_LABELS]))
    return np.stack(rows).astype(np.float32), np.stack(row_labels).astype(np.float32)


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, **kwargs: Any) -> None:
    with warnings.catch_warnings():
        # The tracer warns about every shape it turns into a graph value; that is the point here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            **kwargs,
        )


def export_onnx(
    model_folder: str | Path,
    out: str | Path,
    *,
    checkpoint: str | None = None,
    image_sizes: Sequence[tuple[int, int]] = (),
    encoder: bool = True,
) -> Path:
    """Write ``out/decoder.onnx``, ``out/encoder.onnx`` and ``out/export.json`` (see module docs).

    Parameters
    ----------
    model_folder : str or pathlib.Path
        A saved samprompt model (``decoder.safetensors`` + ``model.json``).
    out : str or pathlib.Path
        The folder to write; it must not exist or be empty (written whole or not at all).
    checkpoint : str, optional
        The base checkpoint (default: the one recorded in ``model.json``).
    image_sizes : sequence of (int, int)
        ``(H, W)`` sizes to list the fitted prompts for (default: the model's square input size).
    encoder : bool
        Also write ``encoder.onnx`` (default True; the decoder alone serves embeddings computed
        elsewhere).

    Returns
    -------
    pathlib.Path
        The folder.
    """
    if importlib.util.find_spec("onnx") is None:
        raise SampromptError(
            "--format onnx needs the onnx package (torch writes ONNX through it): "
            "pip install 'samprompt[onnx]'"
        )
    out = Path(out)
    check_image_sizes(image_sizes)
    check_apart(out, {"--model": Path(model_folder)})
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SampromptError(f"{out}: exists and is not an empty folder; choose a new --out")
    segmenter = load_sam_model(model_folder, checkpoint)
    refine = _refine_recipe(segmenter, model_folder)
    with staged_folder(out) as staging:
        files = [_export_decoder(segmenter, staging / "decoder.onnx", low_res=refine is not None)]
        if refine is not None:
            files.append(_export_refine_pass(segmenter, staging / "refine.onnx", refine))
        if encoder:
            files.append(_export_encoder(segmenter.model.sam, staging / "encoder.onnx"))
        meta = _export_meta(segmenter, image_sizes, {f.name: file_sha256(f) for f in files}, refine)
        meta["model_folder"] = str(Path(model_folder).resolve())
        write_json_atomic(staging / "export.json", meta)
    return out


def _refine_recipe(segmenter: SamSegmenter, model_folder: str | Path) -> Refine | None:
    """The built-in ``refine`` strategy of a model that refines, None for one that does not;
    a plugin's own refinement cannot be written down for another runtime."""
    strategy = segmenter.strategy
    if not refine_passes(strategy):
        return None
    if not isinstance(strategy, Refine):
        raise SampromptError(
            f"{model_folder}: strategy {strategy.name!r} refines its prompt from its own "
            "predictions in Python code an ONNX graph does not hold; export with --format pth "
            "and run the passes with samprompt"
        )
    return strategy


def _refine_meta(refine: Refine, *, learned: bool) -> dict[str, Any]:
    """What a runtime needs to run the passes between decoder.onnx and refine.onnx."""
    inputs = [*_PROMPT_INPUTS, "mask_input"] if refine.use_mask else _PROMPT_INPUTS
    return {
        "inputs": inputs,
        "max_boxes": refine.max_boxes,
        "min_component_fraction": refine.min_component_fraction,
        "use_mask": refine.use_mask,
        "first": refine.first,
        "recipe": (
            "decoder.onnx gives low_res (1, 1, S, S); for each pass: boxes = the bounding boxes "
            "(8-connected components of low_res > 0 inside the image's part of the S x S frame, "
            "largest first, those of at least min_component_fraction of the predicted area, at "
            "most max_boxes, scaled by max(H, W) / S to pixels, the far corner ((x1 + 1) * scale "
            "- 1) clipped to the image) -> refine.onnx with one row per box (corners labelled 2 "
            "and 3)"
            + (" and mask_input = low_res" if refine.use_mask else "")
            + "; when nothing was predicted, the first prompt ("
            + ("no points: point_coords (1, 0, 2)" if learned else "prompts[...].onnx")
            + ") instead; the last pass's logits and mask are the answer"
        ),
    }


def _example_embeddings(sam: Sam) -> tuple[torch.Tensor, torch.Tensor]:
    """Tracing inputs: zero embeddings and the square input size."""
    side = int(sam.image_encoder.img_size)
    embeddings = torch.zeros(
        1, sam.prompt_encoder.embed_dim, *sam.prompt_encoder.image_embedding_size
    )
    return embeddings, torch.tensor([side, side], dtype=torch.int64)


def _example_box_rows(side: int) -> tuple[torch.Tensor, torch.Tensor]:
    coords, labels = prompt_arrays(Prompt((side, side), boxes=[[1, 2, side // 2, side // 3]]))
    return torch.from_numpy(coords), torch.from_numpy(labels)


_IMAGE_AXES = {"logits": {0: "height", 1: "width"}, "mask": {0: "height", 1: "width"}}
_PROMPT_AXES = {"point_coords": {0: "rows", 1: "points"}, "point_labels": {0: "rows", 1: "points"}}
_PROMPT_INPUTS = ["image_embeddings", "point_coords", "point_labels", "orig_size"]


def _output_names(low_res: bool) -> list[str]:
    return ["logits", "mask", "low_res"] if low_res else ["logits", "mask"]


def _export_decoder(segmenter: SamSegmenter, path: Path, *, low_res: bool = False) -> Path:
    """The decoder graph: embeddings + prompts + image size -> logits and mask (and the low-res
    logits a refinement pass starts from); with a learned prompt baked in, embeddings + image
    size only."""
    sam = segmenter.model.sam.cpu().eval()
    embeddings, size = _example_embeddings(sam)
    tokens = segmenter.tokens
    threshold = logit(segmenter.threshold)
    names = {"output_names": _output_names(low_res)}
    if tokens is not None:
        learned = LearnedPromptDecoder(
            sam, tokens.cpu().eval(), threshold, segmenter.multimask_output, low_res_output=low_res
        )
        _export(learned, (embeddings, size), path, input_names=["image_embeddings", "orig_size"],
                dynamic_axes=_IMAGE_AXES, **names)  # fmt: skip
        return path
    decoder = PromptedDecoder(
        sam, threshold, multimask_output=segmenter.multimask_output, low_res_output=low_res
    )
    coords, labels = _example_box_rows(int(sam.image_encoder.img_size))
    _export(decoder, (embeddings, coords, labels, size), path, input_names=_PROMPT_INPUTS,
            dynamic_axes=_PROMPT_AXES | _IMAGE_AXES, **names)  # fmt: skip
    return path


def _export_refine_pass(segmenter: SamSegmenter, path: Path, refine: Refine) -> Path:
    """``refine.onnx``: one refinement pass (boxes rows, the previous low-res logits as mask
    input when ``use_mask``, the learned tokens inside) -> logits, mask and low-res logits."""
    sam = segmenter.model.sam.cpu().eval()
    embeddings, size = _example_embeddings(sam)
    tokens = segmenter.tokens.cpu().eval() if segmenter.tokens is not None else None
    graph = PromptedDecoder(
        sam, logit(segmenter.threshold), segmenter.multimask_output, low_res_output=True,
        tokens=tokens,
    )  # fmt: skip
    coords, labels = _example_box_rows(int(sam.image_encoder.img_size))
    args: tuple[torch.Tensor, ...] = (embeddings, coords, labels, size)
    inputs = list(_PROMPT_INPUTS)
    if refine.use_mask:
        low_res = 4 * int(sam.prompt_encoder.image_embedding_size[0])
        args += (torch.zeros(1, 1, low_res, low_res),)
        inputs.append("mask_input")
    _export(graph, args, path, input_names=inputs, output_names=_output_names(True),
            dynamic_axes=_PROMPT_AXES | _IMAGE_AXES)  # fmt: skip
    return path


def _export_encoder(sam: Sam, path: Path) -> Path:
    """The image encoder with SAM's preprocessing inside: uint8 RGB image -> embeddings."""
    side = int(sam.image_encoder.img_size)
    image = torch.zeros(side, side * 3 // 4, 3, dtype=torch.uint8)
    _export(
        PreprocessingEncoder(sam.cpu().eval()),
        (image,),
        path,
        input_names=["image"],
        output_names=["image_embeddings"],
        dynamic_axes={"image": {0: "height", 1: "width"}},
    )
    return path


def _export_meta(
    segmenter: SamSegmenter,
    image_sizes: Sequence[tuple[int, int]],
    files: dict[str, str],
    refine: Refine | None = None,
) -> dict[str, Any]:
    """``export.json``: the sidecar plus the graphs' inputs, outputs and ONNX prompt arrays."""
    side = int(segmenter.model.sam.image_encoder.img_size)
    meta = sidecar(segmenter, image_sizes)
    meta["format"] = "samprompt-onnx"
    meta["opset"] = ONNX_OPSET
    meta["files"] = files
    meta["load"] = "onnxruntime.InferenceSession(FILE)"
    learned = segmenter.tokens is not None
    meta["decoder_inputs"] = ["image_embeddings", "orig_size"] if learned else _PROMPT_INPUTS
    meta["decoder_outputs"] = _output_names(refine is not None)
    meta["inputs"] = {
        "encoder.onnx": "image: (h, w, 3) uint8 RGB, longest side resized to "
        f"{side} (PIL bilinear)",
        "decoder.onnx": (
            "image_embeddings (1, C, 64, 64) float32; orig_size (2,) int64 (H, W); the learned "
            "prompt is inside the graph"
            if learned
            else "image_embeddings (1, C, 64, 64) float32; point_coords (R, N, 2) float32 pixel "
            "(x, y) of the original image; point_labels (R, N) float32 (1 fg, 0 bg, 2/3 box "
            "corners, -1 pad); orig_size (2,) int64 (H, W)"
        ),
    }
    meta["outputs"] = "logits (H, W) float32; mask (H, W) bool = logits >= threshold.logit" + (
        "; low_res (1, 1, S, S) float32: the logits in SAM's low-res frame" if refine else ""
    )
    if refine is not None:
        meta["refine"] |= _refine_meta(refine, learned=learned)
    for entry in meta["prompts"] or []:
        prompt = Prompt(
            tuple(entry["image_size"]),
            points=entry["point_coords"],
            point_labels=entry["point_labels"],
            boxes=entry["boxes"],
        )
        coords, labels = prompt_arrays(prompt)
        entry["onnx"] = {"point_coords": coords.tolist(), "point_labels": labels.tolist()}
    return meta
