"""What makes the embedding step cheaper on a CPU without changing its output: LiteMedSAM's
image encoder (TinyViT, 256 px) in torch fp32 (the cache's path) against batching, channels-last,
bf16 autocast, the same encoder exported to ONNX and run by onnxruntime, and that ONNX graph
with its matrix-multiply weights quantised to int8 (onnxruntime's dynamic quantisation).

Every variant encodes the same images; its largest absolute difference from the fp32 torch
embeddings is printed beside its speed (the cache stores float16, whose step near the embeddings'
largest values is about 1e-3: a variant within that changes nothing a user can see), with its
relative difference (L2 norm of the difference over that of the embeddings). The roofline columns
divide the encoder's FLOPs per image (counted by ``torch.utils.flop_counter``) by each variant's
seconds and by the device's fp32 matrix-multiply peak: an fp32 variant near 100 % cannot get much
faster without changing the arithmetic. The process keeps freed memory, as samprompt's command
line does (:func:`samprompt.keep_freed_memory`).

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
from _util import matmul_peak, parser, run_main, setup, table
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch.utils.flop_counter import FlopCounterMode

from samprompt import keep_freed_memory, load_sam
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


def _export(encoder: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    # batch 1 only: TinyViT's traced reshapes fix the batch size
    torch.onnx.export(
        encoder, (example,), str(path), input_names=["image"], output_names=["embedding"],
        opset_version=17, dynamo=False,
    )  # fmt: skip
    return path


def _int8(path: Path) -> Path:
    quantised = path.with_name("encoder-int8.onnx")
    quantize_dynamic(
        str(path),
        str(quantised),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
    )
    return quantised


def _onnx(path: Path, threads: int) -> Callable[[torch.Tensor], np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x.numpy()})[0]


def _gflop_per_image(encoder: torch.nn.Module, example: torch.Tensor) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        encoder(example)
    return counter.get_total_flops() / 1e9


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--images", type=int, default=16)
    args = p.parse_args()
    setup(args)
    keep_freed_memory()
    model = load_sam("litemedsam")
    encoder = model.sam.image_encoder.eval()
    images = make_phantoms(args.images, 512, seed=0)
    batch = torch.cat([preprocess_image(model.sam, s.image)[0] for s in images])
    gflop, peak = _gflop_per_image(encoder, batch[:1]), matmul_peak("cpu", torch.float32)
    base_s, base = _seconds_per_image(_torch(encoder), batch, 1)
    rows: list[list[str]] = []

    def row(name: str, seconds: float, out: np.ndarray) -> None:
        diff = float(np.abs(out - base).max())
        relative = float(np.linalg.norm(out - base) / np.linalg.norm(base))
        rows.append([
            name, f"{seconds:.3f}", f"{base_s / seconds:.2f}", f"{diff:.1e}", f"{relative:.1e}",
            f"{gflop / seconds:.1f}", f"{gflop / seconds / peak:.0%}",
        ])  # fmt: skip

    def add(name: str, fn: Callable[[torch.Tensor], np.ndarray], size: int) -> None:
        row(name, *_seconds_per_image(fn, batch, size))

    row("torch fp32, batch 1 (the cache's path)", base_s, base)
    add("torch fp32, batch 4", _torch(encoder), 4)
    add("torch fp32, channels-last, batch 1", _torch(encoder, channels_last=True), 1)
    add("torch bf16 autocast, batch 1", _torch(encoder, bf16=True), 1)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as root:
        path = _export(encoder, batch[:1], Path(root) / "encoder.onnx")
        add("onnxruntime fp32, batch 1", _onnx(path, threads), 1)
        add("onnxruntime int8 weights (dynamic), batch 1", _onnx(_int8(path), threads), 1)
    print(f"\n## LiteMedSAM image encoder, {args.images} images of 512 px ({threads} threads)")
    print(
        f"{gflop:.1f} GFLOP per image; at the fp32 matrix-multiply peak ({peak:.1f} GFLOP/s) the "
        f"encoder would still take {gflop / peak:.2f} s per image"
    )
    header = ["variant", "s / image", "speed-up", "max |diff| vs fp32", "relative diff"]
    table([*header, "GFLOP/s", "of fp32 peak"], rows)


if __name__ == "__main__":
    run_main(main)
