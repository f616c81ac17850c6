"""A run's sessions with its three lanes timed: one after the other (serial), or side by side (pipelined).

Pipelined (the thread executor's default): encodes run in the background, device sessions start at once and
block on a bitstream only when they reach its job, and each distinct decoded output is scored as soon as its
``JobDone`` arrives, while devices keep decoding. Events still reach the recorder on the caller's thread, in
order: the store keeps its single writer. See docs/pipelined-run.md.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farm.artifacts import DecodedCache
from farm.errors import Stopped
from farm.executors.threads import ThreadExecutor
from farm.lanes.clock import Lane, LaneListener, LaneState
from farm.lanes.devices import DeviceLane
from farm.lanes.encode import EncodeLane
from farm.lanes.scoring import ScoringLane
from farm.plan import STOPPED_WHILE_ENCODING, Media, Plan, artifacts
from farm.session.cancel import Cancel
from farm.session.events import DeviceDone, Event, JobDone
from farm.session.spec import JobSpec, SessionSpec


class RunLanes:
    """The encode, device and scoring lanes of one run, and its wall clock."""

    def __init__(self, listener: LaneListener) -> None:
        self.began = time.monotonic()
        self.encode = Lane("encode", 0, listener)
        self.devices = DeviceLane([], 0, listener)
        self.scoring = Lane("scoring", 0, listener)

    def sessions(self, specs: Sequence[SessionSpec], listener: LaneListener) -> None:
        """The device lane learns its devices and jobs when the sessions are planned."""
        self.devices = DeviceLane([s.device.id for s in specs], sum(len(s.jobs) for s in specs), listener)

    def states(self) -> list[LaneState]:
        return [self.encode.state(), self.devices.state(), self.scoring.state()]

    def wall_s(self) -> float:
        return time.monotonic() - self.began

    def summary(self, pipelined: bool) -> dict[str, Any]:
        """What the run's summary keeps (timings: a serial and a pipelined run differ here only)."""
        return {
            "pipelined": pipelined,
            "wall_s": round(self.wall_s(), 3),
            **{s.name: s.as_dict() for s in self.states()},
        }

    def describe(self) -> str:
        return "lanes: " + " · ".join(s.describe() for s in self.states()) + f" · wall {self.wall_s():.1f} s"


def observer(
    record: Callable[[Event], None], lanes: RunLanes, scorer: ScoringLane, fill: Callable[[JobSpec], JobSpec] | None
) -> Callable[[Event], None]:
    """The executor's ``on_event``: the recorder first (it stores, the views show), then the lanes."""

    def on_event(event: Event) -> None:
        if fill is not None and isinstance(event, JobDone) and not event.job.ready:
            event = dataclasses.replace(event, job=fill(event.job))  # a job its failed device never reached
        record(event)
        lanes.devices(event)
        scorer(event)

    return on_event


@dataclass(frozen=True)
class Host:
    """Where a pipelined run's sessions run on this host."""

    state_dir: Path
    cache: Path
    decoded: DecodedCache
    lease_timeout_s: float


def run_pipelined(
    plan: Plan, media: Media, specs: Sequence[SessionSpec], record: Callable[[Event], None], stop: Cancel,
    host: Host, lanes: RunLanes, scorer: ScoringLane,
) -> tuple[list[DeviceDone], Media]:  # fmt: skip
    """Encode, decode and score side by side; the run's media once every encode has finished.

    ``cancel`` is the sessions' and encodes' own: the user's stop sets it, and so does a failed encode (which
    ``finish`` then raises, with a serial run's message) or any error here, so nothing is left running.
    """
    cancel = Cancel()
    with stop.on_cancel(lambda: cancel.set(stop.reason)):
        encodes = EncodeLane(plan, media.sources, host.cache, cancel, lanes.encode, lanes.devices.waited)
        try:
            static = artifacts(plan, media)
            local: Callable[[str], Path] = lambda d: static[d] if d in static else encodes.path(d)  # noqa: E731
            executor = ThreadExecutor(host.state_dir, local, host.decoded, host.lease_timeout_s, encodes.job)
            lanes.devices.start()
            results = executor.run(specs, observer(record, lanes, scorer, encodes.fill), cancel)
            scorer.drain()
            final, complete = encodes.finish()
        except BaseException:
            cancel.set("the run failed")
            raise
        finally:
            encodes.close()
    if stop.is_set() and not complete and lanes.devices.state().done == 0:
        raise Stopped(STOPPED_WHILE_ENCODING)
    return results, final
