"""EmbeddingCache: each image goes through SAM's frozen image encoder once, ever.

The image encoder is frozen, so an embedding never changes during training. Entries are keyed by
(model family, encoder weights hash, image content hash, preprocessing version, input size and
normalisation), so two families' embeddings of one image never collide, stored as fp16 ``.npy`` files
written to a temporary name and renamed (a killed run never leaves a half-written entry), and read
back memory-mapped, so training memory does not grow with the number of images.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import numpy as np
import torch
from tqdm.auto import tqdm

from samprompt.atomic import write_npy_atomic
from samprompt.data.preprocess import PREPROCESSING_VERSION, preprocess_image
from samprompt.data.sample import Dataset, as_dataset
from samprompt.errors import ConfigError, SampromptError
from samprompt.frames import autocast
from samprompt.hashing import array_sha256
from samprompt.locations import default_cache_dir
from samprompt.model import LoadedSam
from samprompt.onnx_encoder import BACKENDS, OnnxEncoder

__all__ = [
    "RESIDENT_LIMIT_BYTES",
    "CacheStats",
    "EmbeddingCache",
    "EmbeddingIndex",
    "default_cache_dir",
]


@attrs.define
class CacheStats:
    """Counters of one cache object: entries found, entries computed, images encoded."""

    hits: int = 0
    misses: int = 0
    encoder_calls: int = 0


#: Splits whose embeddings take at most this many bytes (fp16) are held on the training device
#: for the whole of training (about 1,000 SAM embeddings); larger ones stay memory-mapped.
RESIDENT_LIMIT_BYTES = 2 * 2**30


@attrs.frozen(eq=False)
class EmbeddingIndex:
    """The cache entries of a dataset, position by position.

    Attributes
    ----------
    paths : tuple of pathlib.Path
        One ``.npy`` file per sample: ``(256, h, w)`` float16 (``64x64`` for SAM).
    resident : torch.Tensor or None
        All entries as one fp16 tensor on a device, when :meth:`to_resident` made it so: then
        :meth:`load` neither reads files nor copies between host and device.
    """

    paths: tuple[Path, ...]
    resident: torch.Tensor | None = attrs.field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, positions: Sequence[int], device: str | torch.device = "cpu") -> torch.Tensor:
        """Return the embeddings at ``positions`` as a ``(B, 256, h, w)`` float32 tensor."""
        if self.resident is not None and self.resident.device == torch.device(device):
            where = torch.as_tensor(list(positions), device=self.resident.device)
            return self.resident.index_select(0, where).float()
        arrays = [np.load(self.paths[i], mmap_mode="r") for i in positions]
        batch = torch.from_numpy(np.stack(arrays))
        if torch.device(device).type == "cuda":
            # fp16 over the bus (half the bytes), from pinned memory, converted on the GPU
            return batch.pin_memory().to(device, non_blocking=True).float()
        return batch.float()

    def nbytes(self) -> int:
        """Bytes of all entries (fp16), read from the files' headers."""
        return sum(int(np.load(p, mmap_mode="r").nbytes) for p in self.paths)

    def to_resident(
        self, device: str | torch.device, limit: int = RESIDENT_LIMIT_BYTES
    ) -> EmbeddingIndex:
        """This index with every entry held on ``device`` (fp16), or itself when larger than
        ``limit`` bytes. Training reads each entry once per epoch; holding them avoids a file read
        and, on a GPU, a host-to-device copy per step."""
        if self.resident is not None or not self.paths or self.nbytes() > limit:
            return self
        stacked = torch.from_numpy(np.stack([np.load(p) for p in self.paths]))
        return EmbeddingIndex(self.paths, stacked.to(device))


