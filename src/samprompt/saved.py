"""Saved model folders: ``decoder.safetensors`` (mask decoder only) + ``model.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import torch
from safetensors.torch import load_file

from samprompt._version import source_version
from samprompt.atomic import save_safetensors_atomic, write_json_atomic
from samprompt.data.sample import Sample
from samprompt.embeddings import EmbeddingCache
from samprompt.errors import CheckpointError, CheckpointMismatchError, PluginError, SampromptError
from samprompt.finite import first_non_finite
from samprompt.hashing import file_sha256
from samprompt.model import LoadedSam, load_decoder_weights, load_sam, save_decoder_weights
from samprompt.plugins import get_strategy
from samprompt.prompts.calls import load_strategy_state, prompt_tokens, strategy_state
from samprompt.prompts.strategy import PromptStrategy
from samprompt.prompts.tokens import PromptTokens
from samprompt.segmenter import SamSegmenter

__all__ = [
    "check_weights_hash",
    "load_sam_model",
    "read_model_json",
    "save_sam_model",
    "verify_strategy_roundtrip",
]

FORMAT = "samprompt-model"
#: Version 2 records ``weights_sha256``; versions 1 and 2 are read.
FORMAT_VERSION = 2
#: The learned prompt of a strategy that trains one, beside ``decoder.safetensors``.
PROMPT_FILE = "prompt.safetensors"
#: The JSON Schema every written ``model.json`` follows.
SCHEMA_PATH = Path(__file__).parent / "schemas" / "model.schema.json"


def save_sam_model(
    folder: str | Path,
    model: LoadedSam,
    strategy: PromptStrategy,
    *,
    threshold: float,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``decoder.safetensors`` and ``model.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not 0.0 < threshold < 1.0:
        raise SampromptError(
            f"{folder}: threshold must be a probability in (0, 1), got {threshold}"
        )
    verify_strategy_roundtrip(strategy)
    weights = folder / "decoder.safetensors"
    save_decoder_weights(model.sam, weights, {"sam_sha256": model.sha256})
    prompt_hash = _save_prompt(folder / PROMPT_FILE, prompt_tokens(strategy, model.sam))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": "sam",
        "samprompt_version": source_version(),
        "sam": {
            "family": model.family,
            "variant": model.variant,
            "seed": model.seed,
            "checkpoint": model.spec,
            "sha256": model.sha256,
            "random_weights": model.is_random,
        },
        "strategy": {
            "name": strategy.name,
            "state": strategy_state(strategy),
            "needs_mask_at_inference": bool(strategy.needs_mask_at_inference),
        },
        "weights_sha256": file_sha256(weights),
        **({"prompt_weights_sha256": prompt_hash} if prompt_hash else {}),
        "threshold": threshold,
        "config": dict(config),
        **dict(extra or {}),
    }
    write_json_atomic(folder / "model.json", meta)
    return folder


def _save_prompt(path: Path, tokens: PromptTokens | None) -> str | None:
    """Write a learned prompt's tensors (refusing non-finite ones); its sha256, or None."""
    if tokens is None:
        path.unlink(missing_ok=True)
        return None
    tensors = {k: v.detach().cpu().contiguous() for k, v in tokens.state_dict().items()}
    bad = [k for k, v in tensors.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise SampromptError(f"{path}: refusing to save a non-finite learned prompt ({bad})")
    save_safetensors_atomic(path, tensors)
    return file_sha256(path)


def _load_prompt(
    folder: Path, meta: dict[str, Any], strategy: PromptStrategy, model: LoadedSam
) -> None:
    """Put the saved learned prompt into the strategy's tokens (checked against model.json)."""
    tokens = prompt_tokens(strategy, model.sam)
    recorded = meta.get("prompt_weights_sha256")
    path = folder / PROMPT_FILE
    if tokens is None and recorded is None:
        return
    if tokens is None or recorded is None:
        raise CheckpointError(
            f"{folder / 'model.json'}: strategy {strategy.name!r} "
            + ("learns a prompt but no prompt_weights_sha256 is recorded" if tokens is not None
               else "learns no prompt, yet prompt_weights_sha256 is recorded")
        )  # fmt: skip
    check_weights_hash(folder, {"weights_sha256": recorded}, path)
    try:
        tokens.load_state_dict(load_file(str(path)), strict=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: does not fit strategy {strategy.name!r}'s prompt ({exc})"
        ) from exc


def read_model_json(folder: str | Path) -> dict[str, Any]:
    """Read ``model.json`` and validate it completely before any of it is used: its JSON Schema
    (:data:`SCHEMA_PATH`: types, ranges, required fields) and the checks JSON cannot express.

    Raises
    ------
    CheckpointError
        Missing, not JSON, not a samprompt model, or a field of the wrong type or range; the
        message names the file and the field.
    """
    path = Path(folder) / "model.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; expected a folder written by samprompt finetune")
    try:
        meta: Any = json.loads(path.read_text())
    except (ValueError, RecursionError) as exc:  # also 5000-digit numbers, 100,000-deep arrays
        raise CheckpointError(f"{path}: invalid JSON ({str(exc)[:200]})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: not a samprompt model (format {found!r})")
    if meta.get("format_version") not in (1, 2):
        raise CheckpointError(
            f"{path}: model format version {meta.get('format_version')!r} is not one this "
            f"samprompt reads (1-{FORMAT_VERSION}); upgrade samprompt"
        )
    _validate(path, meta)
    return meta


@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema)


