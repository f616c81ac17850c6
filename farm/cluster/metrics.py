"""``farm agent --metrics-port``: the agent's own devices on a Prometheus endpoint, their state and their health.

Why the agent serves it, not the scheduler or the controller: only the agent host can reach its devices (a USB
phone, a board on a lab VLAN), so the health probes must run there anyway, and the agent is the one process
that knows which run holds which device. A scheduler plugin could aggregate the states, but not the probes, and
a scheduler restart would blank the whole lab's view; one endpoint per agent host is what Prometheus expects
(one scrape target per host, like node_exporter). The health families are farm serve's own (same names, same
``device`` label as the results), so a dashboard does not care which process exported them.

The endpoint has no authentication and binds to loopback unless told otherwise, as ``farm serve`` does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from farm.config.inventory import Device
from farm.errors import InfraError
from farm.metrics import names
from farm.metrics.collector import HealthCollector
from farm.metrics.poller import HealthPoller
from farm.metrics.server import device_info

if TYPE_CHECKING:  # the collector itself needs no Dask: the exporter's tests build it without the extra
    from farm.cluster.plugin import AgentState


@dataclass(frozen=True)
class DeviceState:
    """One device as its agent sees it: the row behind ``farm_device_state`` and the lease's start."""

    device: str
    host: str
    state: str  # idle | leased | down (names.AGENT_STATES)
    run: str | None
    since: float | None


def device_states(state: AgentState) -> list[DeviceState]:
    rows = []
    for device_id in sorted(state.devices):
        what, h = state.state_of(device_id)
        rows.append(DeviceState(device_id, state.host, what, h.run_id if h else None, h.since if h else None))
    return rows


class AgentCollector(Collector):
    """Exports each device's state as a 0/1 gauge per state (bounded labels), and who leased it since when."""

    def __init__(self, rows: Callable[[], Sequence[DeviceState]]) -> None:
        self._rows = rows

    def collect(self) -> Iterable[Metric]:
        spec_state, spec_lease = names.DEVICE_STATE, names.DEVICE_LEASE
        state = GaugeMetricFamily(spec_state.family_name, spec_state.help, labels=spec_state.labels)
        lease = GaugeMetricFamily(spec_lease.family_name, spec_lease.help, labels=spec_lease.labels)
        for row in self._rows():
            for name in names.AGENT_STATES:
                state.add_metric([row.device, row.host, name], 1.0 if row.state == name else 0.0)
            if row.run is not None and row.since is not None:
                lease.add_metric([row.device, row.host, row.run], row.since)
        return [state, lease]


@dataclass
class AgentExporter:
    """A running agent endpoint: its address, and what to stop."""

    server: WSGIServer
    thread: threading.Thread
    poller: HealthPoller

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.poller.stop()


def start(state: AgentState, devices: Sequence[Device], state_dir: Path, bind: str, port: int,
          period_s: float) -> AgentExporter:  # fmt: skip
    """Poll the agent's devices (not those a session holds) and serve their state and health on ``bind:port``."""
    poller = HealthPoller(devices, state_dir, period_s=period_s, busy=lambda d: state.holder_of(d) is not None)
    state.health = poller.snapshot
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: device_states(state)))
    registry.register(HealthCollector(poller.snapshot, device_info(devices)))
    try:
        server, thread = start_http_server(port, addr=bind, registry=registry)
    except OSError as exc:
        raise InfraError(f"farm agent --metrics-port: cannot listen on {bind}:{port}: {exc.strerror or exc}") from exc
    poller.start()
    return AgentExporter(server, thread, poller)
