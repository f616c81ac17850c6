"""Whole runs on virtual SSH boards (real sshd, simulated sensors) plus the local device, and their faults."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from farm.bundle import write_sums
from farm.sim.fleet import Fleet
from farm.sim.sshboard import SshBoard
from tests.conftest import EXAMPLES
from tests.sim_fixtures import BoardFactory, ssh_argv
from tests.support.runs import bundle_args, farm, inventory_with_local, sim_suite, variant

pytestmark = pytest.mark.slow


def test_two_boards_and_local_with_simulated_power(ssh_fleet: Fleet, tmp_path: Path) -> None:
    inv = inventory_with_local(ssh_fleet.inventory_path, tmp_path / "devices.yaml")
    report = tmp_path / "r.json"
    code, out = farm(
        tmp_path, "run", sim_suite(tmp_path), *bundle_args(), "--inventory", str(inv), "--json", str(report)
    )
    assert code == 0, out
    assert "SIMULATED" in out
    data = json.loads(report.read_text())
    rows = {(r["device"], r["role"]): r for r in data["results"]}
    for board in ("board-1", "board-2"):
        row = rows[(board, "test")]
        assert row["power_w"] is not None and row["power_w"] > 0
        assert row["energy_per_frame_j"] is not None and row["temp_max_c"] is not None
    consistency = next(g for g in data["gates"] if g["metric"] == "consistency")
    assert consistency["verdict"] == "pass" and "24 decodes" in consistency["detail"]  # 8 bitstreams x 3 devices
    code, out = farm(tmp_path, "run", sim_suite(tmp_path), *bundle_args(), "--inventory", str(inv))
    assert code == 0 and "pushed 0 bytes in 0 files" in out


def test_a_board_that_refuses_connections_fails_only_its_jobs(ssh_board: BoardFactory, tmp_path: Path) -> None:
    up, down = ssh_board("up"), ssh_board("down")
    inv = ssh_board.inventory(tmp_path / "devices.yaml")
    down.stop()
    code, out = farm(tmp_path, "run", sim_suite(tmp_path), *bundle_args(), "--inventory", str(inv))
    assert code == 1
    assert "device down failed" in out and "cannot connect" in out
    assert "gate fail: failures == 0 [all]: 8 of 16 jobs failed" in out
    assert up.running()


def test_no_board_reachable_is_exit_3(ssh_board: BoardFactory, tmp_path: Path) -> None:
    board = ssh_board("lonely")
    inv = ssh_board.inventory(tmp_path / "devices.yaml")
    board.stop()
    code, out = farm(tmp_path, "run", sim_suite(tmp_path), *bundle_args(), "--inventory", str(inv))
    assert code == 3 and "no device could run" in out and "lonely" in out


def _kill_connections_only(board: SshBoard) -> None:
    """What a network drop does: the board's per-connection sshd processes die, the commands they ran do not."""
    for pid in board.session_processes():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "sshd":
            os.kill(pid, signal.SIGKILL)


def test_connection_dropped_mid_decode_retries_the_job_once(ssh_board: BoardFactory, tmp_path: Path) -> None:
    board = ssh_board("flaky")
    inv = ssh_board.inventory(tmp_path / "devices.yaml")
    marker = "1.4142"
    once = tmp_path / "slowed-once"  # only the first decode is slow: the one the link drops under
    slow = variant(
        tmp_path, "slow",
        ["sh", "-c", f'if [ ! -e "$2" ]; then : >"$2"; touch "$1.started"; sleep {marker}; fi; shift 2; exec "$@"',
         "w", "{output}", str(once)],
    )  # fmt: skip
    dropped = threading.Event()

    def drop_on_first_decode() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not dropped.is_set():
            if list(Path(board.workdir).glob("jobs/*/*/out.y4m.started")):
                _kill_connections_only(board)
                dropped.set()
            time.sleep(0.05)

    watcher = threading.Thread(target=drop_on_first_decode, daemon=True)
    watcher.start()
    gates = '  - {metric: failures, op: "==", value: 0, scope: all}'
    code, out = farm(tmp_path, "run", sim_suite(tmp_path, gates), "--bundle", str(slow), "--inventory", str(inv))
    watcher.join()
    assert dropped.is_set()
    assert code == 0, out  # the dropped job was retried on a new connection and passed
    assert "link dropped, retrying job 1" in out
    # the first attempt's decoder outlived its connection; the retry killed it instead of racing it
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert f"sleep {marker}" not in ps


