"""The one atomic writer: every file samprompt writes goes through :func:`atomic_path`.

A file is written under a temporary name in its own folder, flushed to disk (``fsync``), given the
user's usual permissions and renamed over its final name, so a killed process leaves either the
old file or the new one, never half of one. Non-finite numbers are never written as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from samprompt.errors import SampromptError

__all__ = [
    "atomic_path",
    "mark_permissions",
    "staged_folder",
    "save_png_atomic",
    "save_safetensors_atomic",
    "save_torch_atomic",
    "write_atomic",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_npy_atomic",
    "write_text_atomic",
]


def mark_permissions(path: Path) -> None:
    """Give ``path`` the permissions of the user's other new files (some writers make 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is synced and renamed to ``path``.

    The temporary name is hidden and unique per process (``.NAME.tmp-PID``), so two processes
    never write into each other's file. On an error the temporary file is removed.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    tmp.touch()  # an unwritable folder fails here, as an OSError naming the file
    try:
        yield tmp
        _fsync(tmp)
        mark_permissions(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Write ``path`` with ``writer(tmp)``, which must write the temporary path it is given
    (name the format explicitly: the temporary name has no extension)."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return write_atomic(path, write)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write JSON to ``path`` atomically.

    Non-finite numbers are refused (``NaN`` is not JSON, and a non-finite result is never written
    as if it were one).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_json_atomic(folder / "a.json", {"x": float("nan")})
    Traceback (most recent call last):
    ...
    samprompt.errors.SampromptError: ...a.json: refusing to write a non-finite number (...)
    """
    try:
        text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False)
    except ValueError as exc:
        raise SampromptError(f"{path}: refusing to write a non-finite number ({exc})") from exc
    return write_text_atomic(path, text)


def save_torch_atomic(path: str | Path, obj: Any) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    return write_atomic(path, lambda tmp: torch.save(obj, tmp))


def save_safetensors_atomic(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` as safetensors to ``path`` atomically (moved to the CPU, contiguous)."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return write_atomic(path, lambda tmp: save_file(flat, str(tmp), metadata=dict(metadata or {})))


def save_png_atomic(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 ``(H, W)`` or ``(H, W, 3)`` array as PNG to ``path`` atomically."""
    return write_atomic(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def write_npy_atomic(path: str | Path, array: np.ndarray) -> Path:
    """``numpy.save`` ``array`` to ``path`` atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    return write_atomic(path, write)


@contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """Yield a hidden staging folder beside ``out``; on success it becomes ``out`` whole.

    ``out`` must not exist or be an empty folder. The staging folder is named
    ``.NAME.staging-PID``, so a folder left behind by a killed process is recognisable and the
    next export into the same parent removes it.
    """
    final = Path(out)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = final.with_name(f".{final.name}.staging-{os.getpid()}")
    staging.mkdir()
    try:
        yield staging
        for path in staging.iterdir():
            _fsync(path)
            mark_permissions(path)
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        if final.exists():
            final.rmdir()
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
