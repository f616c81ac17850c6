"""Who controls a run: host, pid and process start, so a dead controller's run can be told from a live one.

A pid alone is not enough: after a reboot or a long uptime another process may carry the same pid, and a
run would then look alive for ever. The start token (boot id + start time in clock ticks, /proc/PID/stat
field 22) differs for a recycled pid. Where /proc is absent (macOS) the token is None and only the pid is
checked. Only this host's processes can be judged that way; a run controlled from another host (a lab's
shared PostgreSQL store) is judged by its heartbeat instead: its controller refreshes ``runs.heartbeat_at``
every HEARTBEAT_S (farm/heartbeat.py), and one silent for longer than STALE_AFTER_S is taken for dead.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")

HEARTBEAT_S = 30.0
"""How often a running run's controller refreshes its heartbeat. One UPDATE of one row: a lab of a hundred
controllers on one PostgreSQL server costs it about 3 tiny writes a second, and a dead run still shows as
interrupted within minutes, which is sooner than anybody comes back to look at it."""

STALE_AFTER_S = 10 * HEARTBEAT_S
"""A heartbeat older than this (in the store's clock) means the controller on another host died. Ten periods
ride out what delays a live controller's beat without killing it: a database restart (the store reconnects for
up to 60 s), a SQLite write lock held for 30 s, a loaded or briefly suspended VM. A false verdict costs a live
run its status, so the limit errs on the long side: 5 minutes is still short next to a CI job's timeout."""


def _boot_id() -> str | None:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (the command name in field 2 may hold spaces and parentheses)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def process_start(pid: int) -> str | None:
    """A token that changes when the pid is reused: ``BOOT_ID:STARTTIME``, or None where /proc is absent."""
    boot, fields = _boot_id(), _stat_fields(pid)
    if boot is None or fields is None or len(fields) < 20:
        return None
    return f"{boot}:{fields[19]}"  # field 22 of stat, counted from 1 with pid and comm as fields 1 and 2


def _pid_alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    if fields is not None:
        return fields[0] not in ("Z", "X")  # a zombie has exited; only its parent has not collected it yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


@dataclass(frozen=True)
class Controller:
    host: str
    pid: int
    start: str | None

    @classmethod
    def this_process(cls) -> Controller:
        return cls(host=socket.gethostname(), pid=os.getpid(), start=process_start(os.getpid()))

    def is_here(self) -> bool:
        return self.host == socket.gethostname()

    def is_gone(self) -> bool:
        """True only when certain: this host's process with that pid has ended or is another process now."""
        if not self.is_here():
            return False
        if not _pid_alive(self.pid):
            return True
        now = process_start(self.pid)
        return self.start is not None and now is not None and now != self.start

    def why_dead(self, silent_s: float | None) -> str | None:
        """Why this run's controller is taken for dead, or None while it may be alive.

        This host's controller is judged by its process (pid + start token); another host's only by how long
        its heartbeat has been silent (``silent_s``, in the store's clock). None there means a run written by
        a farm older than heartbeats: it cannot be judged, so it is never reaped.
        """
        if self.is_here():
            return f"{self.describe()} is gone" if self.is_gone() else None
        if silent_s is None or silent_s <= STALE_AFTER_S:
            return None
        return f"{self.describe()} sent no heartbeat for {silent_s:.0f} s"

    def describe(self) -> str:
        return f"controller pid {self.pid} on {self.host}"
