"""Where samprompt keeps files by default (a light module: the command line imports it)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$SAMPROMPT_CACHE`` or ``~/.cache/samprompt/embeddings``."""
    env = os.environ.get("SAMPROMPT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "samprompt" / "embeddings"
