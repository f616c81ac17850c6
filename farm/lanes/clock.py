"""How long a lane of a run was busy, and how far it got: what the live view and the bench show per lane.

A lane is busy while at least one of its tasks runs (two encodes at once count once), so a lane's busy time is
what it would take alone on this host, and a run's wall time can be compared with its longest lane.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class LaneState:
    """One lane's progress: tasks done of those known so far, and seconds busy."""

    name: str  # encode | devices | scoring
    done: int
    total: int
    busy_s: float

    def describe(self) -> str:
        return f"{self.name} {self.done}/{self.total}, busy {self.busy_s:.1f} s"

    def as_dict(self) -> dict[str, float]:
        return {"done": self.done, "total": self.total, "busy_s": round(self.busy_s, 3)}


LaneListener = Callable[[LaneState], None]


class Lane:
    """Counts a lane's tasks and the union of the spans when any of them ran; safe from any thread."""

    def __init__(self, name: str, total: int, listener: LaneListener) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._listener = listener
        self._total = total
        self._done = 0
        self._active = 0
        self._since = 0.0
        self._busy = 0.0

    @contextmanager
    def busy(self) -> Iterator[None]:
        with self._lock:
            if self._active == 0:
                self._since = time.monotonic()
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._busy += time.monotonic() - self._since
        self._listener(self.state())

    def add(self, done: int = 0, total: int = 0, busy_s: float = 0.0) -> None:
        """Count finished or newly known tasks, or busy time measured elsewhere (a device's session)."""
        with self._lock:
            self._done += done
            self._total += total
            self._busy += busy_s
        self._listener(self.state())

    def state(self) -> LaneState:
        with self._lock:
            running = time.monotonic() - self._since if self._active else 0.0
            return LaneState(self.name, self._done, self._total, self._busy + running)
