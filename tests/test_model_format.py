"""The model folder format is a published JSON Schema; what samprompt writes follows it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from samprompt import EmbeddingCache, FinetuneConfig, Finetuner, LoadedSam, get_strategy
from samprompt.baselines import UNetConfig, train_unet
from samprompt.data import make_phantoms
from samprompt.saved import SCHEMA_PATH


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def test_written_sam_and_unet_folders_validate(
    schema: dict, tiny: LoadedSam, cache: EmbeddingCache, tmp_path: Path
) -> None:
    data = make_phantoms(8, 64, seed=4)
    Finetuner(
        tiny,
        get_strategy("mean-points"),
        FinetuneConfig(epochs=1, batch_size=6, lr=1e-3),
        cache=cache,
        out_dir=tmp_path / "sam",
        progress=False,
    ).fit(data[:6], data[6:])
    train_unet(data[:6], data[6:], UNetConfig(epochs=1), out_dir=tmp_path / "unet", progress=False)
    for kind in ("sam", "unet"):
        meta = json.loads((tmp_path / kind / "model.json").read_text())
        jsonschema.validate(meta, schema)
        assert meta["kind"] == kind and meta["format_version"] == 2
    broken = json.loads((tmp_path / "sam" / "model.json").read_text())
    for change in ({"threshold": 1.5}, {"weights_sha256": "x"}, {"kind": "other"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**broken, **change}, schema)
    del broken["sam"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
