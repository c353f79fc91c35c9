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
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from samprompt.atomic import staged_folder, write_json_atomic
from samprompt.errors import PromptError, SampromptError
from samprompt.hashing import file_sha256
from samprompt.interop import check_image_sizes, logit, sidecar
from samprompt.prompts.calls import refine_passes
from samprompt.prompts.prompt import Prompt
from samprompt.prompts.tokens import PromptTokens
from samprompt.runs import check_apart
from samprompt.saved import load_sam_model
from samprompt.segmenter import SamSegmenter

__all__ = ["ONNX_OPSET", "export_onnx", "prompt_arrays"]

#: The opset the files are written with: LayerNormalization is a single op from 17 on, and
#: onnxruntime >= 1.14 and every current runtime (TensorRT, OpenVINO, onnxruntime-web) take it.
ONNX_OPSET = 17

PAD_LABEL = -1.0
BOX_LABELS = (2.0, 3.0)


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


def _input_shape(orig_size: torch.Tensor, side: int) -> torch.Tensor:
    """``ResizeLongestSide.get_preprocess_shape`` on a tensor (so it is traced into the graph)."""
    size = orig_size.to(torch.float32)
    return torch.floor(size * (side / size.max()) + 0.5).to(torch.int64)


class PromptedDecoder(nn.Module):
    """Prompt encoder + mask decoder + post-processing of one image, as one traceable module."""

    def __init__(self, sam: Sam, threshold_logit: float, multimask_output: bool = False) -> None:
        super().__init__()
        self.sam = sam
        self.side = int(sam.image_encoder.img_size)
        self.threshold_logit = float(threshold_logit)
        self.multimask_output = multimask_output

    def _sparse(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        encoder = self.sam.prompt_encoder
        embedding = encoder.pe_layer.forward_with_coords(coords + 0.5, (self.side, self.side))
        label = labels.unsqueeze(-1)
        embedding = embedding * (label != PAD_LABEL).to(embedding.dtype)
        embedding = embedding + encoder.not_a_point_embed.weight * (label == PAD_LABEL)
        for k, point_embedding in enumerate(encoder.point_embeddings):
            embedding = embedding + point_embedding.weight * (label == k)
        return embedding  # type: ignore[no-any-return]

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        orig_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shape = _input_shape(orig_size, self.side)
        scale = (shape.to(torch.float32) / orig_size.to(torch.float32)).flip(0)
        sparse = self._sparse(point_coords * scale, point_labels)
        h, w = image_embeddings.shape[-2:]
        dense = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            sparse.shape[0], -1, h, w
        )
        return _decode_to_image(
            self.sam, image_embeddings, sparse, dense, orig_size, self.threshold_logit,
            self.multimask_output,
        )  # fmt: skip


