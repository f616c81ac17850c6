"""The controller's heartbeat: while a run is running, its store row says every few seconds that its controller lives.

A run's controller on another host cannot be asked whether its process still exists, so a lab's shared store
(PostgreSQL) tells a dead controller by its silence (farm.store.controller STALE_AFTER_S). The beat comes from a
thread of its own in the controller, the process that already writes the run, never from a device session: a
device thread may sit in one decode for many minutes, and a session on an agent host is not the controller.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from farm.errors import FarmError, InputError
from farm.store import Store
from farm.store.controller import HEARTBEAT_S

PERIOD_ENV = "FARM_HEARTBEAT_S"
"""Overrides HEARTBEAT_S (seconds) for this controller. Tests shorten it; a longer one than HEARTBEAT_S would let
other hosts take a live run for dead, so it is refused."""


def period_s() -> float:
    """HEARTBEAT_S, or FARM_HEARTBEAT_S when set (a number of seconds above 0 and at most HEARTBEAT_S)."""
    text = os.environ.get(PERIOD_ENV)
    if text is None or not text.strip():
        return HEARTBEAT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= HEARTBEAT_S:
        raise InputError(f"{PERIOD_ENV}={text!r}: expected seconds above 0 and at most {HEARTBEAT_S:g}")
    return value


class Heartbeat:
    """Refresh ``run_id``'s heartbeat every ``period`` seconds from a daemon thread, from ``with`` until its end.

    A beat that fails (the store briefly unreachable) is tried again at the next period: the recorder's own
    writes are what report a failing store. When the store shows the run taken from this process (reaped by
    another host after the store was out of reach for longer than STALE_AFTER_S, perhaps resumed there since),
    ``on_reaped`` is told why, once, and the beats stop.
    """

    def __init__(
        self, store: Store, run_id: str, period: float | None = None, on_reaped: Callable[[str], None] = lambda _: None
    ) -> None:
        self.store, self.run_id, self.on_reaped = store, run_id, on_reaped
        self.period = period_s() if period is None else period
        self.beats = 0  # refreshed beats so far (tests and logs read it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"farm-heartbeat-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:  # fmt: skip
        self._stop.set()
        self._thread.join(timeout=5.0)  # a beat stuck reconnecting is left to the daemon thread, not waited for

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                if self.store.heartbeat(self.run_id):
                    self.beats += 1
                    continue
                run = self.store.run(self.run_id)
            except FarmError:
                continue
            if run is not None and not self._stop.is_set() and (why := _taken_over(run)) is not None:
                self.on_reaped(why)
            return  # finished, or no longer this process's run: nothing of it to keep alive


def _taken_over(run: Any) -> str | None:
    """Why the run is no longer this controller's, when another process took it; None when it just finished.

    Only ``reap_orphans`` writes an ``interrupted`` reason into a summary (this process's own Ctrl-C writes an
    ``error``), and a run ``running`` under another controller was resumed elsewhere after such a reap.
    """
    if run["status"] == "running":
        return f"resumed meanwhile by controller pid {run['controller_pid']} on {run['controller_host']}"
    why = json.loads(run["summary_json"] or "{}").get("interrupted")
    return str(why) if run["status"] == "interrupted" and why else None
