"""``farm agent``: a Dask worker on a device host, offering one resource per device it hangs off.

Dask workers do not reconnect: a worker that loses its scheduler closes. The agent is the loop around it: when
its worker closes it stops every session (their devices are cleaned), and starts a new worker that dials the
scheduler until it is back, keeping the inventory and the caches. So a scheduler restart needs nobody to touch
the device hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dask
from distributed import Security, Worker

from farm.cluster.names import resource
from farm.cluster.plugin import AgentState
from farm.config.inventory import Device, load_inventory
from farm.devices import kind
from farm.errors import InputError

RECONNECT_S = 1.0
SETTINGS = {
    # the statistical profiler walks every thread's stack every 10 ms; an agent runs a thread per device that
    # mostly waits on it, so profiling them costs CPU on the device host and tells nobody anything
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.gil.enabled": False,
}
log = logging.getLogger("farm.agent")

if TYPE_CHECKING:
    from farm.cluster.metrics import AgentExporter


@dataclass(frozen=True)
class AgentConfig:
    scheduler: str
    inventory: Path
    host: str
    state_dir: Path
    listen: str | None  # the interface peers reach this agent on (None: Dask's choice)
    metrics_port: int | None = None  # serve device state and health for Prometheus here (None: not at all)
    metrics_bind: str = "127.0.0.1"
    health_period_s: float = 30.0


def own_devices(inventory: Path, host: str) -> dict[str, Device]:
    """The inventory's devices whose ``host:`` is this agent; an agent with none is a configuration error."""
    devices = {d.id: d for d in load_inventory(inventory).devices if d.host == host}
    if not devices:
        raise InputError(f"{inventory}: no device has 'host: {host}' (the agent's --host); nothing to offer")
    return devices


def default_host() -> str:
    return socket.gethostname()


async def serve(config: AgentConfig, security: Security | None, stop: asyncio.Event) -> None:
    """Run workers one after another until ``stop``: each lives until its scheduler goes away."""
    state = AgentState(config.host, own_devices(config.inventory, config.host), config.state_dir)
    kind.preload(d.transport.kind for d in state.devices.values())
    exporter = _exporter(config, state)
    try:
        await _workers(config, security, stop, state)
    finally:
        if exporter is not None:
            exporter.stop()


def _exporter(config: AgentConfig, state: AgentState) -> AgentExporter | None:
    if config.metrics_port is None:
        return None
    from farm.cluster import metrics

    exporter = metrics.start(state, list(state.devices.values()), config.state_dir, config.metrics_bind,
                             config.metrics_port, config.health_period_s)  # fmt: skip
    log.info("agent %s: device state and health on http://%s:%d/metrics", config.host, config.metrics_bind,
             exporter.port)  # fmt: skip
    return exporter


async def _workers(config: AgentConfig, security: Security | None, stop: asyncio.Event, state: AgentState) -> None:
    resources = {resource(d): 1.0 for d in state.devices}
    while not stop.is_set():
        worker = Worker(
            config.scheduler, nthreads=len(resources), resources=resources, security=security,
            name=f"farm-agent-{config.host}", host=config.listen, plugins=(state,), dashboard=False,
            death_timeout=None,
        )  # fmt: skip
        try:
            await worker
        except (OSError, TimeoutError) as exc:
            log.warning("cannot reach the scheduler %s: %s; retrying", config.scheduler, exc)
            await _wait(stop, RECONNECT_S)
            continue
        log.info("agent %s offers %s", config.host, ", ".join(sorted(state.devices)))
        closed = asyncio.ensure_future(worker.finished())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([closed, stopping], return_when=asyncio.FIRST_COMPLETED)
        state.cancel_all("the agent lost its scheduler" if not stop.is_set() else "the agent is stopping")
        if stop.is_set():
            await worker.close(reason="farm agent stopping")
        stopping.cancel()
        await _wait(stop, RECONNECT_S)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def run_agent(config: AgentConfig, security: Security | None) -> None:
    """Block until SIGINT/SIGTERM; sessions are stopped and their devices cleaned before the process exits."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with dask.config.set(SETTINGS):
            await serve(config, security, stop)

    asyncio.run(main())
