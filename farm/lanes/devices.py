"""The device lane: a device is busy from its session's start to its ``DeviceDone``, less the time it spent
blocked on a bitstream still being encoded; devices run side by side, so the lane is its busiest device."""

from __future__ import annotations

import threading
import time

from farm.lanes.clock import LaneListener, LaneState
from farm.session.events import DeviceDone, Event, JobDone


class DeviceLane:
    def __init__(self, device_ids: list[str], total_jobs: int, listener: LaneListener) -> None:
        self._listener = listener
        self._devices = device_ids
        self._lock = threading.Lock()
        self._total = total_jobs
        self._done = 0
        self._start = time.monotonic()
        self._ended: dict[str, float] = {}
        self._waited: dict[str, float] = {}

    def start(self) -> None:
        self._start = time.monotonic()

    def waited(self, device_id: str, seconds: float) -> None:
        """A session was blocked this long on an encode (any thread)."""
        with self._lock:
            self._waited[device_id] = self._waited.get(device_id, 0.0) + seconds

    def __call__(self, event: Event) -> None:
        if isinstance(event, JobDone):
            with self._lock:
                self._done += 1
        elif isinstance(event, DeviceDone):
            with self._lock:
                self._ended.setdefault(event.device_id, time.monotonic())
        else:
            return
        self._listener(self.state())

    def state(self) -> LaneState:
        now = time.monotonic()
        with self._lock:
            spans = [self._ended.get(d, now) - self._start - self._waited.get(d, 0.0) for d in self._devices]
            busy = max(spans, default=0.0)
            return LaneState("devices", self._done, self._total, max(busy, 0.0))
