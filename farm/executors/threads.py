"""Sessions on this host, one thread each (they spend their time waiting on devices), leased per device.

A stop request reaches each session through the shared ``Cancel``; the executor then waits a bounded time for
the sessions to clean their devices, and reports any that did not finish in time as interrupted.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from farm import leases
from farm.config.inventory import device_identity
from farm.session.cancel import Cancel
from farm.session.events import DeviceDone, Event, Status
from farm.session.session import OutputCache, SessionEnv, run_session
from farm.session.spec import JobSpec, SessionSpec

STOP_GRACE_S = 15.0
"""After a stop, how long sessions get to kill their decoders and clean their devices before we return."""


@dataclass
class ThreadExecutor:
    state_dir: Path
    artifact: Callable[[str], Path]
    outputs: OutputCache
    lease_timeout_s: float = 600.0
    bitstream: Callable[[str, JobSpec, bool], JobSpec | None] | None = None
    """(device, job, wait) -> the job with its bitstream, for a pipelined run's jobs planned before their encode."""

    def run(self, specs: Sequence[SessionSpec], on_event: Callable[[Event], None], cancel: Cancel) -> list[DeviceDone]:
        events: queue.Queue[Event] = queue.Queue()
        results: dict[str, DeviceDone] = {}
        threads = [
            threading.Thread(target=self._one, args=(s, events, cancel, results), name=f"device-{s.device.id}",
                             daemon=True)
            for s in specs
        ]  # fmt: skip
        for t in threads:
            t.start()
        stop_by: float | None = None
        while any(t.is_alive() for t in threads) or not events.empty():
            if cancel.is_set() and stop_by is None:
                stop_by = time.monotonic() + STOP_GRACE_S
            if stop_by is not None and time.monotonic() > stop_by:
                break
            try:
                on_event(events.get(timeout=0.1))
            except queue.Empty:
                continue
        return [results.get(s.device.id) or _abandoned(s, on_event) for s in specs]

    def _one(
        self, spec: SessionSpec, events: queue.Queue[Event], cancel: Cancel, results: dict[str, DeviceDone]
    ) -> None:
        device = spec.device

        def waiting(holder: leases.Holder | None) -> None:
            what = holder.describe() if holder else "held by another run"
            events.put(Status(device.id, "waiting", f"waiting for {device.id}, {what}", warning=True))

        try:
            lease = leases.acquire(
                self.state_dir / "leases", device_identity(device), device.id, spec.run_id,
                timeout_s=self.lease_timeout_s, cancel=cancel, waiting=waiting,
            )  # fmt: skip
        except leases.LeaseTimeout as exc:
            done = DeviceDone(device.id, "unavailable", str(exc), reached=False)
            events.put(done)
            results[device.id] = done
            return
        if lease is None:
            done = DeviceDone(device.id, "interrupted", None, reached=False)
            events.put(done)
            results[device.id] = done
            return
        with lease:
            env = SessionEnv(self.state_dir, self.artifact, self.outputs, cancel, events.put)
            if self.bitstream is not None:
                env.bitstream = functools.partial(self.bitstream, device.id)
            results[device.id] = run_session(spec, env)


def _abandoned(spec: SessionSpec, on_event: Callable[[Event], None]) -> DeviceDone:
    """A session that did not clean up within the grace period: its device's watchdog finishes the job."""
    done = DeviceDone(spec.device.id, "interrupted", f"did not stop within {STOP_GRACE_S:g}s", reached=True)
    on_event(done)
    return done
