"""Shared fixtures: a tiny random SAM, phantoms, a temporary embedding cache, the shared data."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from samprompt import EmbeddingCache, LoadedSam, load_sam
from samprompt.data import SampleList, make_phantoms

# The same thread count here and in the CLI processes the tests start: results compared across
# the two (the resume tests compare weights bitwise) then come from the same kernels. Set, not
# defaulted: a CI runner's own OMP_NUM_THREADS would otherwise reach only the child processes.
THREADS = max(1, min(2, os.cpu_count() or 1))
torch.set_num_threads(THREADS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SAMPROMPT_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of a shared real dataset, or skip the test when it is absent."""
    path = SHARED_DATA / name
    if not (path / "images").is_dir():
        pytest.skip(
            f"real data not present at {path} (internal use only; skipped on fresh machines)"
        )
    return path


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` as a module (the examples are scripts, not a package)."""
    path = REPO / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def count_encoder_calls(model: LoadedSam) -> list[int]:
    """Wrap the model's image encoder so that ``calls[0]`` counts the images it encodes."""
    calls = [0]
    original = model.sam.image_encoder.forward

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls[0] += x.shape[0]
        return original(x)

    model.sam.image_encoder.forward = counting  # type: ignore[method-assign]
    return calls


@pytest.fixture
def tiny() -> LoadedSam:
    return load_sam("random:tiny")


@pytest.fixture(scope="session")
def phantoms() -> SampleList:
    return make_phantoms(12, 96, seed=3)


@pytest.fixture
def cache(tmp_path: Path) -> EmbeddingCache:
    return EmbeddingCache(tmp_path / "cache", progress=False)


def assert_model_jsons_follow_the_schema(root: Path) -> None:
    """Validate every samprompt ``model.json`` under ``root`` against the published schema."""
    import json

    import jsonschema

    from samprompt.saved import SCHEMA_PATH

    schema = json.loads(SCHEMA_PATH.read_text())
    for path in root.rglob("model.json"):
        if "broken" in path.parts:  # tests that break model.json on purpose
            continue
        meta = json.loads(path.read_text())
        if isinstance(meta, dict) and meta.get("format") == "samprompt-model":
            try:
                jsonschema.validate(meta, schema)
            except jsonschema.ValidationError as exc:
                raise AssertionError(f"{path}: {exc.message}") from exc


@pytest.fixture(autouse=True)
def every_model_json_a_test_wrote_follows_the_schema(tmp_path: Path) -> Iterator[None]:
    """Check the test's own folder before pytest deletes it (``tmp_path_retention_policy``)."""
    yield
    assert_model_jsons_follow_the_schema(tmp_path)


@pytest.fixture(scope="session", autouse=True)
def every_model_json_a_shared_fixture_wrote_follows_the_schema(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """Folders of module- and session-scoped fixtures live until the session ends."""
    yield
    assert_model_jsons_follow_the_schema(tmp_path_factory.getbasetemp())