class EmbeddingCache:
    """A content-addressed, on-disk cache of SAM image embeddings.

    Parameters
    ----------
    root : str or pathlib.Path, optional
        Cache folder; default :func:`default_cache_dir`.
    batch_size : int
        Images per encoder call.
    precision : {"fp32", "bf16"}
        ``bf16`` runs the encoder under bfloat16 autocast (about 2x faster on CPU).
    progress : bool
        Show a progress bar while encoding.
    backend : {"torch", "onnxruntime"}
        What runs the encoder. ``onnxruntime`` (CPU, fp32 only) exports the encoder once into
        ``root/onnx`` and is about 1.5x faster on a CPU (:mod:`samprompt.onnx_encoder`); its
        embeddings agree with torch's within the cache's float16 step.

    Examples
    --------
    >>> cache = EmbeddingCache("cache")  # doctest: +SKIP
    >>> index = cache.embed(load_sam("random:tiny"), make_phantoms(4))  # doctest: +SKIP
    >>> cache.stats.misses, index.load([0]).shape  # doctest: +SKIP
    (4, torch.Size([1, 256, 64, 64]))
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        batch_size: int = 1,
        precision: str = "fp32",
        progress: bool = True,
        backend: str = "torch",
    ) -> None:
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "onnxruntime" and precision != "fp32":
            raise ConfigError("the onnxruntime encoder backend runs fp32 only")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.root = Path(root) if root is not None else default_cache_dir()
        self.batch_size = batch_size
        self.precision = precision
        self.progress = progress
        self.backend = backend
        self.stats = CacheStats()

    def entry_path(self, model: LoadedSam, image: np.ndarray) -> Path:
        """Where the embedding of ``image`` under ``model``'s encoder is (or will be) stored."""
        encoder = model.encoder_sha256
        prep = model.preprocessing
        text = (
            f"{model.family}|{encoder}|{array_sha256(image)}|{PREPROCESSING_VERSION}|"
            f"{prep.img_size}|{prep.pixel_mean}|{prep.pixel_std}"
        )
        key = hashlib.sha256(text.encode()).hexdigest()
        return self.root / encoder[:16] / key[:2] / f"{key}.npy"

    @staticmethod
    def _readable(path: Path, shape: tuple[int, ...]) -> bool:
        """A usable entry: a readable float16 array of ``shape``, all finite (else it is
        recomputed, with a warning naming the file)."""
        if not path.is_file():
            return False
        try:
            entry = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError):
            return False
        if entry.dtype != np.float16 or tuple(entry.shape) != shape:
            warnings.warn(
                f"{path}: cached embedding is {entry.dtype} {tuple(entry.shape)}, expected "
                f"float16 {shape}; recomputing it",
                stacklevel=3,
            )
            return False
        if not bool(np.isfinite(entry).all()):
            warnings.warn(
                f"{path}: cached embedding holds non-finite values; recomputing it", stacklevel=3
            )
            return False
        return True

    @staticmethod
    def _shape(model: LoadedSam) -> tuple[int, ...]:
        prompt_encoder = model.sam.prompt_encoder
        return (int(prompt_encoder.embed_dim), *map(int, prompt_encoder.image_embedding_size))

    def missing(self, model: LoadedSam, samples: Dataset | Sequence[object]) -> list[int]:
        """Positions of the images of ``samples`` whose embedding is not cached yet."""
        dataset = as_dataset(samples)  # type: ignore[arg-type]
        shape = self._shape(model)
        return [
            i
            for i in range(len(dataset))
            if not self._readable(self.entry_path(model, dataset[i].image), shape)
        ]

    def embed(
        self,
        model: LoadedSam,
        samples: Dataset | Sequence[object],
        *,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> EmbeddingIndex:
        """Make sure every image of ``samples`` is cached; return their entries in order.

        With ``world_size > 1`` (see :mod:`samprompt.distributed`) rank ``r`` computes only the
        missing images at positions ``i % world_size == r``; the caller synchronises ranks before
        reading other ranks' entries.
        """
        dataset = as_dataset(samples)  # type: ignore[arg-type]
        shape = self._shape(model)
        paths: list[Path] = []
        todo: list[int] = []
        for i in range(len(dataset)):
            path = self.entry_path(model, dataset[i].image)
            paths.append(path)
            if self._readable(path, shape):
                self.stats.hits += 1
            else:
                self.stats.misses += 1
                if i % world_size == rank:
                    todo.append(i)
        if todo:
            self._compute(model, dataset, todo, paths, device)
        return EmbeddingIndex(tuple(paths))

    def _compute(
        self,
        model: LoadedSam,
        dataset: Dataset,
        todo: list[int],
        paths: list[Path],
        device: str | torch.device,
    ) -> None:
        sam = model.sam
        original_device = sam.device
        sam.image_encoder.to(device)
        sam.to(device)
        encoder = self._encoder(model, device)
        bar = tqdm(total=len(todo), desc="embedding images", unit="img", disable=not self.progress)
        try:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                batch = torch.cat([preprocess_image(sam, dataset[i].image)[0] for i in chunk])
                with torch.inference_mode(), autocast(device, self.precision):
                    out = encoder(batch)
                self.stats.encoder_calls += len(chunk)
                arrays = out.float().to("cpu").numpy().astype(np.float16)
                if not np.isfinite(arrays).all():
                    raise SampromptError(
                        f"the image encoder gave non-finite values for {dataset.ids[chunk[0]]!r} "
                        f"(precision {self.precision}); nothing was cached for it"
                    )
                for i, array in zip(chunk, arrays, strict=True):
                    self._write(paths[i], array)
                bar.update(len(chunk))
        finally:
            bar.close()
            sam.to(original_device)

    def _encoder(
        self, model: LoadedSam, device: str | torch.device
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.backend == "torch":
            encoder: Callable[[torch.Tensor], torch.Tensor] = model.sam.image_encoder
            return encoder
        if torch.device(device).type != "cpu":
            raise ConfigError(f"the onnxruntime encoder backend runs on the CPU, not {device}")
        return OnnxEncoder(model, self.root / "onnx")

    @staticmethod
    def _write(path: Path, array: np.ndarray) -> None:
        write_npy_atomic(path, array)
