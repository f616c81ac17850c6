"""What a session tells the controller, as typed values: the recorder stores them, the views show them.

Every event pickles (a session on another host sends them back over the cluster) and carries its device, so
subscribers never parse text to know what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from farm.measures import Measurement
from farm.session.spec import JobSpec
from farm.traces import Trace


@dataclass(frozen=True)
class Status:
    """The session's phase changed (connecting, staging, baseline, a job ...), or it has a warning to show."""

    device_id: str
    phase: str  # waiting | connecting | cooling | staging | baseline | job | retry | cleanup | done | failed
    text: str
    warning: bool = False


@dataclass(frozen=True)
class JobDone:
    """One finished job (ok or failed), with everything measured on the device. ``done``/``total`` is progress."""

    device_id: str
    job: JobSpec
    status: str  # ok | failed
    error: str | None
    output_sha: str | None
    frames: int | None
    frame_times_ns: tuple[int, ...]
    stderr_tail: str | None
    started_at: float
    finished_at: float
    measurements: tuple[Measurement, ...]
    done: int
    total: int
    traces: tuple[Trace, ...] = ()
    """Power and temperature over the decode window (farm.traces: at most 2000 points each, tuples of floats);
    none for a job that never reached its decode."""

    @property
    def fps(self) -> float | None:
        return next((m.value for m in self.measurements if m.name == "fps"), None)


@dataclass(frozen=True)
class Counters:
    pushed_bytes: int = 0
    pushed_files: int = 0
    reused_files: int = 0


@dataclass(frozen=True)
class DeviceDone:
    """The session ended. ``status``: ok, failed (with ``error``), interrupted (jobs not run are not failed), or
    unavailable (another run held the device for longer than this one would wait; nothing ran)."""

    device_id: str
    status: str
    error: str | None
    reached: bool
    properties: dict[str, str | float] = field(default_factory=dict)
    counters: Counters = Counters()


Event = Status | JobDone | DeviceDone
