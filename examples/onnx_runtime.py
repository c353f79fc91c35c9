"""Segment images with an ONNX export, without PyTorch or samprompt.

Export first::

    samprompt export --format onnx --model RUN --out lungs_onnx --image-size 512 512

then::

    python examples/onnx_runtime.py lungs_onnx IMAGE.png [IMAGE.png ...] --out masks/

Needs only ``onnxruntime``, ``numpy``, ``Pillow`` and (for ``refine`` exports) ``scipy``.
Prompts come from ``export.json`` (the strategy's fitted prompt for the image's size); an
oracle-box model needs boxes, pass them with ``--box X0 Y0 X1 Y1`` (repeatable; several boxes are
merged). A ``learned``-prompt export needs no prompt at all: the decoder graph takes only the
image embedding and the image size. A ``refine`` export adds ``refine.onnx``: after the first
pass, each pass is prompted with the boxes of what the previous pass found (and its low-res
logits), as ``export.json``'s ``refine.recipe`` describes and :meth:`OnnxSegmenter.refined` does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image
from scipy import ndimage

Arrays = tuple[np.ndarray, np.ndarray]


class OnnxSegmenter:
    """``encoder.onnx`` + ``decoder.onnx`` + ``export.json`` of one export folder."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.meta = json.loads((folder / "export.json").read_text())
        self.encoder = onnxruntime.InferenceSession(str(folder / "encoder.onnx"))
        self.decoder = onnxruntime.InferenceSession(str(folder / "decoder.onnx"))
        self.refine = self.meta.get("refine")
        if self.refine is not None:
            self.refine_pass = onnxruntime.InferenceSession(str(folder / "refine.onnx"))

    def embed(self, image: np.ndarray) -> np.ndarray:
        """Resize the longest side to the model's input size (PIL bilinear, as SAM does)."""
        side = self.meta["preprocessing"]["img_size"]
        h, w = image.shape[:2]
        scale = side / max(h, w)
        size = (int(w * scale + 0.5), int(h * scale + 0.5))
        rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
        resized = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        return self.encoder.run(None, {"image": resized})[0]

    def fitted_prompt(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``point_coords`` and ``point_labels`` the export lists for this image size."""
        for entry in self.meta["prompts"] or []:
            if entry["image_size"] == [height, width]:
                onnx_inputs = entry["onnx"]
                return (
                    np.asarray(onnx_inputs["point_coords"], np.float32),
                    np.asarray(onnx_inputs["point_labels"], np.float32),
                )
        raise SystemExit(
            f"export.json lists no prompt for {height}x{width} images: export again with "
            f"--image-size {height} {width}, or pass --box"
        )

    def segment(
        self, image: np.ndarray, prompt: Arrays | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(logits, mask)`` at the image's size; ``prompt`` defaults to the fitted one (a
        learned-prompt export takes no prompt: it is inside the graph)."""
        h, w = image.shape[:2]
        embeddings = self.embed(image)
        inputs = {"image_embeddings": embeddings, "orig_size": np.array([h, w], np.int64)}
        first = None
        if "point_coords" in self.meta.get("decoder_inputs", ["point_coords"]):
            first = prompt or self.fitted_prompt(h, w)
            inputs |= {"point_coords": first[0], "point_labels": first[1]}
        outputs = self.decoder.run(None, inputs)
        for _ in range(self.refine["passes"] if self.refine else 0):
            outputs = self.refined(embeddings, (h, w), outputs[2], first)
        return outputs[0], outputs[1]

    def refined(
        self,
        embeddings: np.ndarray,
        size: tuple[int, int],
        low_res: np.ndarray,
        first: Arrays | None,
    ) -> list[np.ndarray]:
        """One refinement pass: ``refine.onnx`` prompted with the boxes of the previous pass's
        ``(1, 1, S, S)`` low-res logits (the first prompt where it found nothing)."""
        recipe = self.refine
        boxes = predicted_boxes(
            low_res[0, 0], size, recipe["max_boxes"], recipe["min_component_fraction"]
        )
        if len(boxes):
            coords, labels = boxes_prompt(boxes.tolist())
        elif first is None:  # a learned first prompt: no points, its tokens are in the graph
            coords, labels = np.zeros((1, 0, 2), np.float32), np.zeros((1, 0), np.float32)
        else:
            coords, labels = first
        inputs = {
            "image_embeddings": embeddings,
            "point_coords": coords,
            "point_labels": labels,
            "orig_size": np.array(size, np.int64),
        }
        if "mask_input" in recipe["inputs"]:
            inputs["mask_input"] = low_res
        return self.refine_pass.run(None, inputs)


def predicted_boxes(
    low_res: np.ndarray, size: tuple[int, int], max_boxes: int, min_fraction: float
) -> np.ndarray:
    """``(K, 4)`` pixel boxes of the largest 8-connected components of ``low_res > 0`` within the
    image's part of the low-res frame, as ``export.json``'s ``refine.recipe`` says."""
    h, w = size
    scale = max(h, w) / low_res.shape[-1]
    found = low_res[: int(np.ceil(h / scale)), : int(np.ceil(w / scale))] > 0
    labelled, _ = ndimage.label(found, structure=np.ones((3, 3), bool))
    areas = np.bincount(labelled.ravel())[1:]
    boxes = []
    for index in np.argsort(-areas, kind="stable"):
        if areas[index] < min_fraction * areas.sum() or len(boxes) == max_boxes:
            break
        ys, xs = np.nonzero(labelled == index + 1)
        far = [min((xs.max() + 1) * scale - 1, w - 1), min((ys.max() + 1) * scale - 1, h - 1)]
        boxes.append([xs.min() * scale, ys.min() * scale, *far])
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def boxes_prompt(boxes: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """One decoder row per box: its corners labelled 2 (top-left) and 3 (bottom-right)."""
    coords = np.asarray(boxes, np.float32).reshape(-1, 2, 2)
    return coords, np.tile(np.float32([2, 3]), (len(coords), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export", help="folder written by samprompt export --format onnx")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", required=True, help="folder for the 0/255 PNG masks")
    parser.add_argument("--box", type=float, nargs=4, action="append", metavar="V")
    args = parser.parse_args()
    model = OnnxSegmenter(args.export)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompt = boxes_prompt(args.box) if args.box else None
    for name in args.images:
        image = np.asarray(Image.open(name).convert("RGB"))
        _, mask = model.segment(image, prompt)
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / f"{Path(name).stem}.png")
        print(f"{name}: {int(mask.sum())} foreground pixels of {mask.size}")


if __name__ == "__main__":
    main()
