"""What produced a run folder, and the rule that a folder is only reused by the same run.

Every folder samprompt writes results into (a fine-tuning run, a cross-validation root and each of
its folds, a cross-dataset run, an evaluation) gets a ``run.json``: the base model's hash, the
prompt strategy and its parameters, the training configuration, the data (ids and content
hashes), the protocol, and the samprompt version. A later run may reuse or resume that folder only
when it describes itself the same way; otherwise it is refused with the differences named, unless
the caller asks to overwrite (:class:`samprompt.runs.RunFolder` applies the rule).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from samprompt.model import LoadedSam
from samprompt.prompts.strategy import PromptStrategy

__all__ = ["describe_model", "describe_strategy", "differences"]

_NOT_COMPARED = ("samprompt_version", "written_by")
#: Protocol options recorded only when used (so that runs without them keep their identity): a
#: folder recording one is not the home of a run that does not use it, although the run's
#: identity is otherwise a subset of the record.
OPTIONAL_PROTOCOL_KEYS = ("train_size", "augment", "tta")


def describe_model(model: LoadedSam) -> dict[str, Any]:
    """The identity of a :class:`~samprompt.LoadedSam`: family, variant, weights hash, seed."""
    return {
        "family": model.family,
        "variant": model.variant,
        "sha256": model.sha256,
        "random_weights": bool(model.is_random),
        "seed": model.seed if model.is_random else None,
    }


def describe_strategy(strategy: PromptStrategy) -> dict[str, Any]:
    """A strategy's name and constructor parameters (its fitted state comes from the data)."""
    state = strategy.state_dict() if hasattr(strategy, "state_dict") else {}
    params = state.get("params", {}) if isinstance(state, Mapping) else {}
    return {"name": strategy.name, "params": json.loads(json.dumps(params, default=str))}


def differences(
    wanted: Mapping[str, Any], recorded: Mapping[str, Any], path: str = ""
) -> list[str]:
    """What ``wanted`` says that ``recorded`` does not (``recorded`` may hold more keys, but not
    an :data:`OPTIONAL_PROTOCOL_KEYS` option that ``wanted`` does not use)."""
    found: list[str] = []
    if not path and "protocol" in wanted:
        found += [
            f"{key}: {_short(recorded[key])} there, not used now"
            for key in OPTIONAL_PROTOCOL_KEYS
            if key in recorded and key not in wanted
        ]
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
