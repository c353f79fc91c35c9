"""SAM's image encoder through onnxruntime, for :class:`~samprompt.EmbeddingCache` on a CPU.

The encoder is exported once per checkpoint (``ENCODER.onnx`` under the cache folder, named by
the encoder's weight hash) and run by onnxruntime's CPU provider. On LiteMedSAM's TinyViT it
encodes an image about 1.5x faster than torch on 2 cores (``benchmarks/embedding_speed.py``)
and its embeddings differ from torch's by about 1e-5, below the float16 step the cache stores
them in, so cache entries are shared between the two backends.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

try:  # optional: pip install 'samprompt[onnx]'
    import onnxruntime as _ort
except ImportError:  # pragma: no cover - exercised only without the extra
    _ort = None

from samprompt.atomic import write_atomic
from samprompt.errors import ConfigError
from samprompt.model import LoadedSam

__all__ = ["BACKENDS", "OnnxEncoder"]

#: The encoder backends :class:`~samprompt.EmbeddingCache` knows.
BACKENDS = ("torch", "onnxruntime")


def _onnxruntime() -> ModuleType:
    if _ort is None:
        raise ConfigError(
            "the onnxruntime encoder backend needs onnxruntime: pip install 'samprompt[onnx]'"
        )
    module: ModuleType = _ort
    return module


class OnnxEncoder:
    """``model``'s image encoder as an onnxruntime session (one image per call).

    Parameters
    ----------
    model : LoadedSam
        The model whose encoder runs.
    folder : str or pathlib.Path
        Where the exported ``.onnx`` file is kept (reused by later runs).
    threads : int or None
        onnxruntime's intra-op threads; None: torch's current thread count.
    """

    def __init__(self, model: LoadedSam, folder: str | Path, threads: int | None = None) -> None:
        ort = _onnxruntime()
        self.path = Path(folder) / f"encoder-{model.encoder_sha256[:16]}.onnx"
        if not self.path.is_file():
            self._export(model, self.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )

    @staticmethod
    def _export(model: LoadedSam, path: Path) -> None:
        size = model.preprocessing.img_size
        example = torch.zeros(1, 3, size, size)
        encoder = model.sam.image_encoder.eval().to("cpu")

        def export(tmp: Path) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer notes on TinyViT's shape arithmetic
                torch.onnx.export(
                    encoder, (example,), str(tmp), input_names=["image"],
                    output_names=["embedding"], opset_version=17, dynamo=False,
                )  # fmt: skip

        write_atomic(path, export)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Embeddings of a ``(B, 3, S, S)`` preprocessed batch, one image at a time (the export
        fixes the batch size at 1)."""
        images = batch.detach().to("cpu", torch.float32).numpy()
        outs = [self.session.run(None, {"image": image[None]})[0] for image in images]
        return torch.from_numpy(np.concatenate(outs))
