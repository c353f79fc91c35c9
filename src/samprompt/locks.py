"""Advisory locks on output folders: two processes never write one run folder at once.

A folder is locked with ``flock`` on the folder itself (no lock file is left behind), held until
the process exits. Claims from the same process share the lock. Where the holder can be found
(Linux's ``/proc/locks``), the refusal names its process id and command line.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from samprompt.errors import RunFolderError

__all__ = ["lock_folder", "unlock_folder"]

#: Folders this process holds, by resolved path: the open descriptor carrying the lock.
_HELD: dict[Path, int] = {}


def _holder(folder: Path) -> str:
    """``"process N (command)"`` holding a lock on ``folder``, or ``"another process"``."""
    try:
        inode = os.stat(folder).st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
                pid = fields[4]
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                text = " ".join(command.decode(errors="replace").split())
                return f"process {pid} ({text[:120]})"
    except (OSError, ValueError):
        pass
    return "another process"


def lock_folder(folder: Path) -> None:
    """Lock ``folder`` for this process, or refuse when another process holds it."""
    key = folder.resolve()
    if key in _HELD:
        return
    descriptor = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise RunFolderError(
            f"{folder}: in use by {_holder(key)}; wait for it to finish or choose another "
            "output folder"
        ) from None
    _HELD[key] = descriptor


def unlock_folder(folder: Path) -> None:
    """Give up this process's lock on ``folder`` (no-op when not held)."""
    descriptor = _HELD.pop(folder.resolve(), None)
    if descriptor is not None:
        os.close(descriptor)
