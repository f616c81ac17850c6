"""What an agent keeps between tasks: its devices, its caches, and which session holds which device.

A Dask worker plugin, because it lives exactly as long as the worker and every task on that worker can find it
(``get_worker().plugins``). It also turns Dask's cancellation into the farm's: a cancelled Dask task's thread
keeps running (and keeps the device's resource) until it returns, so a watcher polls the worker's own task
states and sets the session's ``Cancel`` when its task was cancelled or released (the controller cancelled it,
or died and the scheduler dropped its tasks), and the session then kills the decoder and cleans the device.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from distributed.diagnostics.plugin import WorkerPlugin

from farm.artifacts import DecodedCache
from farm.cluster.cache import ArtifactCache
from farm.cluster.names import PLUGIN
from farm.config.inventory import Device
from farm.metrics.poller import Health
from farm.session.cancel import Cancel

if TYPE_CHECKING:
    from distributed import Worker

WATCH_S = 0.2
"""How often the watcher looks for cancelled tasks: a stop reaches the device within this plus the tether's kill."""
LIVE_STATES = {"executing", "long-running", "constrained", "ready", "waiting", "fetch", "flight", "memory"}


@dataclass
class Holding:
    """A session running on this agent: what the ``farm devices --cluster`` view and the watcher need."""

    key: str
    device_id: str
    run_id: str
    since: float
    cancel: Cancel


@dataclass
class AgentState(WorkerPlugin):
    name = PLUGIN
    host: str
    devices: dict[str, Device]
    state_dir: Path
    artifacts: ArtifactCache = field(init=False)
    outputs: DecodedCache = field(init=False)
    holding: dict[str, Holding] = field(default_factory=dict)  # task key -> session
    last: dict[str, str] = field(default_factory=dict)  # device id -> how its last session ended
    health: Callable[[], Mapping[str, Health]] | None = None  # the health poller's snapshot (--metrics-port)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.artifacts = ArtifactCache(self.state_dir / "artifacts")
        self.outputs = DecodedCache(self.state_dir / "outputs")

    def setup(self, worker: Worker) -> None:
        self._stop.clear()
        _start_threads(worker)
        threading.Thread(target=self._watch, args=(worker,), name="farm-cancel-watch", daemon=True).start()

    def teardown(self, worker: Worker) -> None:
        """The worker is closing (SIGTERM, or the scheduler is gone): stop every session so devices are cleaned."""
        self._stop.set()
        self.cancel_all("the agent is stopping")

    def cancel_all(self, reason: str) -> None:
        with self._lock:
            held = list(self.holding.values())
        for h in held:
            h.cancel.set(reason)

    def hold(self, key: str, device_id: str, run_id: str) -> Holding:
        h = Holding(key, device_id, run_id, time.time(), Cancel())
        with self._lock:
            self.holding[key] = h
        return h

    def release(self, h: Holding, outcome: str) -> None:
        with self._lock:
            self.holding.pop(h.key, None)
            self.last[h.device_id] = outcome

    def holder_of(self, device_id: str) -> Holding | None:
        with self._lock:
            return next((h for h in self.holding.values() if h.device_id == device_id), None)

    def state_of(self, device_id: str) -> tuple[str, Holding | None]:
        """``leased`` while a session holds it; else ``down`` if its latest health probe (or, without a poller,
        its last session) could not reach it; else ``idle``."""
        h = self.holder_of(device_id)
        if h is not None:
            return "leased", h
        probed = self.health().get(device_id) if self.health is not None else None
        if probed is not None:
            return ("idle" if probed.up else "down"), None
        return ("down" if self.last.get(device_id) == "unreachable" else "idle"), None

    def _watch(self, worker: Worker) -> None:
        while not self._stop.wait(WATCH_S):
            with self._lock:
                held = list(self.holding.values())
            for h in held:
                ts = worker.state.tasks.get(h.key)
                if ts is None or ts.state not in LIVE_STATES:
                    h.cancel.set("the controller cancelled the run")


def _start_threads(worker: Worker) -> None:
    """Start the worker's task threads now rather than one per task on the event loop during the first run.

    Dask's pool starts a thread per submitted task until it has ``nthreads``; ``Thread.start`` waits for the new
    thread to run, and on a loaded host that stalled the agent's event loop for seconds when a run's sessions
    arrived (docs/scale-out.md, "Where the wall went").
    """
    pool = worker.executors.get("default")
    if pool is None:
        return
    for _ in range(worker.state.nthreads):
        pool.submit(time.sleep, 0)
