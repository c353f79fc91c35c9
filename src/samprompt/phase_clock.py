"""Wall time per phase of a resumable run, summed over every invocation that worked on it.

A long run (``samprompt reproduce``) is stopped and resumed across days; the time of the last
invocation alone says little about what the whole run cost. :class:`PhaseClock` keeps the
seconds of each phase in a JSON file inside the run folder, adds each invocation's to the
earlier ones, and saves whenever :meth:`PhaseClock.save` is called (after every finished fold),
so a killed invocation loses only the time since its last save.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from samprompt.atomic import write_json_atomic

__all__ = ["PhaseClock"]


def _earlier(path: Path) -> tuple[dict[str, float], int, bool]:
    if not path.is_file():
        return {}, 0, True
    record = json.loads(path.read_text())
    phases = {str(k): float(v) for k, v in record["phases_s"].items()}
    return phases, int(record["invocations"]), bool(record["complete"])


@attrs.define(eq=False)
class PhaseClock:
    """Seconds per phase over all invocations of one run, kept in ``path``.

    Attributes
    ----------
    path : pathlib.Path
        The JSON record (``phases_s``, ``invocations``, ``complete``).
    earlier : dict of str to float
        Seconds per phase of the invocations before this one.
    invocations : int
        How many invocations the record counts, this one included.
    complete : bool
        False when the record started on a folder that earlier, untimed invocations had already
        worked on: its totals then leave their time out.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "wall_time.json"
    >>> clock = PhaseClock.resume(path, started_before=False)
    >>> with clock.phase("grid"):
    ...     pass
    >>> again = PhaseClock.resume(path, started_before=True)
    >>> again.invocations, again.complete, list(again.totals())
    (2, True, ['grid'])
    """

    path: Path
    earlier: dict[str, float]
    invocations: int
    complete: bool
    spent: dict[str, float] = attrs.field(factory=dict)
    _open: tuple[str, float] | None = None

    @classmethod
    def resume(cls, path: str | Path, *, started_before: bool) -> PhaseClock:
        """The clock of a new invocation: ``path``'s totals so far (none when absent).
        ``started_before``: the run folder already holds work, so an absent record means the
        earlier invocations were not timed."""
        path = Path(path)
        earlier, invocations, complete = _earlier(path)
        if not path.is_file() and started_before:
            complete = False
        return cls(path, earlier, invocations + 1, complete)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the block's wall time to phase ``name`` and save."""
        self._open = (name, time.perf_counter())
        try:
            yield
        finally:
            self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - self._open[1]
            self._open = None
            self.save()

    def totals(self) -> dict[str, float]:
        """Seconds per phase over every invocation, the open phase's time so far included."""
        totals = dict(self.earlier)
        now = dict(self.spent)
        if self._open is not None:
            name, start = self._open
            now[name] = now.get(name, 0.0) + time.perf_counter() - start
        for name, seconds in now.items():
            totals[name] = totals.get(name, 0.0) + seconds
        return totals

    def record(self) -> dict[str, Any]:
        """What :meth:`save` writes."""
        return {
            "phases_s": self.totals(),
            "invocations": self.invocations,
            "complete": self.complete,
        }

    def save(self) -> None:
        """Write the totals so far (atomically)."""
        write_json_atomic(self.path, self.record())
