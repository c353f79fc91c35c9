"""The one owner of output folders: :class:`RunFolder`.

Every command writes into its output folder through a :class:`RunFolder`: it claims the folder for
a run identity (``run.json``; see :mod:`samprompt.run_identity`), names the files in it, writes them
atomically, keeps the resumable checkpoint, and finishes the folder by dropping the checkpoint and
writing the completion marker last. A folder is *finished* only when that marker says so: a run
killed between two result files is not mistaken for a finished one.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch

from samprompt._version import source_version
from samprompt.atomic import save_torch_atomic, write_json_atomic, write_text_atomic
from samprompt.errors import CheckpointError, RunFolderError
from samprompt.finite import first_non_finite
from samprompt.locks import lock_folder, unlock_folder
from samprompt.run_identity import differences

__all__ = [
    "CHECKPOINT",
    "FINISHED",
    "RUN_FILE",
    "RunFolder",
    "check_apart",
    "holds_run",
    "released_on_error",
]

RUN_FILE = "run.json"
CHECKPOINT = "checkpoint.pt"
#: Written last by :meth:`RunFolder.finish`: the folder holds a complete result.
FINISHED = "finished.json"


def _check_finite(value: Any) -> None:
    where = first_non_finite(value)
    if where is not None:
        raise RunFolderError(f"run identity holds a non-finite value at {where}")


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


def _contents(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def _clear(folder: Path) -> None:
    """Empty a folder samprompt wrote (``run.json`` says so); refuse any other."""
    contents = _contents(folder)
    if contents and not (folder / RUN_FILE).is_file():
        shown = ", ".join(p.name for p in contents[:3]) + (", ..." if len(contents) > 3 else "")
        raise RunFolderError(
            f"{folder}: --overwrite (overwrite=True) only empties folders samprompt wrote, and "
            f"this one has no {RUN_FILE}; it holds {len(contents)} entries ({shown}) that would "
            "be removed: choose a new output folder, or empty it yourself"
        )
    for child in contents:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def check_apart(folder: Path, inputs: Mapping[str, str | Path | None]) -> None:
    """An output folder may not be, contain or lie inside any input of the same command."""
    out = folder.resolve()
    for name, given in inputs.items():
        if given is None:
            continue
        source = Path(given).resolve()
        if out == source or out in source.parents or source in out.parents:
            where = (
                "is" if out == source else ("contains" if out in source.parents else "is inside")
            )
            raise RunFolderError(
                f"{folder}: the output folder {where} the command's input {name} ({given}); "
                "choose an output folder apart from every input"
            )


def holds_run(folder: str | Path, identity: Mapping[str, Any]) -> bool:
    """Whether ``folder`` records this run (its run record matches ``identity``), without
    claiming it; False when it is absent, unreadable or another run's."""
    try:
        recorded: Any = json.loads((Path(folder) / RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(recorded, Mapping) and not differences(identity, recorded)


def _recorded_status(folder: Path, identity: Mapping[str, Any]) -> Literal["new", "same"]:
    """``"same"`` when ``folder`` records this run, ``"new"`` when it is empty; else refuse."""
    record = folder / RUN_FILE
    if not record.is_file():
        if any(folder.iterdir()):
            raise RunFolderError(
                f"{folder} is not empty and has no {RUN_FILE} saying samprompt wrote it; choose "
                "a new output folder (samprompt never deletes files it did not write)"
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
        self._created = False

    @classmethod
    def claim(
        cls,
        folder: str | Path,
        identity: Mapping[str, Any],
        *,
        overwrite: bool = False,
        inputs: Mapping[str, str | Path | None] | None = None,
    ) -> RunFolder:
        """Make ``folder`` the home of the run ``identity`` describes, and lock it.

        A folder already recorded with a *superset* of ``identity`` (e.g. a cross-validation fold,
        which adds its test split, claimed by the fine-tuning inside it) counts as the same run.
        ``overwrite`` empties a folder samprompt wrote (one with ``run.json``) first; a folder
        without one is never emptied. ``inputs`` names the command's inputs (``{"--images":
        path}``): the folder may not be, contain or lie inside any of them.

        Raises
        ------
        RunFolderError
            The folder is a file, cannot be created or written, overlaps an input, is in use by
            another process, holds another run (the message names what differs) and
            ``overwrite`` is False, or holds files samprompt did not write.
        """
        root = Path(folder)
        _check_finite(dict(identity))
        check_apart(root, inputs or {})
        created = not root.exists()
        _prepare(root)
        lock_folder(root)
        if overwrite:
            _clear(root)
        status = _recorded_status(root, identity)
        if status == "new":
            record = {
                **dict(identity),
                "samprompt_version": source_version(),
                "written_by": "samprompt",
            }
            write_json_atomic(root / RUN_FILE, record)
        run = cls(root, identity, status)
        run._created = created
        return run

    def release_if_empty(self) -> None:
        """Undo a claim that produced nothing (a run that failed before writing anything): the
        folder is left as it was found, so a retry with other settings is not refused."""
        if self.status != "new" or not self.root.is_dir():
            return
        if [p.name for p in _contents(self.root)] != [RUN_FILE]:
            return
        self.path(RUN_FILE).unlink()
        if self._created:
            unlock_folder(self.root)
            self.root.rmdir()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is not None:
            self.release_if_empty()

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
            {
                "samprompt_version": source_version(),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )

    def check_resumable(self, resume: bool) -> None:
        """Refuse to silently restart or redo this same run without ``resume``/``overwrite``."""
        if self.status != "same":
            return
        if resume and (
            self.finished or (self.path("model.json").is_file() and not self.has_checkpoint)
        ):
            raise RunFolderError(
                f"{self.root} holds this run finished: there is nothing to resume; pass "
                "--overwrite (overwrite=True) to train it again, or choose a new output folder"
            )
        if resume:
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


@contextmanager
def released_on_error(folder: RunFolder | None) -> Iterator[None]:
    """Run a block that writes into ``folder``; if it fails before writing anything, undo the
    claim (see :meth:`RunFolder.release_if_empty`). Only the main process of a torchrun job
    claims folders, so other ranks hand in None."""
    try:
        yield
    except BaseException:
        if folder is not None:
            folder.release_if_empty()
        raise
