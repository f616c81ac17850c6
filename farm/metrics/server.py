"""``farm serve``: the store's results and live device health on a Prometheus endpoint.

Why prometheus_client's own HTTP server: it already negotiates the text and OpenMetrics formats and gzip,
serves each scrape on its own thread, and is the reference the benchmark compares against; the farm adds only
the collectors. It binds to loopback unless told otherwise, because the endpoint has no authentication.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from farm.config.inventory import Device
from farm.errors import InfraError
from farm.metrics.collector import DeviceInfo, HealthCollector, StoreCollector
from farm.metrics.poller import HealthPoller
from farm.metrics.results import ResultIndex, open_readonly
from farm.store import open_store

DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 9464  # the design's CLI surface (DESIGN.md); CI recipes and the README's prometheus.yml use it


@dataclass
class Exporter:
    """A running exporter: its address, and what to stop."""

    server: WSGIServer
    thread: threading.Thread
    poller: HealthPoller
    registry: CollectorRegistry

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        text = host.decode() if isinstance(host, bytes) else host
        shown = f"[{text}]" if ":" in text else text
        return f"http://{shown}:{port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.poller.stop()


def build_registry(store_path: Path | str, poller: HealthPoller) -> CollectorRegistry:
    """The exporter's registry: store results, then device health. No process or platform collectors."""
    open_store(store_path).close()  # create the schema if the farm has never run here, so a scrape finds tables
    registry = CollectorRegistry()
    registry.register(StoreCollector(ResultIndex(open_readonly(store_path))))
    registry.register(HealthCollector(poller.snapshot, device_info(poller.devices)))
    return registry


def device_info(devices: Sequence[Device]) -> dict[str, DeviceInfo]:
    return {d.id: (d.platform, d.target, d.transport.kind, d.power.simulated or d.thermal.simulated) for d in devices}


def start(
    store_path: Path | str, devices: Sequence[Device], state_dir: Path, *, bind: str = DEFAULT_BIND,
    port: int = DEFAULT_PORT, period_s: float = 30.0, log: Callable[[str], None] = lambda _: None,
) -> Exporter:  # fmt: skip
    """Start the poller and the HTTP server (port 0 picks a free port; see ``Exporter.url``)."""
    poller = HealthPoller(devices, state_dir, period_s=period_s, log=log)
    registry = build_registry(store_path, poller)
    try:
        server, thread = start_http_server(port, addr=bind, registry=registry)
    except OSError as exc:
        raise InfraError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from exc
    poller.start()
    return Exporter(server, thread, poller, registry)
