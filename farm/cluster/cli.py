"""The cluster's commands: ``farm agent``, ``farm scheduler``, ``farm cluster certs``, ``farm devices --cluster``.

Registered on the main ``farm`` app by farm/cli.py; parse and print only. Dask is imported inside the commands,
so ``farm --help`` and the one-host commands never load it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from farm.cluster import address

if TYPE_CHECKING:  # rich is built on first use (farm/console.py): `farm --help` loads none of it
    from rich.console import Console

    from farm.console import LazyConsole
    from farm.pipeline import ExecutorFactory

CertsOpt = Annotated[
    Path | None,
    typer.Option("--certs", envvar="FARM_CERTS", help="folder made by `farm cluster certs` (default .farm/certs)"),
]
ClusterOpt = Annotated[
    str | None, typer.Option("--cluster", envvar="FARM_CLUSTER", help="the cluster's scheduler, tls://HOST:8786")
]
AgentWaitOpt = Annotated[
    float, typer.Option("--agent-wait", min=0, help="--cluster: seconds to wait for an agent offering a device")
]
Errors = Callable[[], contextlib.AbstractContextManager[None]]


def register(app: typer.Typer, errors: Errors, out: LazyConsole) -> None:
    cluster_app = typer.Typer(no_args_is_help=True, help="Devices on many hosts: certificates for the cluster.")
    app.add_typer(cluster_app, name="cluster")

    @cluster_app.command("certs")
    def cluster_certs(folder: Annotated[Path, typer.Argument(help="where to write the CA and certificates")]) -> None:
        """Make a CA plus scheduler, agent and client certificates (mutual TLS; keys are mode 0600)."""
        from farm.cluster import certs

        with errors():
            for path in certs.write_certs(folder):
                out.print(str(path), highlight=False)
            out.print("a client certificate can run code on every agent: give it only to who may use the devices")

    @app.command("scheduler")
    def scheduler(
        host: Annotated[str, typer.Option("--host", help="interface to listen on")] = "0.0.0.0",  # noqa: S104
        port: Annotated[int, typer.Option("--port")] = address.DEFAULT_PORT,
        cert_dir: CertsOpt = None,
    ) -> None:
        """Start the cluster's Dask scheduler with the farm's settings (TLS only, no task re-runs)."""
        from farm.cluster import certs
        from farm.cluster.scheduler import run_scheduler

        with errors():
            run_scheduler(host, port, certs.security(cert_dir or certs.default_folder(), "scheduler"))

    @app.command("agent")
    def agent(
        scheduler: Annotated[str, typer.Option("--scheduler", help="tls://HOST:8786")],
        inventory: Annotated[Path, typer.Option("--inventory", envvar="FARM_INVENTORY")] = Path("devices.yaml"),
        host: Annotated[str | None, typer.Option("--host", help="this agent's name (devices.yaml host:)")] = None,
        cert_dir: CertsOpt = None,
        state: Annotated[Path, typer.Option("--state", help="the agent's caches and leases")] = Path(".farm/agent"),
        listen: Annotated[str, typer.Option("--listen", help="address peers reach this agent on")] = "",
        metrics_port: Annotated[
            int | None,
            typer.Option("--metrics-port", min=0, help="serve device state and health for Prometheus on this port"),
        ] = None,
        metrics_bind: Annotated[str, typer.Option("--metrics-bind", help="--metrics-port's address")] = "127.0.0.1",
        health_period: Annotated[
            float, typer.Option("--health-period", min=1.0, max=3600.0, help="seconds between health probes")
        ] = 30.0,
    ) -> None:
        """Offer this host's devices to the cluster: one Dask worker resource per device; Ctrl-C stops it."""
        from farm.cluster import certs
        from farm.cluster.agent import AgentConfig, default_host, own_devices, run_agent

        with errors():
            url = address.check(scheduler)
            name = host or default_host()
            own_devices(inventory, name)  # a bad inventory is exit 2 before anything connects
            security = certs.security(cert_dir or certs.default_folder(), "agent") if address.is_tls(url) else None
            config = AgentConfig(url, inventory, name, state, listen or None, metrics_port, metrics_bind, health_period)
            run_agent(config, security)


@contextlib.contextmanager
def executor(url: str | None, cert_dir: Path | None, agent_wait_s: float) -> Iterator[ExecutorFactory | None]:
    """``farm run --cluster``: sessions go to the agents; without it, threads on this host (None)."""
    if url is None:
        yield None
        return
    from farm.cluster.client import connect, executor_factory

    with connect(url, cert_dir) as client:
        yield executor_factory(client, agent_wait_s)


def show_devices(url: str, cert_dir: Path | None, out: Console) -> list[dict[str, Any]]:
    """Print every connected agent's devices with their state; returns the rows (for --json)."""
    from rich.markup import escape
    from rich.table import Table

    from farm.cluster.client import agent_devices, connect

    with connect(url, cert_dir) as client:
        agents = agent_devices(client)
    table = Table(title=f"devices of the agents at {url}")
    for col in ("agent", "id", "platform", "target", "state", "run", "since"):
        table.add_column(col)
    rows: list[dict[str, Any]] = []
    for a in agents:
        for d in a["devices"]:  # type: ignore[attr-defined]
            since = time.strftime("%H:%M:%S", time.localtime(d["since"])) if d["since"] else ""
            state = {"idle": "[green]idle[/]", "down": "[red]down[/]"}.get(d["state"], "[yellow]leased[/]")
            table.add_row(escape(str(a["host"])), escape(d["id"]), d["platform"], d["target"], state,
                          escape(d["run_id"] or ""), since)  # fmt: skip
            rows.append(d | {"agent": a["host"], "address": a["address"]})
    out.print(table)
    return rows
