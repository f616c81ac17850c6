"""A real farm cluster on loopback for tests: ``farm scheduler`` and ``farm agent`` processes with mutual TLS.

Every process is started here and stopped here, by its PID; an agent a test killed is started again by
``ensure_agents`` so the next test finds the cluster whole.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from farm.cluster.certs import write_certs
from farm.cluster.client import connect
from farm.cluster.controller import agents_by_device
from tests.conftest import ROOT

READY_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def with_hosts(inventory: Path, hosts: dict[str, str], out: Path) -> Path:
    """The inventory with ``host:`` set per device id (devices not named are left out)."""
    data = yaml.safe_load(inventory.read_text())
    data["devices"] = [d | {"host": hosts[d["id"]]} for d in data["devices"] if d["id"] in hosts]
    out.write_text(yaml.safe_dump(data))
    return out


def farm_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


@dataclass
class Cluster:
    base: Path
    inventory: Path
    hosts: dict[str, str]  # device id -> agent host
    certs: Path = field(init=False)
    port: int = field(init=False)
    scheduler: subprocess.Popen[bytes] | None = None
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    agent_args: dict[str, tuple[str, ...]] = field(default_factory=dict)  # host -> extra `farm agent` options

    def __post_init__(self) -> None:
        self.certs = self.base / "certs"
        write_certs(self.certs)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.port}"

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.base / f"{name}.log").open("ab")
        argv = [sys.executable, "-m", "farm", *args, "--certs", str(self.certs)]
        return subprocess.Popen(argv, cwd=self.base, env=farm_env(), stdout=log, stderr=subprocess.STDOUT)

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(self.port))

    def start_agent(self, host: str) -> None:
        self.agents[host] = self._spawn(
            f"agent-{host}", "agent", "--scheduler", self.url, "--inventory", str(self.inventory), "--host", host,
            "--state", str(self.base / f"agent-{host}"), "--listen", "127.0.0.1", *self.agent_args.get(host, ()),
        )  # fmt: skip

    def start(self) -> Cluster:
        self.start_scheduler()
        for host in sorted(set(self.hosts.values())):
            self.start_agent(host)
        self.wait_ready()
        return self

    def ensure_agents(self) -> None:
        for host, proc in list(self.agents.items()):
            if proc.poll() is not None:
                self.start_agent(host)
        self.wait_ready()

    def wait_ready(self, timeout_s: float = READY_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with connect(self.url, self.certs) as client:
                    if set(self.hosts) <= set(agents_by_device(client)):
                        return
            except Exception:  # the scheduler is not up yet
                pass
            time.sleep(0.3)
        raise AssertionError(f"cluster not ready after {timeout_s:g}s; see {self.base}/*.log")

    def kill_agent(self, host: str) -> None:
        proc = self.agents[host]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in [*self.agents.values(), self.scheduler]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.agents.values(), self.scheduler]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
