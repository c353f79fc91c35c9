"""Saved model folders: ``decoder.safetensors`` (mask decoder only) + ``model.json``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from samprompt._version import __version__
from samprompt.embeddings import EmbeddingCache
from samprompt.errors import CheckpointError, CheckpointMismatchError
from samprompt.model import LoadedSam, load_decoder_weights, load_sam, save_decoder_weights
from samprompt.prompts.strategy import PromptStrategy

if TYPE_CHECKING:
    from samprompt.segmenter import SamSegmenter

__all__ = ["read_model_json", "load_sam_model", "save_sam_model"]

FORMAT = "samprompt-model"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file and rename it over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False))
    os.replace(tmp, path)


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
    save_decoder_weights(model.sam, folder / "decoder.safetensors", {"sam_sha256": model.sha256})
    meta = {
        "format": FORMAT,
        "format_version": 1,
        "kind": "sam",
        "samprompt_version": __version__,
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
            "state": strategy.state_dict(),
            "needs_mask_at_inference": bool(strategy.needs_mask_at_inference),
        },
        "threshold": threshold,
        "config": dict(config),
        **dict(extra or {}),
    }
    write_json_atomic(folder / "model.json", meta)
    return folder


def read_model_json(folder: str | Path) -> dict[str, Any]:
    """Read and check a model folder's ``model.json``."""
    path = Path(folder) / "model.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; expected a folder written by samprompt finetune")
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a samprompt model (format {meta.get('format')!r})")
    return meta


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
    from samprompt.plugins import get_strategy
    from samprompt.segmenter import SamSegmenter

    folder = Path(folder)
    meta = read_model_json(folder)
    if meta.get("kind") != "sam":
        raise CheckpointError(f"{folder}: holds a {meta.get('kind')!r} model, not a fine-tuned SAM")
    if isinstance(checkpoint, LoadedSam):
        model, spec = checkpoint, checkpoint.spec
    else:
        spec = str(checkpoint) if checkpoint is not None else meta["sam"]["checkpoint"]
        model = load_sam(spec, seed=int(meta["sam"].get("seed", 0)))
    if model.sha256 != meta["sam"]["sha256"]:
        raise CheckpointMismatchError(
            f"{folder}: the decoder was trained on base checkpoint {meta['sam']['checkpoint']} "
            f"(sha256 {meta['sam']['sha256'][:12]}...), but {spec} has sha256 {model.sha256[:12]}...; "
            "pass the same base checkpoint with --checkpoint"
        )
    load_decoder_weights(model.sam, folder / "decoder.safetensors")
    strategy = get_strategy(meta["strategy"]["name"])
    strategy.load_state_dict(meta["strategy"]["state"])
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
