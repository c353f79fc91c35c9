from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from samprompt import PluginError, __version__, get_strategy, list_strategies
from samprompt.plugins import plugin_failures, reset_plugins
from tests.conftest import REPO

GRID_SRC = REPO / "plugins" / "samprompt-grid" / "src"


def _fake_distribution(root: Path, name: str, entry_points: str) -> Path:
    """A minimal installed distribution: what `pip install` leaves in site-packages."""
    info = root / f"{name}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[samprompt]\n{entry_points}\n")
    return root


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    reset_plugins()
    yield
    reset_plugins()


def test_builtins_are_registered_once_even_though_also_declared_as_entry_points() -> None:
    found = list_strategies()
    for name in ("mean-points", "perturbed-box", "combined"):
        assert found[name] == f"samprompt {__version__} (built-in samprompt.prompts.builtin)"


def test_unknown_name_lists_installed() -> None:
    with pytest.raises(
        PluginError, match=r"unknown prompt strategy 'nope'; installed: .*mean-points"
    ):
        get_strategy("nope")


def test_bad_parameters_name_the_strategy() -> None:
    with pytest.raises(PluginError, match=r"'perturbed-box'.*rejected parameters"):
        get_strategy("perturbed-box", wobble=3)


def test_example_plugin_found_through_its_entry_point_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(GRID_SRC))
    monkeypatch.syspath_prepend(
        str(_fake_distribution(tmp_path, "samprompt_grid", "grid = samprompt_grid.strategy"))
    )
    reset_plugins()
    assert "samprompt_grid 0.1.0" in list_strategies()["grid-points"]
    from samprompt.data import make_phantoms

    strategy = get_strategy("grid-points", rows=2, cols=3)
    train = make_phantoms(5, 64, seed=0)
    strategy.fit(train)
    prompt = strategy.inference_prompt(train[0])
    assert prompt.num_points == 6 and set(prompt.point_labels.tolist()) <= {0, 1}


def test_broken_plugin_is_reported_and_others_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "broken_plugin.py"
    pkg.write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _fake_distribution(tmp_path, "broken_dist", "broken = broken_plugin")
    reset_plugins()
    failures = plugin_failures()
    assert any("broken_dist" in f.source and "boom at import" in f.error for f in failures)
    assert get_strategy("mean-points").name == "mean-points"
    with pytest.raises(PluginError, match="failed to load: broken_dist"):
        get_strategy("missing-one")


def test_duplicate_names_name_both_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dupe_plugin.py").write_text(
        "from samprompt.hookspecs import hookimpl\n"
        "from samprompt.prompts import MeanPoints\n"
        "class Copy(MeanPoints):\n    pass\n"
        "@hookimpl\ndef samprompt_prompt_strategies():\n    return [Copy]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    _fake_distribution(tmp_path, "dupe_dist", "dupe = dupe_plugin")
    reset_plugins()
    with pytest.raises(PluginError, match=r"'mean-points' is provided by several plugins") as info:
        get_strategy("mean-points")
    assert "dupe_dist 0.1.0" in str(info.value) and "samprompt 0.1.0" in str(info.value)


def test_cli_plugins_table_shows_builtins_and_example(tmp_path: Path) -> None:
    _fake_distribution(tmp_path, "samprompt_grid", "grid = samprompt_grid.strategy")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(tmp_path), str(GRID_SRC), os.environ.get("PYTHONPATH", "")]
        ),
    )
    out = subprocess.run(
        [sys.executable, "-m", "samprompt.cli", "plugins"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    for name in ("mean-points", "perturbed-box", "combined", "grid-points"):
        assert name in out
    assert "perturbed-box  True" in out
    assert "<property" not in out and "combined" in out and "per instance" in out
    assert "litemedsam" in out and "vit_b" in out  # the model families table
