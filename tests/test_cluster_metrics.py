"""Device state from the agents into a real Prometheus: two ``farm agent --metrics-port`` processes, scraped.

Each agent owns one ``local`` device (this machine, its own workdir); agent-b also owns an SSH board nobody
listens for, so its health probe fails and it is ``down``. A session sent through the real Dask path holds a
device: Prometheus must see it ``leased`` by that run, then ``idle`` again.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.artifacts import DecodedCache
from farm.cluster.client import connect
from farm.config.inventory import load_inventory
from farm.config.suite import load_suite
from farm.executors.dask import DaskExecutor
from farm.session.cancel import Cancel
from farm.session.events import DeviceDone
from farm.session.spec import BundleRef, FileRef, JobKey, JobSpec, SessionSpec
from tests.conftest import wait_for
from tests.prom_fixtures import Prometheus, free_port
from tests.support.cluster import Cluster

pytestmark = pytest.mark.slow

HOSTS = {"here-a": "agent-a", "here-b": "agent-b", "gone": "agent-b"}
SUITE = """name: hold
sequences:
  - {id: tiny, generate: {source: testsrc2, width: 16, height: 16, fps: 30, frames: 1}}
rates_kbps: [100]
warmup_frames: 0
timeout_s: 120
power: {baseline_s: 0}
gates: [{metric: failures, op: "==", value: 0, scope: all}]
"""
Y4M = b"YUV4MPEG2 W16 H16 F30:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(16 * 16 * 3 // 2)


def _inventory(path: Path, work: Path) -> Path:
    local = "platform: linux, transport: {kind: local}, target: auto, power: {meter: none}, thermal: {zones: []}"
    path.write_text(
        "devices:\n"
        f"  - {{id: here-a, host: agent-a, workdir: {work}/a, {local}}}\n"
        f"  - {{id: here-b, host: agent-b, workdir: {work}/b, {local}}}\n"
        f"  - {{id: gone, host: agent-b, platform: linux, target: linux-x86_64, workdir: /tmp/gone,\n"
        f"      transport: {{kind: ssh, host: 127.0.0.1, port: {free_port()}, user: nobody}}}}\n"
    )
    return path


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Prometheus]]:
    base = tmp_path_factory.mktemp("cluster-metrics")
    cluster = Cluster(base, _inventory(base / "devices.yaml", base / "work"), HOSTS)
    ports = {host: free_port() for host in sorted(set(HOSTS.values()))}
    cluster.agent_args = {h: ("--metrics-port", str(p), "--health-period", "1") for h, p in ports.items()}
    cluster.start()
    prom = None
    try:
        prom = Prometheus(base / "prom", {"agents": [f"127.0.0.1:{p}" for p in ports.values()]})
        yield cluster, prom
    finally:
        if prom is not None:
            prom.stop()
        cluster.stop()


def _states(prom: Prometheus) -> dict[str, tuple[str, str]]:
    """device -> (host, state) of the series at 1."""
    return {r["metric"]["device"]: (r["metric"]["host"], r["metric"]["state"])
            for r in prom.query("farm_device_state == 1")}  # fmt: skip


def _hold_spec(cluster: Cluster, tmp: Path, device_id: str, run_id: str, sleep_s: float) -> SessionSpec:
    suite = tmp / "suite.yaml"
    suite.write_text(SUITE)
    digest = hashlib.sha256(Y4M).hexdigest()
    decode = ("sh", "-c", f'sleep {sleep_s}; cp "$1" "$2"', "decoder", "{input}", "{output}")
    bundle = BundleRef("b" * 64, "sleeper@1", (), decode)
    job = JobSpec(0, JobKey("test", "tiny", 100.0, 0), bundle.digest, FileRef(digest, f"{digest}.y4m", len(Y4M)),
                  digest, 30.0, len(Y4M))  # fmt: skip
    device = next(d for d in load_inventory(cluster.inventory).devices if d.id == device_id)
    return SessionSpec(run_id, device, load_suite(suite), (bundle,), (job,))


def test_agents_export_each_device_state_and_health_to_prometheus(scraped: tuple[Cluster, Prometheus]) -> None:
    _, prom = scraped
    want = {"here-a": ("agent-a", "idle"), "here-b": ("agent-b", "idle"), "gone": ("agent-b", "down")}
    assert wait_for(lambda: _states(prom) == want, 60), _states(prom)
    up = {r["metric"]["device"]: r["value"][1] for r in prom.query("farm_device_up")}
    assert up == {"here-a": "1", "here-b": "1", "gone": "0"}
    # every state is a series (0 for the others), so "how many devices are leased" is a plain sum
    assert len(prom.query('farm_device_state{device="here-a"}')) == 3
    assert prom.query("farm_device_lease_start_timestamp_seconds") == []


def test_a_device_a_run_holds_is_leased_by_that_run_then_idle(
    scraped: tuple[Cluster, Prometheus], tmp_path: Path
) -> None:
    cluster, prom = scraped
    y4m = tmp_path / "in.y4m"
    y4m.write_bytes(Y4M)
    local = {hashlib.sha256(Y4M).hexdigest(): y4m}.__getitem__
    spec = _hold_spec(cluster, tmp_path, "here-b", "run-held", sleep_s=6)
    results: list[DeviceDone] = []
    with connect(cluster.url, cluster.certs) as client:
        executor = DaskExecutor(client, local, DecodedCache(tmp_path / "out"), agent_wait_s=10)

        def run() -> None:
            results.extend(executor.run([spec], lambda _e: None, Cancel()))

        thread = threading.Thread(target=run)
        thread.start()
        try:
            leased = lambda: _states(prom).get("here-b") == ("agent-b", "leased")  # noqa: E731
            assert wait_for(leased, 30), _states(prom)
            lease = prom.query("farm_device_lease_start_timestamp_seconds")
            assert [(r["metric"]["device"], r["metric"]["host"], r["metric"]["run"]) for r in lease] == [
                ("here-b", "agent-b", "run-held")
            ]
            assert _states(prom)["here-a"] == ("agent-a", "idle")  # the other agent's device is untouched
        finally:
            thread.join(timeout=120)
    assert [r.status for r in results] == ["ok"]
    assert wait_for(lambda: _states(prom).get("here-b") == ("agent-b", "idle"), 30), _states(prom)
    assert wait_for(lambda: prom.query("farm_device_lease_start_timestamp_seconds") == [], 30)
