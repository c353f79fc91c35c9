"""The one owner of output folders: :class:`RunFolder`.

Every command writes into its output folder through a :class:`RunFolder`: it claims the folder for
a run identity (``run.json``; see :mod:`samprompt.run_identity`), names the files in it, writes them
atomically, keeps the resumable checkpoint, and finishes the folder by dropping the checkpoint and
writing the completion marker last. A folder is *finished* only when that marker says so: a run
killed between two result files is not mistaken for a finished one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from samprompt._version import __version__
from samprompt.atomic import save_torch_atomic, write_json_atomic, write_text_atomic
from samprompt.errors import CheckpointError, RunFolderError
from samprompt.run_identity import differences

__all__ = ["CHECKPOINT", "FINISHED", "RUN_FILE", "RunFolder"]

RUN_FILE = "run.json"
CHECKPOINT = "checkpoint.pt"
#: Written last by :meth:`RunFolder.finish`: the folder holds a complete result.
FINISHED = "finished.json"


def _check_finite(value: Any, where: str = "") -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise RunFolderError(f"run identity holds a non-finite value at {where or 'top level'}")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}[{i}]")


def _prepare(folder: Path) -> None:
    """Create ``folder`` and check it can be written."""
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder}: exists and is not a folder; choose another output path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".samprompt-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RunFolderError(f"{folder}: cannot write there ({exc.strerror or exc})") from exc


def _clear(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _recorded_status(folder: Path, identity: Mapping[str, Any]) -> Literal["new", "same"]:
    """``"same"`` when ``folder`` records this run, ``"new"`` when it is empty; else refuse."""
    record = folder / RUN_FILE
    if not record.is_file():
        if any(folder.iterdir()):
            raise RunFolderError(
                f"{folder} is not empty and has no {RUN_FILE} saying which run wrote it; pass "
                "--overwrite (overwrite=True) to replace its contents, or choose a new output "
                "folder"
            )
        return "new"
    try:
        recorded: Any = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError):
        recorded = None
    if not isinstance(recorded, Mapping):
        raise RunFolderError(
            f"{record}: unreadable run record; pass --overwrite (overwrite=True) to replace "
            "the folder's contents, or choose a new output folder"
        )
    found = differences(identity, recorded)
    if found:
        shown = "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")
        raise RunFolderError(
            f"{folder} holds another run ({shown}); pass --overwrite (overwrite=True) to "
            "replace it, or choose a new output folder"
        )
    return "same"


class RunFolder:
    """An output folder claimed for one run.

    Use :meth:`claim`; then :meth:`path` names a file, the ``write_*`` methods write atomically,
    :meth:`save_checkpoint` / :meth:`load_checkpoint` keep the resumable state and :meth:`finish`
    marks the folder complete.

    Attributes
    ----------
    root : pathlib.Path
        The folder.
    identity : dict
        The run it was claimed for.
    status : {"new", "same"}
        ``"same"`` when the folder already held this run (its results may be reused or resumed).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> folder = RunFolder.claim(root, {"model": "m", "lr": 1e-5})
    >>> folder.status, folder.finished
    ('new', False)
    >>> _ = folder.write_json("metrics.json", {"f1_mean": 0.9}); folder.finish()
    >>> again = RunFolder.claim(root, {"model": "m", "lr": 1e-5})
    >>> again.status, again.finished
    ('same', True)
    >>> RunFolder.claim(root, {"model": "m", "lr": 1e-4})
    Traceback (most recent call last):
    ...
    samprompt.errors.RunFolderError: ... holds another run (lr: 1e-05 there, 0.0001 now); ...
    """

    def __init__(
        self, root: Path, identity: Mapping[str, Any], status: Literal["new", "same"]
    ) -> None:
        self.root = root
        self.identity = dict(identity)
        self.status = status

    @classmethod
    def claim(
        cls, folder: str | Path, identity: Mapping[str, Any], *, overwrite: bool = False
    ) -> RunFolder:
        """Make ``folder`` the home of the run ``identity`` describes.

        A folder already recorded with a *superset* of ``identity`` (e.g. a cross-validation fold,
        which adds its test split, claimed by the fine-tuning inside it) counts as the same run.
        ``overwrite`` empties the folder first, whatever it holds.

        Raises
        ------
        RunFolderError
            The folder is a file, cannot be created or written, or holds another run (the
            message names what differs) and ``overwrite`` is False.
        """
        root = Path(folder)
        _check_finite(dict(identity))
        _prepare(root)
        if overwrite:
            _clear(root)
        status = _recorded_status(root, identity)
        if status == "new":
            record = {**dict(identity), "samprompt_version": __version__, "written_by": "samprompt"}
            write_json_atomic(root / RUN_FILE, record)
        return cls(root, identity, status)

    # ---------------------------------------------------------------- files
    def path(self, name: str) -> Path:
        """The path of the file ``name`` in this folder."""
        return self.root / name

    def write_json(self, name: str, data: Any) -> Path:
        """Write ``name`` as JSON, atomically (non-finite numbers refused)."""
        return write_json_atomic(self.path(name), data)

    def write_text(self, name: str, text: str) -> Path:
        """Write ``name`` as text, atomically."""
        return write_text_atomic(self.path(name), text)

    def read_json(self, name: str) -> Any:
        """Read back a JSON file this folder holds."""
        return json.loads(self.path(name).read_text())

    # ----------------------------------------------------------- checkpoint
    @property
    def has_checkpoint(self) -> bool:
        """Whether an unfinished run left its resumable state here."""
        return self.path(CHECKPOINT).is_file()

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Write the resumable state (replacing the previous one atomically)."""
        save_torch_atomic(self.path(CHECKPOINT), dict(state))

    def load_checkpoint(self, identity: Mapping[str, Any]) -> dict[str, Any] | None:
        """The resumable state, if any; refused when another run (``identity``) wrote it."""
        path = self.path(CHECKPOINT)
        if not path.is_file():
            return None
        try:
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{path}: unreadable training checkpoint ({exc})") from exc
        found = differences(identity, state.get("identity") or {})
        if found:
            raise CheckpointError(
                f"{path}: was written by another run ({'; '.join(found[:4])}); use a new --out "
                "folder, the same settings and data, or --overwrite"
            )
        return state

    # --------------------------------------------------------------- finish
    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` completed (its marker is written last)."""
        return self.path(FINISHED).is_file()

    def finish(self) -> None:
        """Drop the resumable checkpoint and write the completion marker, last."""
        self.path(CHECKPOINT).unlink(missing_ok=True)
        write_json_atomic(
            self.path(FINISHED),
            {"samprompt_version": __version__, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
        )

    def check_resumable(self, resume: bool) -> None:
        """Refuse to silently restart or redo this same run without ``resume``/``overwrite``."""
        if self.status != "same" or resume:
            return
        if self.has_checkpoint:
            raise RunFolderError(
                f"{self.root} holds an unfinished run with these same settings; pass --resume "
                "(resume=True) to continue it, or --overwrite (overwrite=True) to start again"
            )
        if self.finished or self.path("model.json").is_file():
            raise RunFolderError(
                f"{self.root} already holds this finished run; pass --overwrite "
                "(overwrite=True) to train it again, or choose a new output folder"
            )
