"""What makes the embedding step cheaper on a CPU without changing its output: LiteMedSAM's
image encoder (TinyViT, 256 px) in torch fp32 (the cache's path) against batching, channels-last,
bf16 autocast and the same encoder exported to ONNX and run by onnxruntime.

Every variant encodes the same images; its largest absolute difference from the fp32 torch
embeddings is printed beside its speed (the cache stores float16, whose step near the embeddings'
largest values is about 1e-3: a variant within that changes nothing a user can see).

    python benchmarks/embedding_speed.py --threads 2 --images 16
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _util import parser, setup, table

from samprompt import load_sam
from samprompt.data import make_phantoms, preprocess_image


def _seconds_per_image(
    fn: Callable[[torch.Tensor], np.ndarray], batch: torch.Tensor, size: int
) -> tuple[float, np.ndarray]:
    fn(batch[:size])  # warm-up
    outs, tick = [], time.perf_counter()
    for start in range(0, len(batch), size):
        outs.append(fn(batch[start : start + size]))
    return (time.perf_counter() - tick) / len(batch), np.concatenate(outs)


def _torch(
    encoder: torch.nn.Module, channels_last: bool = False, bf16: bool = False
) -> Callable[[torch.Tensor], np.ndarray]:
    def run(x: torch.Tensor) -> np.ndarray:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return encoder(x).float().numpy()

    return run


def _onnx(
    encoder: torch.nn.Module, example: torch.Tensor, folder: Path, threads: int
) -> Callable[[torch.Tensor], np.ndarray]:
    path = folder / "encoder.onnx"
    # batch 1 only: TinyViT's traced reshapes fix the batch size
    torch.onnx.export(
        encoder, (example,), str(path), input_names=["image"], output_names=["embedding"],
        opset_version=17, dynamo=False,
    )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x.numpy()})[0]


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--images", type=int, default=16)
    args = p.parse_args()
    setup(args)
    model = load_sam("litemedsam")
    encoder = model.sam.image_encoder.eval()
    images = make_phantoms(args.images, 512, seed=0)
    batch = torch.cat([preprocess_image(model.sam, s.image)[0] for s in images])
    base_s, base = _seconds_per_image(_torch(encoder), batch, 1)
    rows = [["torch fp32, batch 1 (the cache's path)", f"{base_s:.3f}", "1.00", "0"]]

    def add(name: str, fn: Callable[[torch.Tensor], np.ndarray], size: int) -> None:
        seconds, out = _seconds_per_image(fn, batch, size)
        diff = float(np.abs(out - base).max())
        rows.append([name, f"{seconds:.3f}", f"{base_s / seconds:.2f}", f"{diff:.1e}"])

    add("torch fp32, batch 4", _torch(encoder), 4)
    add("torch fp32, channels-last, batch 1", _torch(encoder, channels_last=True), 1)
    add("torch bf16 autocast, batch 1", _torch(encoder, bf16=True), 1)
    with tempfile.TemporaryDirectory() as root:
        threads = torch.get_num_threads()
        add("onnxruntime fp32, batch 1", _onnx(encoder, batch[:1], Path(root), threads), 1)
    print(f"\n## LiteMedSAM image encoder, {args.images} images of 512 px ({threads} threads)")
    table(["variant", "s / image", "speed-up", "max |diff| vs fp32"], rows)


if __name__ == "__main__":
    main()
