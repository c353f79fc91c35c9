"""Writes that never leave a half-written file, and never a non-finite number."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from samprompt.errors import SampromptError

__all__ = ["mark_permissions", "write_json_atomic"]


def mark_permissions(path: Path) -> None:
    """Give ``path`` the permissions of the user's other new files (some writers make 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file and rename it over ``path``.

    Non-finite numbers are refused (``NaN`` is not JSON, and a non-finite result is never written
    as if it were one).
    """
    try:
        text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False)
    except ValueError as exc:
        raise SampromptError(f"{path}: refusing to write a non-finite number ({exc})") from exc
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
