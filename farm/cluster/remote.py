"""What the controller runs on an agent: one device's session (a Dask task), and small calls by digest.

The session uses the agent's own inventory entry for its device (key files and USB serials are paths on the
agent's host, not the controller's) and the agent's caches; its events go back as they happen on a Dask event
topic, pickled (Dask's event log carries msgpack), so the controller's recorder stores each job when it ends and
an agent that dies later loses nothing already measured.
"""

from __future__ import annotations

import pickle
import socket
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from distributed import get_worker

from farm import leases
from farm.cluster.names import PLUGIN
from farm.cluster.plugin import AgentState, Holding
from farm.config.inventory import device_identity
from farm.session.events import DeviceDone, Event, Status
from farm.session.session import SessionEnv, run_session
from farm.session.spec import SessionSpec

if TYPE_CHECKING:
    from distributed import Worker

LOCAL_LEASE_WAIT_S = 600.0
"""A ``farm run`` on the agent's own host may hold a device by its OS lock: wait for it like a local run would."""


def _state(worker: Worker) -> AgentState:
    plugin = worker.plugins[PLUGIN]
    assert isinstance(plugin, AgentState)
    return plugin


def run_device(spec: SessionSpec, topic: str) -> DeviceDone:
    """The Dask task: lease the device on this host, run its session, send every event to ``topic``."""
    worker = get_worker()
    state = _state(worker)

    def emit(event: Event) -> None:
        worker.log_event(topic, pickle.dumps(event))

    device = state.devices.get(spec.device.id)
    if device is None:
        done = DeviceDone(spec.device.id, "failed", f"agent {state.host} has no device {spec.device.id}", False)
        emit(done)
        return done
    held = state.hold(str(worker.get_current_task()), device.id, spec.run_id)
    outcome = "failed"
    try:
        done = _leased(replace(spec, device=device), state, held, emit)
        outcome = "unreachable" if done.status == "failed" and not done.reached else done.status
        return done
    finally:
        state.release(held, outcome)


def _leased(spec: SessionSpec, state: AgentState, held: Holding, emit: Any) -> DeviceDone:
    device = spec.device

    def waiting(holder: leases.Holder | None) -> None:
        what = holder.describe() if holder else "held by another process"
        emit(Status(device.id, "waiting", f"waiting for {device.id} on {state.host}, {what}", warning=True))

    try:
        lease = leases.acquire(
            state.state_dir / "leases", device_identity(device), device.id, spec.run_id,
            timeout_s=LOCAL_LEASE_WAIT_S, cancel=held.cancel, waiting=waiting,
        )  # fmt: skip
    except leases.LeaseTimeout as exc:
        done = DeviceDone(device.id, "unavailable", str(exc), reached=False)
        emit(done)
        return done
    if lease is None:
        done = DeviceDone(device.id, "interrupted", None, reached=False)
        emit(done)
        return done
    with lease:
        env = SessionEnv(state.state_dir, state.artifacts.resolve, state.outputs, held.cancel, emit)
        return run_session(spec, env)


# -- small calls (Client.run: they run on the agent's event loop, so each one is quick) ---------------------------
def missing(digests: list[str], dask_worker: Worker) -> list[str]:
    return _state(dask_worker).artifacts.missing(digests)


def put(digest: str, data: bytes, dask_worker: Worker) -> None:
    _state(dask_worker).artifacts.put(digest, data)


def read_output(digest: str, dask_worker: Worker) -> bytes:
    path = _state(dask_worker).outputs.path(digest)
    return path.read_bytes()


def describe(dask_worker: Worker) -> dict[str, Any]:
    """This agent's devices and who holds each: the rows of ``farm devices --cluster``."""
    state = _state(dask_worker)
    rows = []
    for device_id, device in sorted(state.devices.items()):
        what, h = state.state_of(device_id)
        rows.append({
            "id": device_id, "platform": device.platform, "target": device.target, "tags": list(device.tags),
            "state": what,
            "run_id": h.run_id if h else None, "since": h.since if h else None,
            "last": state.last.get(device_id),
        })  # fmt: skip
    return {"host": state.host, "machine": socket.gethostname(), "devices": rows}


def holders(device_ids: list[str], dask_worker: Worker) -> dict[str, tuple[str, float]]:
    """Which run holds each of these devices here, and since when (for a waiting controller's live view)."""
    state = _state(dask_worker)
    out = {}
    for device_id in device_ids:
        h = state.holder_of(device_id)
        if h is not None:
            out[device_id] = (h.run_id, h.since)
    return out