def _validate(path: Path, meta: dict[str, Any]) -> None:
    """The schema, then: every number finite."""
    error = jsonschema.exceptions.best_match(_validator().iter_errors(meta))
    if error is None:
        _check_finite_numbers(path, meta)
        return
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        raise CheckpointError(
            f"{path}: field {'.'.join(filter(None, [where, missing]))} is missing"
        )
    raise CheckpointError(f"{path}: field {where or '(top level)'}: {error.message[:200]}")


def _check_finite_numbers(path: Path, meta: dict[str, Any]) -> None:
    where = first_non_finite(meta)
    if where is not None:
        raise CheckpointError(f"{path}: field {where}: not a finite number")


def check_weights_hash(folder: Path, meta: dict[str, Any], weights: Path) -> None:
    """Refuse weights that are not the ones ``model.json`` was written with."""
    recorded = meta.get("weights_sha256")
    if recorded is None:  # folders written before samprompt recorded the hash
        return
    if not weights.is_file():
        raise CheckpointError(f"{weights}: not found")
    if file_sha256(weights) != recorded:
        raise CheckpointError(
            f"{weights}: is not the file this model was saved with (sha256 differs from "
            f"model.json's weights_sha256); restore it or refit"
        )


def verify_strategy_roundtrip(strategy: PromptStrategy) -> None:
    """Check a fitted strategy survives ``state_dict`` -> JSON -> a fresh plugin instance.

    A saved model rebuilds its strategy from the registry and the saved state; a plugin whose
    state does not restore it would make ``predict`` prompt differently from training.
    """
    name = strategy.name
    state = strategy_state(strategy)
    try:
        fresh = get_strategy(name)
        fresh.load_state_dict(state)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(
            f"prompt strategy {name!r}: load_state_dict() cannot restore its own state_dict() "
            f"({type(exc).__name__}: {exc}); see the plugin guide's fitted_state / load_fitted"
        ) from exc
    probe = _probe_sample()
    try:
        before = strategy.inference_prompt(probe)
    except Exception:  # the strategy cannot prompt this synthetic image at all: nothing to compare
        return
    try:
        after = fresh.inference_prompt(probe)
    except Exception as exc:
        raise PluginError(
            f"prompt strategy {name!r}: inference_prompt() fails after a state round trip "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if not before.same_as(after):
        raise PluginError(
            f"prompt strategy {name!r}: gives another inference prompt after state_dict() / "
            "load_state_dict(); its fitted state is not saved (implement fitted_state and "
            "load_fitted, see the plugin guide)"
        )


def _probe_sample() -> Sample:
    image = np.zeros((64, 48, 3), np.uint8)
    mask = np.zeros((64, 48), bool)
    mask[16:48, 8:40] = True
    return Sample("roundtrip-probe", image, mask)


def _saved_strategy(folder: Path, meta: dict[str, Any]) -> PromptStrategy:
    """The model's prompt strategy, rebuilt from the registry and its saved state; an unknown
    strategy or a state it refuses is one error naming ``model.json``'s field."""
    try:
        strategy = get_strategy(meta["strategy"]["name"])
        load_strategy_state(strategy, meta["strategy"]["state"])
    except SampromptError as exc:
        raise CheckpointError(f"{folder / 'model.json'}: field strategy: {exc}") from exc
    return strategy


def load_sam_model(
    folder: str | Path,
    checkpoint: str | Path | LoadedSam | None = None,
    *,
    cache: EmbeddingCache | None = None,
    device: str = "cpu",
) -> SamSegmenter:
    """Rebuild the fine-tuned :class:`~samprompt.segmenter.SamSegmenter` saved in ``folder``.

    ``checkpoint`` may be a path or spec (default: the one recorded in ``model.json``) or an
    already loaded model, whose decoder weights are then replaced.
    """
    folder = Path(folder)
    meta = read_model_json(folder)
    if meta.get("kind") != "sam":
        raise CheckpointError(f"{folder}: holds a {meta.get('kind')!r} model, not a fine-tuned SAM")
    if isinstance(checkpoint, LoadedSam):
        model, spec = checkpoint, checkpoint.spec
    else:
        spec = str(checkpoint) if checkpoint is not None else meta["sam"]["checkpoint"]
        try:
            model = load_sam(spec, seed=int(meta["sam"].get("seed", 0)))
        except CheckpointError as exc:
            if checkpoint is not None:
                raise
            raise CheckpointError(f"{folder / 'model.json'}: field sam.checkpoint: {exc}") from exc
    if model.sha256 != meta["sam"]["sha256"]:
        raise CheckpointMismatchError(
            f"{folder}: the decoder was trained on base checkpoint {meta['sam']['checkpoint']} "
            f"(sha256 {meta['sam']['sha256'][:12]}...), but {spec} has sha256 {model.sha256[:12]}...; "
            "pass the same base checkpoint with --checkpoint"
        )
    check_weights_hash(folder, meta, folder / "decoder.safetensors")
    load_decoder_weights(model.sam, folder / "decoder.safetensors")
    strategy = _saved_strategy(folder, meta)
    _load_prompt(folder, meta, strategy, model)
    config = meta.get("config", {})
    return SamSegmenter(
        model.to(device),
        strategy,
        cache or EmbeddingCache(),
        threshold=float(meta["threshold"]),
        batch_size=int(config.get("batch_size", 8)),
        device=device,
        precision=str(config.get("precision", "fp32")),
        multimask_output=bool(config.get("multimask_output", False)),
    )
