"""What produced a run folder, and the rule that a folder is only reused by the same run.

Every folder samprompt writes results into (a fine-tuning run, a cross-validation root and each of
its folds, a cross-dataset run, an evaluation) gets a ``run.json``: the base model's hash, the
prompt strategy and its parameters, the training configuration, the data (ids and content
hashes), the protocol, and the samprompt version. A later run may reuse or resume that folder only
when it describes itself the same way; otherwise it is refused with the differences named, unless
the caller asks to overwrite.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from samprompt._version import __version__
from samprompt.atomic import write_json_atomic
from samprompt.errors import RunFolderError

__all__ = ["RUN_FILE", "claim_run_folder", "describe_model", "describe_strategy", "differences"]

RUN_FILE = "run.json"
_NOT_COMPARED = ("samprompt_version", "written_by")


def describe_model(model: Any) -> dict[str, Any]:
    """The identity of a :class:`~samprompt.LoadedSam`: family, variant, weights hash, seed."""
    return {
        "family": model.family,
        "variant": model.variant,
        "sha256": model.sha256,
        "random_weights": bool(model.is_random),
        "seed": model.seed if model.is_random else None,
    }


def describe_strategy(strategy: Any) -> dict[str, Any]:
    """A strategy's name and constructor parameters (its fitted state comes from the data)."""
    state = strategy.state_dict() if hasattr(strategy, "state_dict") else {}
    params = state.get("params", {}) if isinstance(state, Mapping) else {}
    return {"name": strategy.name, "params": json.loads(json.dumps(params, default=str))}


def differences(
    wanted: Mapping[str, Any], recorded: Mapping[str, Any], path: str = ""
) -> list[str]:
    """What ``wanted`` says that ``recorded`` does not (``recorded`` may hold more keys)."""
    found: list[str] = []
    for key, value in wanted.items():
        if not path and key in _NOT_COMPARED:
            continue
        where = f"{path}{key}"
        if key not in recorded:
            found.append(f"{where}: not recorded")
        elif isinstance(value, Mapping) and isinstance(recorded[key], Mapping):
            found.extend(differences(value, recorded[key], where + "."))
        elif _normalise(value) != _normalise(recorded[key]):
            found.append(f"{where}: {_short(recorded[key])} there, {_short(value)} now")
    return found


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_finite(value: Any, where: str = "") -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise RunFolderError(f"run identity holds a non-finite value at {where or 'top level'}")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}[{i}]")


def _clear(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _check_writable(folder: Path) -> None:
    probe = folder / ".samprompt-write-test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RunFolderError(f"{folder}: cannot write there ({exc.strerror or exc})") from exc


def claim_run_folder(
    folder: str | Path, identity: Mapping[str, Any], *, overwrite: bool = False
) -> Literal["new", "same"]:
    """Make ``folder`` the home of the run ``identity`` describes.

    Parameters
    ----------
    folder : str or pathlib.Path
        The run folder (created if missing).
    identity : mapping
        JSON-serialisable description of the run (see the module docstring). A folder already
        recorded with a *superset* of it (e.g. a cross-validation fold, which adds its test split,
        claimed by the fine-tuning inside it) counts as the same run.
    overwrite : bool
        Empty the folder and start afresh, whatever it holds.

    Returns
    -------
    {"new", "same"}
        ``"same"`` when the folder already held this run (its results may be reused or resumed;
        never with ``overwrite``).

    Raises
    ------
    RunFolderError
        The folder is a file, cannot be created or written, or holds another run (the message
        names what differs) and ``overwrite`` is False.
    """
    folder = Path(folder)
    _check_finite(dict(identity))
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder}: exists and is not a folder; choose another output path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"{folder}: cannot create it ({exc.strerror or exc})") from exc
    _check_writable(folder)
    record = folder / RUN_FILE
    if overwrite:
        _clear(folder)
    elif record.is_file():
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
        if not found:
            return "same"
        shown = "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")
        raise RunFolderError(
            f"{folder} holds another run ({shown}); pass --overwrite (overwrite=True) to "
            "replace it, or choose a new output folder"
        )
    elif any(folder.iterdir()):
        raise RunFolderError(
            f"{folder} is not empty and has no {RUN_FILE} saying which run wrote it; pass "
            "--overwrite (overwrite=True) to replace its contents, or choose a new output folder"
        )
    write_json_atomic(
        record, {**dict(identity), "samprompt_version": __version__, "written_by": "samprompt"}
    )
    return "new"
