"""The wall-time record of a resumable run: phases add up over invocations, a killed one keeps
what it saved, and a record that starts late says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from samprompt import phase_clock
from samprompt.phase_clock import PhaseClock


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """A clock that reads what the test puts in ``now[0]``."""
    now = [100.0]
    monkeypatch.setattr(phase_clock.time, "perf_counter", lambda: now[0])
    yield now


def test_phases_add_up_over_invocations(tmp_path: Path, ticks: list[float]) -> None:
    path = tmp_path / "wall_time.json"
    first = PhaseClock.resume(path, started_before=False)
    with first.phase("grid"):
        ticks[0] += 30
    with first.phase("grid"):
        ticks[0] += 5
    with first.phase("U-Net"):
        ticks[0] += 7
    assert first.spent == {"grid": 35.0, "U-Net": 7.0}
    second = PhaseClock.resume(path, started_before=True)
    with second.phase("grid"):
        ticks[0] += 2
    with second.phase("control"):
        ticks[0] += 11
    assert second.spent == {"grid": 2.0, "control": 11.0}  # this invocation's own
    assert second.totals() == {"grid": 37.0, "U-Net": 7.0, "control": 11.0}
    assert json.loads(path.read_text()) == {
        "phases_s": {"grid": 37.0, "U-Net": 7.0, "control": 11.0},
        "invocations": 2,
        "complete": True,
    }


def test_a_killed_invocation_keeps_the_time_it_saved(tmp_path: Path, ticks: list[float]) -> None:
    path = tmp_path / "wall_time.json"
    clock = PhaseClock.resume(path, started_before=False)
    phase = clock.phase("fine-tuning")
    phase.__enter__()
    ticks[0] += 40
    clock.save()  # a fold finished
    ticks[0] += 15  # ... then the process is killed: the phase never ends
    assert json.loads(path.read_text())["phases_s"] == {"fine-tuning": 40.0}
    again = PhaseClock.resume(path, started_before=True)
    assert again.earlier == {"fine-tuning": 40.0} and again.invocations == 2


def test_a_record_started_on_an_untimed_run_says_so(tmp_path: Path, ticks: list[float]) -> None:
    path = tmp_path / "wall_time.json"
    late = PhaseClock.resume(path, started_before=True)  # earlier invocations left no record
    with late.phase("control"):
        ticks[0] += 3
    assert late.complete is False
    later = PhaseClock.resume(path, started_before=True)
    assert later.complete is False and later.invocations == 2