class LearnedPromptDecoder(nn.Module):
    """A learned prompt baked in: embeddings + image size -> logits and mask, no prompt input."""

    def __init__(
        self, sam: Sam, tokens: PromptTokens, threshold_logit: float, multimask_output: bool
    ) -> None:
        super().__init__()
        self.sam = sam
        self.tokens = tokens
        self.threshold_logit = float(threshold_logit)
        self.multimask_output = multimask_output

    def forward(
        self, image_embeddings: torch.Tensor, orig_size: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = self.tokens.sparse_for(1)
        dense = self.tokens.dense_for(self.sam, 1)
        if dense is None:
            dense = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return _decode_to_image(
            self.sam, image_embeddings, sparse, dense, orig_size, self.threshold_logit,
            self.multimask_output,
        )  # fmt: skip


def _decode_to_image(
    sam: Sam,
    image_embeddings: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
    orig_size: torch.Tensor,
    threshold_logit: float,
    multimask_output: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask decoder on ``R`` prompt rows, their union, then logits and mask at ``(H, W)``."""
    side = int(sam.image_encoder.img_size)
    shape = _input_shape(orig_size, side)
    h, w = image_embeddings.shape[-2:]
    low_res, iou = sam.mask_decoder(
        image_embeddings,
        sam.prompt_encoder.get_dense_pe(),
        sparse,
        dense.expand(sparse.shape[0], -1, h, w),
        multimask_output=multimask_output,
    )
    if multimask_output:
        best = iou.argmax(dim=1)
        low_res = low_res[torch.arange(low_res.shape[0]), best].unsqueeze(1)
    logits = low_res.amax(dim=0, keepdim=True)
    logits = F.interpolate(logits, (side, side), mode="bilinear", align_corners=False)
    logits = logits[..., : shape[0], : shape[1]]
    # Tensors, not ints, so the tracer keeps the output size an input of the graph.
    size = (orig_size[0], orig_size[1])
    logits = F.interpolate(logits, size, mode="bilinear", align_corners=False)[0, 0]  # type: ignore[arg-type]
    return logits, logits >= threshold_logit


class PreprocessingEncoder(nn.Module):
    """``Sam.preprocess`` (normalise, pad bottom-right) + the image encoder, as one module."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam
        self.side = int(sam.image_encoder.img_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32).permute(2, 0, 1).unsqueeze(0)
        x = (x - self.sam.pixel_mean) / self.sam.pixel_std
        x = F.pad(x, (0, self.side - x.shape[-1], 0, self.side - x.shape[-2]))
        return self.sam.image_encoder(x)  # type: ignore[no-any-return]


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
    if refine_passes(segmenter.strategy):
        raise SampromptError(
            f"{model_folder}: strategy {segmenter.strategy.name!r} refines its prompt from its "
            "own predictions (connected components between passes), which an ONNX graph does not "
            "hold; export with --format pth and run the passes with samprompt"
        )
    with staged_folder(out) as staging:
        files = [_export_decoder(segmenter, staging / "decoder.onnx")]
        if encoder:
            files.append(_export_encoder(segmenter.model.sam, staging / "encoder.onnx"))
        meta = _export_meta(segmenter, image_sizes, {f.name: file_sha256(f) for f in files})
        meta["model_folder"] = str(Path(model_folder).resolve())
        write_json_atomic(staging / "export.json", meta)
    return out


def _export_decoder(segmenter: SamSegmenter, path: Path) -> Path:
    """The decoder graph: embeddings + prompts + image size -> logits and mask; with a learned
    prompt baked in, embeddings + image size only."""
    sam = segmenter.model.sam.cpu().eval()
    side = int(sam.image_encoder.img_size)
    embeddings = torch.zeros(
        1, sam.prompt_encoder.embed_dim, *sam.prompt_encoder.image_embedding_size
    )
    size = torch.tensor([side, side], dtype=torch.int64)
    outputs = {"output_names": ["logits", "mask"]}
    image_axes = {"logits": {0: "height", 1: "width"}, "mask": {0: "height", 1: "width"}}
    tokens = segmenter.tokens
    threshold = logit(segmenter.threshold)
    if tokens is not None:
        learned = LearnedPromptDecoder(
            sam, tokens.cpu().eval(), threshold, segmenter.multimask_output
        )
        _export(learned, (embeddings, size), path, input_names=["image_embeddings", "orig_size"],
                dynamic_axes=image_axes, **outputs)  # fmt: skip
        return path
    coords, labels = prompt_arrays(Prompt((side, side), boxes=[[1, 2, side // 2, side // 3]]))
    decoder = PromptedDecoder(sam, threshold, multimask_output=segmenter.multimask_output)
    _export(
        decoder,
        (embeddings, torch.from_numpy(coords), torch.from_numpy(labels), size),
        path,
        input_names=["image_embeddings", "point_coords", "point_labels", "orig_size"],
        dynamic_axes={
            "point_coords": {0: "rows", 1: "points"},
            "point_labels": {0: "rows", 1: "points"},
            **image_axes,
        },
        **outputs,
    )
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
    segmenter: SamSegmenter, image_sizes: Sequence[tuple[int, int]], files: dict[str, str]
) -> dict[str, Any]:
    """``export.json``: the sidecar plus the graphs' inputs, outputs and ONNX prompt arrays."""
    side = int(segmenter.model.sam.image_encoder.img_size)
    meta = sidecar(segmenter, image_sizes)
    meta["format"] = "samprompt-onnx"
    meta["opset"] = ONNX_OPSET
    meta["files"] = files
    meta["load"] = "onnxruntime.InferenceSession(FILE)"
    learned = segmenter.tokens is not None
    meta["decoder_inputs"] = (
        ["image_embeddings", "orig_size"]
        if learned
        else ["image_embeddings", "point_coords", "point_labels", "orig_size"]
    )
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
    meta["outputs"] = "logits (H, W) float32; mask (H, W) bool = logits >= threshold.logit"
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
