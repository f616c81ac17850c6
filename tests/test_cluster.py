"""Devices on many hosts, for real: a ``farm scheduler`` and two ``farm agent`` processes with mutual TLS on
loopback, each owning one virtual SSH board (real sshd), and controllers that are real ``farm run`` processes.
"""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from farm.cluster import remote
from farm.cluster.certs import write_certs
from farm.cluster.client import connect
from farm.sim.fleet import Fleet, start_fleet
from tests.conftest import EXAMPLES, alive, wait_for, write
from tests.sim_fixtures import require_sshd
from tests.support.cluster import Cluster, farm_env, with_hosts
from tests.support.runs import variant

pytestmark = pytest.mark.slow

HOSTS = {"board-1": "agent-a", "board-2": "agent-b"}
STOP_BOUND_S = 20.0  # the local bound (10 s) plus Dask's cancel round trips on a loaded 2-core machine
SUITE = """name: cluster
sequences:
  - id: bars
    generate: {{source: testsrc2, width: 128, height: 96, fps: 30, frames: 12}}
rates_kbps: {rates}
repeats: 1
warmup_frames: 2
timeout_s: 400
power: {{baseline_s: 0}}
gates:
  - {{metric: fps, op: ">=", value: 1}}
  - {{metric: failures, op: "==", value: 0, scope: all}}
{more}"""
BITEXACT = '  - {metric: consistency, op: "==", value: bitexact, scope: all}\n'


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require_sshd()
    fleet = start_fleet(2, tmp_path_factory.mktemp("cluster-boards"), exit_with_parent=True)
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="module")
def cluster_all(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    inv = with_hosts(fleet.inventory_path, HOSTS, base / "devices.yaml")
    cluster = Cluster(base, inv, HOSTS).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(cluster_all: Cluster) -> Cluster:
    cluster_all.ensure_agents()  # an earlier test may have killed one
    return cluster_all


def _suite(tmp_path: Path, rates: str = "[60, 120]", more: str = BITEXACT) -> str:
    return str(write(tmp_path / "cluster.yaml", SUITE.format(rates=rates, more=more)))


def _run(cluster: Cluster, tmp: Path, *extra: str, bundle: Path | None = None, name: str = "run",
         suite: str | None = None) -> subprocess.Popen[str]:  # fmt: skip
    argv = [sys.executable, "-m", "farm", "run", suite or _suite(tmp), "--bundle", str(bundle or EXAMPLES / "av1-svt"),
            "--inventory", str(cluster.inventory), *extra]  # fmt: skip
    env = farm_env(FARM_STORE=str(tmp / name / "results.db"), FARM_STATE=str(cluster.base / "controller"))
    return subprocess.Popen(argv, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _on_cluster(cluster: Cluster) -> tuple[str, ...]:
    return ("--cluster", cluster.url, "--certs", str(cluster.certs))


def _jobs(store: Path) -> list[sqlite3.Row]:
    if not store.exists():
        return []
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return list(db.execute("SELECT * FROM jobs ORDER BY id"))
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def _shape(doc: Any) -> Any:
    """A JSON document's structure (keys and types), without values that differ between runs."""
    if isinstance(doc, dict):
        return {k: _shape(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_shape(doc[0])] if doc else []
    return type(doc).__name__ if doc is not None else "null-or-any"


def _loose(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_loose(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_loose(x, y) for x, y in zip(a, b, strict=True))
    return a == b or "null-or-any" in (a, b) or {a, b} <= {"int", "float"}


def _cases(junit: Path) -> list[str]:
    return sorted(c.get("name", "") for c in ET.parse(junit).getroot().iter("testcase"))


def test_run_across_two_agents_matches_a_local_run(cluster: Cluster, tmp_path: Path) -> None:
    remote_run = _run(cluster, tmp_path, *_on_cluster(cluster), "--json", "c.json", "--junit", "c.xml", name="c")
    out_c, _ = remote_run.communicate(timeout=300)
    assert remote_run.returncode == 0, out_c
    local = _run(cluster, tmp_path, "--json", "l.json", "--junit", "l.xml", name="l")
    out_l, _ = local.communicate(timeout=300)
    assert local.returncode == 0, out_l
    c, lo = json.loads((tmp_path / "c.json").read_text()), json.loads((tmp_path / "l.json").read_text())
    assert _loose(_shape(c), _shape(lo))
    assert _cases(tmp_path / "c.xml") == _cases(tmp_path / "l.xml")
    for text in (out_c, out_l):
        assert "board-1" in text and "board-2" in text and "PASSED (exit 0)" in text
    jobs = _jobs(tmp_path / "c" / "results.db")
    assert {j["device_id"] for j in jobs} == {"board-1", "board-2"} and all(j["status"] == "ok" for j in jobs)
    assert "pulled 2 distinct outputs" in out_c  # identical decodes on two hosts pulled once each
    # each job's power trace crossed the agent's process in its JobDone and was stored with the job
    db = sqlite3.connect(tmp_path / "c" / "results.db")
    traced = dict(db.execute("SELECT job_id, points FROM job_traces WHERE series='power_w' AND points >= 2"))
    db.close()
    assert sorted(traced) == sorted(int(j["id"]) for j in jobs)


def _sessions_of(dask_scheduler: Any, device: str) -> int:
    return sum(1 for k in dask_scheduler.tasks if str(k).startswith("farm-session-") and f"-{device}-" in str(k))


def test_two_concurrent_runs_share_a_device_in_turn(cluster: Cluster, tmp_path: Path) -> None:
    gate = tmp_path / "go"  # decodes hold until the second run is queued behind the first (a loaded CI machine)
    slow = variant(tmp_path, "slow", ["sh", "-c", f'while [ ! -e {gate} ]; do sleep 0.1; done; exec "$@"', "w"])
    args = (*_on_cluster(cluster), "--devices", "board-1")
    suite = _suite(tmp_path, more="")  # one device: nothing to compare for bit-exactness
    first = _run(cluster, tmp_path, *args, bundle=slow, name="one", suite=suite)
    second = _run(cluster, tmp_path, *args, bundle=slow, name="two", suite=suite)
    with connect(cluster.url, cluster.certs) as client:
        assert wait_for(lambda: client.run_on_scheduler(_sessions_of, device="board-1") == 2, 180)
    time.sleep(3)  # the queued one asks who holds the device and says so
    gate.touch()
    out2, _ = second.communicate(timeout=300)
    out1, _ = first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, out1 + out2
    one, two = _jobs(tmp_path / "one" / "results.db"), _jobs(tmp_path / "two" / "results.db")
    waited, held = (out2, one) if "waiting for board-1" in out2 else (out1, two)
    assert f"waiting for board-1, held by run {held[0]['run_id']} since" in waited, out1 + out2
    windows = sorted((j["started_at"], j["finished_at"], j["run_id"]) for j in one + two)
    assert len(windows) == 4 and len({w[2] for w in windows}) == 2
    for (_, end, run_a), (start, _, run_b) in itertools.pairwise(windows):
        assert start >= end or run_a == run_b, "decode windows of two runs overlap on one device"


def test_a_device_no_agent_has_is_a_clear_error_not_a_hang(cluster: Cluster, tmp_path: Path) -> None:
    data = yaml.safe_load(cluster.inventory.read_text())
    data["devices"].append(data["devices"][0] | {"id": "board-x", "host": "agent-z"})
    inv = write(tmp_path / "devices.yaml", yaml.safe_dump(data))
    argv = [
        sys.executable,
        "-m",
        "farm",
        "run",
        _suite(tmp_path, more=""),
        "--bundle",
        str(EXAMPLES / "av1-svt"),
        "--inventory",
        str(inv),
        *_on_cluster(cluster),
        "--agent-wait",
        "2",
        "--devices",
        "board-x,board-1",
    ]
    env = farm_env(FARM_STORE=str(tmp_path / "x.db"), FARM_STATE=str(cluster.base / "controller"))
    t0 = time.monotonic()
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "no connected agent offers device board-x (waited 2s)" in done.stdout + done.stderr
    assert time.monotonic() - t0 < 120
    assert {j["device_id"] for j in _jobs(tmp_path / "x.db") if j["status"] == "ok"} == {"board-1"}


def test_an_agent_killed_mid_run_fails_its_devices_jobs_and_the_others_complete(
    cluster: Cluster, fleet: Fleet, tmp_path: Path
) -> None:
    slow = variant(tmp_path, "slow", ["sh", "-c", 'sleep 3; exec "$@"', "slow"])
    store = tmp_path / "k" / "results.db"
    proc = _run(cluster, tmp_path, *_on_cluster(cluster), bundle=slow, name="k",
                suite=_suite(tmp_path, "[60, 120, 240, 480]"))  # fmt: skip
    assert wait_for(lambda: any(j["device_id"] == "board-2" for j in _jobs(store)), 120)
    cluster.kill_agent("agent-b")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    jobs = _jobs(store)
    one = [j for j in jobs if j["device_id"] == "board-1"]
    two = [j for j in jobs if j["device_id"] == "board-2"]
    assert len(one) == 4 and all(j["status"] == "ok" for j in one)
    assert len(two) == 4 and two[0]["status"] == "ok"
    lost = [j for j in two if j["status"] == "failed"]
    assert lost and all("agent lost" in (j["error"] or "") for j in lost), [dict(j) for j in two]
    board = fleet.board("board-2")
    assert wait_for(lambda: not alive(f"{board.workdir}/jobs"), 10)  # the board's watchdog killed the decoder


def test_controller_sigint_stops_every_session_and_releases_the_devices(
    cluster: Cluster, fleet: Fleet, tmp_path: Path
) -> None:
    hang = variant(tmp_path, "hang", ["sh", "-c", 'sleep 300; exec "$@"', "hang"])
    proc = _run(cluster, tmp_path, *_on_cluster(cluster), bundle=hang, name="h")
    decoding = wait_for(lambda: all(alive(f"{b.workdir}/jobs") for b in fleet.boards), 180)
    assert decoding, proc.communicate()[0] if proc.poll() is not None else "still running, never decoding"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, out
    assert time.monotonic() - t0 < STOP_BOUND_S
    for board in fleet.boards:
        assert wait_for(lambda b=board: not alive(str(b.workdir)), 5), alive(str(board.workdir))

    assert wait_for(lambda: _all_idle(cluster), 10), "a device resource is still held after the controller stopped"


def test_an_interrupted_cluster_run_resumed_runs_only_the_missing_jobs(
    cluster: Cluster, fleet: Fleet, tmp_path: Path
) -> None:
    suite = _suite(tmp_path, rates="[40, 60, 90, 120]")
    slow = variant(tmp_path, "slow", ["sh", "-c", 'sleep 1.5; exec "$@"', "slow"])
    store = tmp_path / "r" / "results.db"
    proc = _run(cluster, tmp_path, *_on_cluster(cluster), bundle=slow, name="r", suite=suite)
    assert wait_for(lambda: len(_jobs(store)) >= 2, 240), proc.communicate()[0] if proc.poll() is not None else ""
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130 and "--resume" in out, out
    assert wait_for(lambda: _all_idle(cluster), 10), "a device resource is still held after the stop"
    db = sqlite3.connect(store)
    run_id, status = db.execute("SELECT id, status FROM runs").fetchone()
    db.close()
    kept = _jobs(store)
    assert status == "interrupted" and 2 <= len(kept) < 8 and all(j["status"] == "ok" for j in kept), kept

    resumed = _run(cluster, tmp_path, *_on_cluster(cluster), "--resume", run_id, bundle=slow, name="r", suite=suite)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    after = _jobs(store)
    assert [j["id"] for j in after[: len(kept)]] == [j["id"] for j in kept]  # kept as they were, never re-run
    assert len(after) == 8 and len({_key(j) for j in after}) == 8 and all(j["status"] == "ok" for j in after)
    db = sqlite3.connect(store)
    assert db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone() == ("complete",)
    db.close()
    # the result matches an uninterrupted run of the same bundle: the same decoded output for every job
    whole = _run(cluster, tmp_path, *_on_cluster(cluster), bundle=slow, name="w", suite=suite)
    out, _ = whole.communicate(timeout=300)
    assert whole.returncode == 0, out
    assert {_key(j): j["output_sha"] for j in after} == {
        _key(j): j["output_sha"] for j in _jobs(tmp_path / "w" / "results.db")
    }


def _key(job: sqlite3.Row) -> tuple[str, str, float, int]:
    return job["device_id"], job["sequence"], job["rate_kbps"], job["repeat"]


def _all_idle(cluster: Cluster) -> bool:
    with connect(cluster.url, cluster.certs) as client:
        answers = client.run(remote.describe)
    return all(d["state"] == "idle" for a in answers.values() for d in a["devices"])


def test_a_killed_controllers_sessions_are_stopped_by_the_agents(
    cluster: Cluster, fleet: Fleet, tmp_path: Path
) -> None:
    hang = variant(tmp_path, "hang", ["sh", "-c", 'sleep 300; exec "$@"', "hang"])
    proc = _run(cluster, tmp_path, *_on_cluster(cluster), bundle=hang, name="killed")
    decoding = wait_for(lambda: all(alive(f"{b.workdir}/jobs") for b in fleet.boards), 180)
    assert decoding, proc.communicate()[0] if proc.poll() is not None else "still running, never decoding"
    proc.kill()  # no goodbye: the scheduler drops the dead client's tasks, and each agent stops its session
    proc.wait()
    for board in fleet.boards:
        assert wait_for(lambda b=board: not alive(str(b.workdir)), STOP_BOUND_S), alive(str(board.workdir))
    assert wait_for(lambda: _all_idle(cluster), STOP_BOUND_S), "a device resource is still held"


def test_farm_devices_cluster_lists_each_agents_devices(cluster: Cluster, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "farm", "devices", *_on_cluster(cluster), "--json", str(tmp_path / "d.json")]
    done = subprocess.run(argv, cwd=tmp_path, env=farm_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "d.json").read_text())["devices"]
    assert {(r["id"], r["agent"], r["state"]) for r in rows} == {("board-1", "agent-a", "idle"),
                                                                 ("board-2", "agent-b", "idle")}  # fmt: skip


def test_a_client_certificate_from_another_ca_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    write_certs(tmp_path / "other")
    argv = [sys.executable, "-m", "farm", "devices", "--cluster", cluster.url, "--certs", str(tmp_path / "other")]
    done = subprocess.run(argv, cwd=tmp_path, env=farm_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "cannot connect to the cluster" in done.stderr


def test_an_agent_refuses_plain_tcp_off_loopback(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "farm", "agent", "--scheduler", "tcp://192.0.2.1:8786", "--host", "h"]
    done = subprocess.run(argv, cwd=tmp_path, env=farm_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 2 and "plain tcp:// is refused off loopback" in done.stderr, done.stderr


def test_lease_timeout_gives_up_on_a_device_another_run_holds(cluster: Cluster, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    held = variant(tmp_path, "held", ["sh", "-c", f'while [ ! -e {gate} ]; do sleep 0.1; done; exec "$@"', "w"])
    suite = _suite(tmp_path, more="")
    args = (*_on_cluster(cluster), "--devices", "board-1")
    holder = _run(cluster, tmp_path, *args, bundle=held, name="holder", suite=suite)
    try:
        assert wait_for(lambda: alive(f"{gate}"), 180), "the holding run never started decoding"
        waiter = _run(cluster, tmp_path, *args, "--lease-timeout", "3", name="waiter", suite=suite)
        out, _ = waiter.communicate(timeout=180)
        assert waiter.returncode == 3, out
        assert "board-1: held by run" in out and "gave up after 3s (--lease-timeout)" in out
    finally:
        gate.touch()
        out_h, _ = holder.communicate(timeout=180)
    assert holder.returncode == 0, out_h


def test_agents_reconnect_by_themselves_after_a_scheduler_restart(cluster: Cluster, tmp_path: Path) -> None:
    assert cluster.scheduler is not None
    cluster.scheduler.send_signal(signal.SIGTERM)
    cluster.scheduler.wait(timeout=60)
    cluster.start_scheduler()  # same port, same certificates; nobody touches the agents
    cluster.wait_ready(120)
    assert all(proc.poll() is None for proc in cluster.agents.values())
    proc = _run(cluster, tmp_path, *_on_cluster(cluster), name="after", suite=_suite(tmp_path, more=""))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
