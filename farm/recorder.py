"""The only writer of the store on the controller: each job is written as its event arrives.

A crash of the controller therefore loses nothing already measured. The live view and the plain log subscribe
to the same events. When the store itself fails (a full disk, a read-only mount) the recorder keeps the events it
could not write, asks the run to stop (so devices are still cleaned up), and the caller reports the store error
with what was not stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from farm.config.inventory import Device
from farm.errors import FarmError
from farm.session.events import DeviceDone, Event, JobDone
from farm.store import Store

Subscriber = Callable[[Event], None]


def job_row(event: JobDone) -> dict[str, Any]:
    job = event.job
    return {
        "device_id": event.device_id, "role": job.key.role, "sequence": job.key.sequence,
        "rate_kbps": job.key.rate_kbps, "repeat": job.key.repeat, "status": event.status, "error": event.error,
        "bitstream_sha": job.bitstream.digest, "bitstream_bytes": job.bitstream.size, "source_sha": job.source_sha,
        "output_sha": event.output_sha, "frames": event.frames, "frame_times_ns": event.frame_times_ns,
        "stderr_tail": event.stderr_tail, "started_at": event.started_at, "finished_at": event.finished_at,
    }  # fmt: skip


@dataclass
class Recorder:
    store: Store
    run_id: str
    devices: dict[str, Device]
    subscribers: Sequence[Subscriber] = ()
    on_store_error: Callable[[], None] = lambda: None
    error: FarmError | None = None
    unstored: list[Event] = field(default_factory=list)
    device_results: dict[str, DeviceDone] = field(default_factory=dict)

    def __call__(self, event: Event) -> None:
        if isinstance(event, DeviceDone):
            self.device_results[event.device_id] = event
        if isinstance(event, JobDone | DeviceDone):
            self._write(event)
        for subscriber in self.subscribers:
            subscriber(event)

    def _write(self, event: JobDone | DeviceDone) -> None:
        if self.error is not None:
            self.unstored.append(event)
            return
        try:
            if isinstance(event, JobDone):
                self.store.add_job(self.run_id, job_row(event), list(event.measurements), event.traces)
            else:
                d = self.devices[event.device_id]
                self.store.add_device(
                    self.run_id, d.id, d.platform, d.target, list(d.tags), event.properties, event.status, event.error
                )
        except FarmError as exc:
            self.error = exc
            self.unstored.append(event)
            self.on_store_error()
