"""The allocator setting the command line applies: fewer page faults, nothing else changed."""

from __future__ import annotations

import subprocess
import sys

import pytest

import samprompt.cli
from samprompt.allocator import DISABLE_VARIABLE, keep_freed_memory

_LOOP = """
import ctypes, resource, sys
import numpy as np
from samprompt.allocator import keep_freed_memory
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: count 4 KiB pages, as everywhere
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    block = np.ones(64 << 18, dtype=np.float32)  # 64 MiB, every page touched
    del block
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[bool, int]:
    done = subprocess.run(
        [sys.executable, "-c", _LOOP, mode], capture_output=True, text=True, check=True
    )
    applied, faults = done.stdout.split()
    return applied == "1", int(faults)


def test_kept_memory_is_reused_instead_of_faulted_in_again() -> None:
    applied, kept = _faults("keep")
    if not applied:
        pytest.skip("no glibc allocator here")
    _, default = _faults("default")
    # 20 blocks of 16,384 pages: the default maps every one afresh; kept, the first block's
    # pages serve all the others
    assert default > 15 * 16_384 and kept < 4 * 16_384


def test_the_environment_can_turn_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_VARIABLE, "0")
    assert keep_freed_memory() is False


def test_the_command_line_applies_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(samprompt.cli, "keep_freed_memory", lambda: calls.append(True) or True)
    assert samprompt.cli.main(["plugins"]) == 0
    assert calls == [True] and "mean-points" in capsys.readouterr().out
