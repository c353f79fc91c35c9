"""What a run records as the code that produced it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from samprompt import __version__
from samprompt._version import source_version
from samprompt.runs import RunFolder

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(root: Path, *args: str) -> str:
    command = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    return subprocess.run([*command, *args], capture_output=True, text=True, check=True).stdout


def test_outside_a_checkout_the_version_is_the_release(tmp_path: Path) -> None:
    (tmp_path / "src" / "samprompt").mkdir(parents=True)
    assert source_version(tmp_path) == __version__


@needs_git
def test_a_checkout_adds_its_commit_and_marks_changes_to_src(tmp_path: Path) -> None:
    code = tmp_path / "src" / "samprompt" / "core.py"
    code.parent.mkdir(parents=True)
    code.write_text("x = 1\n")
    (tmp_path / "README.md").write_text("readme\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "first")
    commit = _git(tmp_path, "rev-parse", "HEAD").strip()

    source_version.cache_clear()
    clean = source_version(tmp_path)
    assert clean.startswith(f"{__version__}+g") and commit.startswith(clean.split("+g")[1])

    (tmp_path / "README.md").write_text("changed outside src\n")
    source_version.cache_clear()
    assert source_version(tmp_path) == clean

    code.write_text("x = 2\n")
    source_version.cache_clear()
    assert source_version(tmp_path) == f"{clean}.dirty"
    source_version.cache_clear()


def test_a_run_folder_records_the_source_version(tmp_path: Path) -> None:
    folder = RunFolder.claim(tmp_path / "run", {"model": "m"})
    folder.finish()
    for name in ("run.json", "finished.json"):
        record = json.loads((tmp_path / "run" / name).read_text())
        assert record["samprompt_version"] == source_version()
