"""The samprompt version, in a module of its own so any module can import it without cycles."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"

_CHECKOUT = Path(__file__).resolve().parents[2]


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


@functools.cache
def source_version(root: Path | None = None) -> str:
    """The version to record beside a result: ``__version__``, plus the commit of the source
    when samprompt runs from a git checkout (``0.1.0+g3f7615b``, ``.dirty`` when ``src/`` has
    uncommitted changes), so a figure names the code that produced it.

    Parameters
    ----------
    root : pathlib.Path, optional
        The checkout to read; default: the one this module lives in, if any.

    Returns
    -------
    str
        ``__version__`` alone for an installed wheel, or where git cannot be run.
    """
    root = _CHECKOUT if root is None else root
    if not ((root / ".git").exists() and (root / "src" / "samprompt").is_dir()):
        return __version__
    try:
        commit = _git(root, "rev-parse", "--short=7", "HEAD")
        changed = _git(root, "status", "--porcelain", "--untracked-files=no", "--", "src")
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if changed else ''}"
