"""Sessions on the agent hosts their devices hang off, through Dask distributed; events back as they happen.

Designed around Dask's semantics (docs/scale-out.md): every session is submitted with ``pure=False`` and a key
unique to this controller (two pipelines never merge into one task), the device's resource (the scheduler holds
it for the task's whole life, across every client: that is the cross-pipeline lease), and no retries (the
``farm scheduler`` also sets ``allowed-failures: 0``, so a task whose agent died is never re-run). A cancelled
task keeps running until its session notices; the agent turns the cancellation into the session's ``Cancel``.
"""

from __future__ import annotations

import functools
import operator
import pickle
import queue
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client, Future

from farm.artifacts import DecodedCache
from farm.cluster import controller, names, remote
from farm.session.cancel import Cancel
from farm.session.events import DeviceDone, Event, JobDone, Status
from farm.session.spec import SessionSpec

STOP_GRACE_S = 15.0
"""After a stop, how long agents get to kill decoders and clean devices before the controller gives up on them."""
REPORT_GRACE_S = 5.0
"""A finished task's last events travel the event topic, not the result: how long to wait for them."""
HOLDER_POLL_S = 2.0


@dataclass
class _Device:
    spec: SessionSpec
    addr: str
    future: Future[Any] | None = None
    submitted: float = 0.0
    started: bool = False
    jobs_done: set[int] = field(default_factory=set)
    done: DeviceDone | None = None
    finished_at: float | None = None
    holder: tuple[str, float] | None = None


@dataclass
class DaskExecutor:
    client: Client
    artifact: Callable[[str], Path]
    outputs: DecodedCache
    lease_timeout_s: float = 600.0
    agent_wait_s: float = 30.0

    def run(self, specs: Sequence[SessionSpec], on_event: Callable[[Event], None], cancel: Cancel) -> list[DeviceDone]:
        if not specs:
            return []
        token = secrets.token_hex(4)
        topic = names.topic(specs[0].run_id, token)
        inbox: queue.Queue[Event] = queue.Queue()
        self.client.subscribe_topic(topic, lambda ev: inbox.put(pickle.loads(ev[1])))  # noqa: S301 (mutual TLS)
        try:
            return _Dispatch(self, specs, on_event, cancel, inbox, topic, token).run()
        finally:
            self.client.unsubscribe_topic(topic)