def test_hung_decoder_is_killed_on_the_board(ssh_fleet: Fleet, tmp_path: Path) -> None:
    marker = "67.4242"
    hang = variant(tmp_path, "hang", ["sh", "-c", f"sleep {marker}", "w"])
    gates = '  - {metric: failures, op: "==", value: 0, scope: all}'
    code, out = farm(
        tmp_path, "run", sim_suite(tmp_path, gates, timeout_s=1), "--bundle", str(hang),
        "--inventory", str(ssh_fleet.inventory_path), "--devices", "board-1",
    )  # fmt: skip
    assert code == 1 and "decoder timed out after 1s" in out
    time.sleep(0.5)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert marker not in ps


def test_crashing_decoder_on_a_board_keeps_stderr(ssh_fleet: Fleet, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(EXAMPLES / "av1-svt", broken)
    manifest = broken / "bundle.yaml"
    manifest.write_text(manifest.read_text().replace('"libdav1d"', '"no_such_decoder"'))
    write_sums(broken)
    report = tmp_path / "r.json"
    gates = '  - {metric: failures, op: "==", value: 0, scope: all}'
    code, out = farm(
        tmp_path, "run", sim_suite(tmp_path, gates), "--bundle", str(broken), "--inventory",
        str(ssh_fleet.inventory_path), "--devices", "board-2", "--json", str(report),
    )  # fmt: skip
    assert code == 1 and "8 of 8 jobs failed" in out and "decoder exited" in out
    import sqlite3

    db = sqlite3.connect(tmp_path / "state" / "results.db")
    tails = [row[0] for row in db.execute("SELECT stderr_tail FROM jobs WHERE status = 'failed'")]
    assert len(tails) == 8 and all("no_such_decoder" in (t or "") for t in tails)


def test_cooldown_waits_for_a_hot_board(ssh_board: BoardFactory, tmp_path: Path) -> None:
    from farm.sim.loadmodel import LoadParams

    board = ssh_board("hot", params=LoadParams(tau_s=1.0))
    inv = ssh_board.inventory(tmp_path / "devices.yaml")
    stop, hot = threading.Event(), threading.Event()

    def celsius() -> float:
        try:
            return int(Path(board.thermal_zone).read_text()) / 1000
        except (OSError, ValueError):
            return 0.0

    def heat_until_the_farm_is_cooling() -> None:
        """Hot before the run starts (a pipelined run connects at once), still hot when the farm first reads the
        zone (its prepare makes cas/; the read follows its probes, slow under load), then left to cool."""
        cmd = ssh_argv(board, ssh_board.client_key, tmp_path / "known_hosts", "timeout 60 sh -c 'while :; do :; done'")
        heater = subprocess.Popen(cmd)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and celsius() < 45.0:
            time.sleep(0.05)
        hot.set()
        while time.monotonic() < deadline and not (Path(board.workdir) / "cas").exists():
            time.sleep(0.05)
        time.sleep(2.0)
        heater.kill()
        subprocess.run(ssh_argv(board, ssh_board.client_key, tmp_path / "known_hosts", "pkill -f 'while :'"))
        stop.set()

    heater = threading.Thread(target=heat_until_the_farm_is_cooling, daemon=True)
    heater.start()
    assert hot.wait(60), f"the board never got hot: {celsius()} C"
    suite = sim_suite(tmp_path, '  - {metric: failures, op: "==", value: 0, scope: all}')
    text = Path(suite).read_text() + "thermal: {start_below_c: 40.5, timeout_s: 60}\n"
    Path(suite).write_text(text)
    code, out = farm(
        tmp_path, "run", suite, *bundle_args(), "--inventory", str(inv), "--json", str(tmp_path / "r.json")
    )
    heater.join()
    assert code == 0, out
    assert "cooling:" in out
    props = json.loads((tmp_path / "r.json").read_text())["devices"][0]["properties"]
    assert props["cooldown_s"] > 0


def test_cooldown_that_never_ends_is_bounded(ssh_fleet: Fleet, tmp_path: Path) -> None:
    suite = sim_suite(tmp_path, '  - {metric: failures, op: "==", value: 0, scope: all}')
    Path(suite).write_text(Path(suite).read_text() + "thermal: {start_below_c: 20, timeout_s: 1}\n")
    code, out = farm(tmp_path, "run", suite, *bundle_args(), "--inventory", str(ssh_fleet.inventory_path),
                     "--devices", "board-1")  # fmt: skip
    assert code == 1 and "of cooldown (suite wants < 20 C before the first job)" in out