class _Dispatch:
    def __init__(
        self, ex: DaskExecutor, specs: Sequence[SessionSpec], on_event: Callable[[Event], None], cancel: Cancel,
        inbox: queue.Queue[Event], topic: str, token: str,
    ) -> None:  # fmt: skip
        self.ex, self.client, self.specs, self.on_event, self.cancel = ex, ex.client, specs, on_event, cancel
        self.inbox, self.topic, self.token = inbox, topic, token
        self.devices: dict[str, _Device] = {}
        self.results: dict[str, DeviceDone] = {}
        self.pulls = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pull")
        self.asked = 0.0

    def run(self) -> list[DeviceDone]:
        try:
            self._place()
            self._submit()
            self._loop()
        finally:
            self.pulls.shutdown(wait=True)
            pending = [d.future for d in self.devices.values() if d.future is not None and not d.future.done()]
            if pending:
                self.client.cancel(pending)
        return [self.results[s.device.id] for s in self.specs]

    # -- before submitting ------------------------------------------------------------------------------
    def _place(self) -> None:
        """Find each device's agent (waiting a bounded time); a device no agent offers is unavailable, named."""
        wanted = [s.device.id for s in self.specs]
        where = controller.wait_for_agents(self.client, wanted, self.ex.agent_wait_s, self.cancel)
        for spec in self.specs:
            addr = where.get(spec.device.id)
            if addr is None:
                why = "interrupted" if self.cancel.is_set() else "unavailable"
                text = f"no connected agent offers device {spec.device.id} (waited {self.ex.agent_wait_s:g}s)"
                self._finish(DeviceDone(spec.device.id, why, None if self.cancel.is_set() else text, False))
            else:
                self.devices[spec.device.id] = _Device(spec, addr)
        needs: dict[str, set[str]] = {}
        for d in self.devices.values():
            needs.setdefault(d.addr, set()).update(_digests(d.spec))
        sent = controller.stage(self.client, needs, self.ex.artifact)
        for d in self.devices.values():
            files, size = sent[d.addr]
            self.on_event(Status(d.spec.device.id, "staging", f"agent {d.addr}: sent {files} files, {size} B"))

    def _submit(self) -> None:
        """Every session in one graph: one ``update-graph`` for the scheduler instead of one per device.

        The scheduler's handling of an update-graph is its most expensive step; 64 separate submits kept a loaded
        scheduler busy for seconds while sessions waited to start (docs/scale-out.md, "Where the wall went").
        Each task still holds its own device's resource: a callable resources annotation is applied per key by
        the scheduler (``Scheduler._apply_annotations``); a ``partial`` of ``getitem`` unpickles without the farm.
        """
        devices = list(self.devices.values())
        if not devices:
            return
        keys = [f"farm-session-{d.spec.run_id}-{d.spec.device.id}-{self.token}" for d in devices]
        need = {k: {names.resource(d.spec.device.id): 1} for k, d in zip(keys, devices, strict=True)}
        futures = self.client.map(
            remote.run_device, [d.spec for d in devices], [self.topic] * len(devices), key=keys, pure=False,
            retries=0, resources=functools.partial(operator.getitem, need),  # type: ignore[arg-type]
        )  # fmt: skip
        now = time.monotonic()
        for d, fut in zip(devices, futures, strict=True):
            d.future, d.submitted = fut, now

    # -- while sessions run -----------------------------------------------------------------------------
    def _loop(self) -> None:
        stop_by: float | None = None
        while any(d.spec.device.id not in self.results for d in self.devices.values()):
            if self.cancel.is_set() and stop_by is None:
                stop_by = time.monotonic() + STOP_GRACE_S
                self.client.cancel([d.future for d in self.devices.values() if d.future is not None])
            if stop_by is not None and time.monotonic() > stop_by:
                self._abandon()
                break
            try:
                self._handle(self.inbox.get(timeout=0.1))
                continue
            except queue.Empty:
                pass
            for d in self.devices.values():
                if d.spec.device.id not in self.results:
                    self._check(d, stopping=stop_by is not None)
            if stop_by is None:
                self._ask_holders()

    def _handle(self, event: Event) -> None:
        d = self.devices.get(event.device_id)
        if d is None or event.device_id in self.results:
            return  # a late event of a device already reported lost
        if not (isinstance(event, Status) and event.phase == "waiting"):
            d.started = True
        if isinstance(event, JobDone):
            d.jobs_done.add(event.job.index)
            if event.output_sha is not None and not self.ex.outputs.has(event.output_sha):
                self.pulls.submit(self._pull, d.addr, event.output_sha, event.device_id)
        if isinstance(event, DeviceDone):
            self._finish(event)
            return
        self.on_event(event)

    def _check(self, d: _Device, stopping: bool) -> None:
        fut = d.future
        assert fut is not None
        now = time.monotonic()
        if not fut.done():
            if not d.started and not stopping:
                self._waiting(d, now)
            return
        if fut.status == "finished":
            d.finished_at = d.finished_at or now
            if now - d.finished_at > REPORT_GRACE_S:  # its DeviceDone never came by the topic: take the result
                self._finish(fut.result())
        elif fut.status == "error" or not stopping:
            self._lost(d, fut)
        elif not d.started:  # cancelled while it waited for the device: nothing ran, nothing to clean
            self._finish(DeviceDone(d.spec.device.id, "interrupted", None, False))

    def _waiting(self, d: _Device, now: float) -> None:
        """Not started yet: another run holds the device (its resource); give up after the lease timeout."""
        waited = now - d.submitted
        if waited > self.ex.lease_timeout_s:
            assert d.future is not None
            self.client.cancel([d.future])
            held = f"held by run {d.holder[0]}" if d.holder else "held by another run"
            text = f"{d.spec.device.id}: {held}; gave up after {self.ex.lease_timeout_s:g}s (--lease-timeout)"
            self._finish(DeviceDone(d.spec.device.id, "unavailable", text, False))
            return

    def _ask_holders(self) -> None:
        """Every few seconds, one round trip to the agents of devices still waiting: who holds them, since when."""
        now = time.monotonic()
        if now - self.asked < HOLDER_POLL_S:
            return
        self.asked = now
        waiting = [d for d in self.devices.values()
                   if not d.started and d.spec.device.id not in self.results and now - d.submitted >= 1.0]  # fmt: skip
        if not waiting:
            return
        held = controller.holders(self.client, {d.addr for d in waiting}, [d.spec.device.id for d in waiting])
        for d in waiting:
            holder = held.get(d.spec.device.id)
            if holder is not None and holder != d.holder:
                d.holder = holder
                since = time.strftime("%H:%M:%S", time.localtime(holder[1]))
                text = f"waiting for {d.spec.device.id}, held by run {holder[0]} since {since}"
                self.on_event(Status(d.spec.device.id, "waiting", text, warning=True))

    # -- endings ----------------------------------------------------------------------------------------
    def _lost(self, d: _Device, fut: Future[Any]) -> None:
        """The agent died (or the task failed outside the session): every job not reported fails, named."""
        self._drain()
        if d.spec.device.id in self.results:
            return
        why = _exception_text(fut)
        error = f"agent lost: {d.addr} ({why})"
        now = time.time()
        todo = [j for j in d.spec.jobs if j.index not in d.jobs_done]
        n = len(d.spec.jobs)
        for i, job in enumerate(todo):
            k = n - len(todo) + i + 1
            self.on_event(JobDone(d.spec.device.id, job, "failed", error, None, None, (), None, now, now, (), k, n))
        self._finish(DeviceDone(d.spec.device.id, "failed", error, d.started))

    def _drain(self) -> None:
        """Events already on their way were sent before the loss: record them first."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                self._handle(self.inbox.get(timeout=0.2))
            except queue.Empty:
                return

    def _abandon(self) -> None:
        for d in self.devices.values():
            if d.spec.device.id not in self.results:
                text = f"did not stop within {STOP_GRACE_S:g}s"
                self._finish(DeviceDone(d.spec.device.id, "interrupted", text, d.started))

    def _finish(self, done: DeviceDone) -> None:
        self.results[done.device_id] = done
        self.on_event(done)

    def _pull(self, addr: str, digest: str, device_id: str) -> None:
        try:
            self.ex.outputs.fetch(digest, lambda dst: controller.pull_output(self.client, addr, digest, dst))
        except Exception as exc:
            text = f"could not pull output {digest[:12]} from {addr}: {exc}; its quality will be missing"
            self.inbox.put(Status(device_id, "warning", text, warning=True))


def _digests(spec: SessionSpec) -> set[str]:
    out = {f.digest for b in spec.bundles for f in b.files}
    out |= {b.app.digest for b in spec.bundles if b.app is not None}
    return out | {j.bitstream.digest for j in spec.jobs}


def _exception_text(fut: Future[Any]) -> str:
    try:
        exc: Any = fut.exception(timeout=1)
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return f"{type(exc).__name__}: {exc}" if exc is not None else str(fut.status)
