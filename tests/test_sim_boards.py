"""Virtual SSH boards: the load model's maths, the sysfs files, and real sshd boards whose sensors follow load."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.config.inventory import load_inventory
from farm.sim.fleet import Fleet, start_fleet
from farm.sim.loadd import ProcStat, TreeCpu, TreeScanner, is_alive, parse_stat
from farm.sim.loadmodel import LoadModel, LoadParams
from farm.sim.sshboard import SimError, SshBoard, read_banner
from farm.sim.sysfs import SysfsTree, read_int
from tests.sim_fixtures import BoardFactory, require_sshd, ssh_argv

BUSY = "timeout {s} sh -c 'while :; do :; done'"


# --- load model ---------------------------------------------------------------------------------------------
def test_idle_board_sits_at_idle_power_and_its_steady_temperature() -> None:
    model = LoadModel()
    assert model.power_w == 1.5
    assert model.temp_c == pytest.approx(30.0 + 6.0 * 1.5)  # 39 C
    for _ in range(100):
        model.step(cpu_s=0.0, dt_s=0.1)
    assert model.power_w == 1.5
    assert model.temp_c == pytest.approx(39.0)
    assert model.energy_j == pytest.approx(1.5 * 10.0)


def test_busy_cores_set_power_and_the_steady_state_temperature() -> None:
    model = LoadModel()
    for _ in range(2000):  # 20 tau: within 24 C x exp(-20) of the target
        model.step(cpu_s=0.2 * 2.0, dt_s=0.2)  # two busy cores
    assert model.busy_cores == pytest.approx(2.0)
    assert model.power_w == pytest.approx(1.5 + 2 * 2.0)
    assert model.temp_c == pytest.approx(30.0 + 6.0 * 5.5, abs=1e-3)


def test_after_one_time_constant_the_gap_closes_by_63_percent() -> None:
    params = LoadParams(tau_s=20.0)
    for steps in (1, 7, 200):  # exact for a constant load whatever the step size
        model = LoadModel(params)
        start = model.temp_c
        target = params.target_c(params.power_w(1.0))
        for _ in range(steps):
            model.step(cpu_s=params.tau_s / steps, dt_s=params.tau_s / steps)
        assert (model.temp_c - start) / (target - start) == pytest.approx(1 - math.exp(-1))  # 0.632


def test_throttling_is_flagged_above_the_threshold() -> None:
    model = LoadModel(LoadParams(throttle_c=45.0, tau_s=1.0))
    assert not model.throttled
    for _ in range(50):
        model.step(cpu_s=0.1, dt_s=0.1)  # one busy core: target 51 C
    assert model.throttled


@pytest.mark.parametrize("bad", [{"tau_s": 0.0}, {"idle_w": -1.0}, {"ambient_c": math.nan}])
def test_bad_parameters_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LoadParams(**bad)


# --- sysfs --------------------------------------------------------------------------------------------------
def test_sysfs_files_use_kernel_units(tmp_path: Path) -> None:
    model = LoadModel(LoadParams(throttle_c=45.0, tau_s=1.0))
    tree = SysfsTree(tmp_path, energy_range_uj=1_000_000)  # wraps every joule
    tree.create(model)
    assert read_int(tree.power_node) == 1_500_000
    assert read_int(tree.voltage_node) == 5000
    assert read_int(tree.current_node) == 300  # 1.5 W / 5 V
    assert read_int(tree.temp_node) == 39_000
    assert read_int(tree.throttle_node) == 0
    assert read_int(tree.thermal_zone_dir / "trip_point_0_temp") == 45_000
    assert (tree.hwmon_dir / "name").read_text() == "farm_sim\n"
    for _ in range(50):
        model.step(cpu_s=0.1, dt_s=0.1)
    tree.update(model)
    assert read_int(tree.power_node) == 3_500_000
    assert read_int(tree.voltage_node) * read_int(tree.current_node) == 3_500_000  # mV x mA = uW
    assert read_int(tree.throttle_node) == 1
    assert read_int(tree.energy_node) == round(model.energy_j * 1e6) % 1_000_000
    assert not list(tree.hwmon_dir.glob("*.tmp"))


def test_readers_never_see_a_partial_number(tmp_path: Path) -> None:
    model = LoadModel()
    tree = SysfsTree(tmp_path)
    tree.create(model)
    seen: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            seen.append(tree.power_node.read_text())

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(300):
        model.step(cpu_s=(i % 7) * 0.013, dt_s=0.01)
        tree.update(model)
    done.set()
    thread.join()
    assert len(seen) > 10
    assert all(text.endswith("\n") and text.strip().isdigit() for text in seen)


# --- CPU accounting of a process tree -----------------------------------------------------------------------
def stat(pid: int, ppid: int, own: int, child: int = 0, start: int = 1) -> ProcStat:
    return ProcStat(pid=pid, ppid=ppid, state="S", starttime=start, own_ticks=own, child_ticks=child)


def table(*stats: ProcStat) -> dict[int, ProcStat]:
    return {s.pid: s for s in stats}


def test_exited_children_are_counted_once_through_their_parent() -> None:
    account = TreeCpu(10, count_root_own=False)  # supervisor: loadd's own time is not the board's
    assert account.sample(table(stat(10, 1, own=500), stat(11, 10, own=0))) == 0
    assert account.sample(table(stat(10, 1, own=900), stat(11, 10, own=40), stat(12, 11, own=30))) == 70
    # 12 exited and was reaped by 11, whose cutime now holds it: no double count, nothing lost
    assert account.sample(table(stat(10, 1, own=900), stat(11, 10, own=50, child=35))) == 85
    # the reap raced the read (11 vanished, 10's cutime not updated yet): the total holds, never drops
    assert account.sample(table(stat(10, 1, own=900))) == 85
    assert account.sample(table(stat(10, 1, own=900, child=90))) == 90


def test_a_process_that_leaves_the_tree_stays_counted() -> None:
    account = TreeCpu(20, count_root_own=True)  # monitor mode: orphans can go to init
    assert account.sample(table(stat(20, 1, own=5), stat(21, 20, own=10))) == 15
    assert account.sample(table(stat(20, 1, own=5), stat(21, 1, own=60))) == 65  # re-parented to init
    assert account.sample(table(stat(20, 1, own=5))) == 65  # reaped by init: its last time is retired
    assert account.sample(table(stat(20, 1, own=7), stat(21, 1, own=0, start=999))) == 67  # pid reused: not ours


def test_scanner_reads_only_the_tree_and_new_processes() -> None:
    scanner = TreeScanner(os.getpid())
    first = scanner.scan(())
    assert 1 in first and os.getpid() in first  # everything is new at first
    with subprocess.Popen(["sleep", "30"]) as child:
        try:
            second = scanner.scan(())
            assert child.pid in second and second[child.pid].ppid == os.getpid()
            assert 1 not in second  # known to be someone else's: not read again
            assert child.pid in scanner.scan([child.pid])
        finally:
            child.kill()


def test_stat_parsing_survives_odd_command_names() -> None:
    line = "4242 (evil) 1 2 (x) R 77 4242 4242 0 -1 4194304 0 0 0 0 13 8 4 1 20 0 1 0 123456 0 0 " + "0 " * 30
    parsed = parse_stat(line)
    assert (parsed.pid, parsed.ppid, parsed.state, parsed.own_ticks, parsed.child_ticks) == (4242, 77, "R", 21, 5)
    assert parsed.starttime == 123456


# --- real sshd boards ---------------------------------------------------------------------------------------
def run_ssh(
    fleet: Fleet, board: SshBoard, *command: str, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    argv = ssh_argv(board, fleet.key_path, fleet.known_hosts_path, *command, options=options)
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_key_login_with_strict_host_key_checking(ssh_fleet: Fleet) -> None:
    for board in ssh_fleet.boards:
        result = run_ssh(ssh_fleet, board, "echo ok; echo $FARM_SIM_BOARD")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["ok", board.name]


def test_password_and_keyboard_interactive_are_refused(ssh_fleet: Fleet) -> None:
    board = ssh_fleet.boards[0]
    options = ("-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive")
    result = run_ssh(ssh_fleet, board, "echo ok", options=options)
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr  # the only method the server offers


def test_unknown_host_key_is_refused(ssh_fleet: Fleet, tmp_path: Path) -> None:
    board = ssh_fleet.boards[0]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = subprocess.run(
        ssh_argv(board, ssh_fleet.key_path, empty, "echo ok"), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_inventory_loads_and_says_the_sensors_are_simulated(ssh_fleet: Fleet) -> None:
    text = ssh_fleet.inventory_path.read_text()
    assert "SIMULATED" in text.split("devices:")[0]
    inventory = load_inventory(ssh_fleet.inventory_path)
    assert [d.id for d in inventory.devices] == ["board-1", "board-2"]
    for device, board in zip(inventory.devices, ssh_fleet.boards, strict=True):
        assert device.transport.kind == "ssh"
        assert device.transport.port == board.port
        assert device.power.nodes == (str(board.power_node),)
        assert device.thermal.zones == (str(board.thermal_zone),)
        assert Path(device.runtime["ffmpeg"]).is_file()
    assert ssh_fleet.known_hosts_path.read_text().splitlines() == [b.known_hosts_line for b in ssh_fleet.boards]
    assert ssh_fleet.key_path.stat().st_mode & 0o777 == 0o600


def watch(boards: list[SshBoard], seconds: float) -> list[list[tuple[float, float]]]:
    """(watts, degrees C) of each board every 0.1 s for ``seconds``."""
    samples: list[list[tuple[float, float]]] = [[] for _ in boards]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i, board in enumerate(boards):
            samples[i].append((read_int(board.power_node) / 1e6, read_int(board.thermal_zone) / 1e3))
        time.sleep(0.1)
    return samples


def test_busy_loop_raises_power_and_temperature_of_that_board_only(ssh_fleet: Fleet) -> None:
    busy, idle = ssh_fleet.boards
    idle_w = LoadParams().idle_w
    before = [read_int(b.thermal_zone) / 1e3 for b in (busy, idle)]
    argv = ssh_argv(busy, ssh_fleet.key_path, ssh_fleet.known_hosts_path, BUSY.format(s=2))
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as load:
        samples = watch([busy, idle], 2.0)
        load.wait(timeout=10)
    time.sleep(0.2)
    after = [read_int(b.thermal_zone) / 1e3 for b in (busy, idle)]
    busy_w = [w for w, _ in samples[0][4:]]  # past the ssh handshake
    idle_board_w = [w for w, _ in samples[1]]
    mean_busy = sum(busy_w) / len(busy_w)
    mean_idle = sum(idle_board_w) / len(idle_board_w)
    print(
        f"\nidle {idle_w:.2f} W; busy board mean {mean_busy:.2f} W (max {max(busy_w):.2f}), "
        f"idle board mean {mean_idle:.2f} W (max {max(idle_board_w):.2f}); "
        f"busy board {before[0]:.2f} -> {after[0]:.2f} C, idle board {before[1]:.2f} -> {after[1]:.2f} C"
    )
    assert mean_busy > idle_w + 1.0  # one busy core is +2.0 W
    assert mean_idle < idle_w + 0.3
    assert after[0] > before[0] + 0.3  # about +1.1 C after 2 s at one core (tau 20 s)
    assert abs(after[1] - before[1]) < 0.2


def test_a_detached_background_job_still_counts_for_its_board(ssh_fleet: Fleet) -> None:
    board = ssh_fleet.boards[1]
    detached = f"setsid sh -c {shlex.quote(BUSY.format(s=1.5))} </dev/null >/dev/null 2>&1 &"
    result = run_ssh(ssh_fleet, board, detached)  # returns at once; the loop is orphaned to the board's loadd
    assert result.returncode == 0, result.stderr
    watts = [w for w, _ in watch([board], 1.2)[0][3:]]
    assert sum(watts) / len(watts) > LoadParams().idle_w + 1.0
    deadline = time.monotonic() + 5
    while len(board.processes()) > 2:  # leave the board idle again: only loadd and the sshd listener
        assert time.monotonic() < deadline
        time.sleep(0.05)


@contextlib.contextmanager
def client(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """An ssh client running in the background; killed (never waited on forever) if the test fails."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def ps_procs(*, args: str | None = None, mentions: str | None = None) -> list[int]:
    """Pids (zombies excluded) whose command line is exactly ``args`` or contains ``mentions``."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    found: list[int] = []
    for line in out.splitlines():
        pid, state, command = [*line.strip().split(None, 2), "", ""][:3]
        if state.startswith("Z"):
            continue
        if (args is not None and command == args) or (mentions is not None and mentions in command):
            found.append(int(pid))
    return found


def test_stop_leaves_no_process_of_the_board(ssh_board: BoardFactory) -> None:
    board = ssh_board("board-stop")
    tag = uuid.uuid4().int % 10**6
    session_sleep, detached_sleep = f"sleep 901.{tag:06d}", f"sleep 902.{tag:06d}"
    command = f"setsid {detached_sleep} </dev/null >/dev/null 2>&1 & exec {session_sleep}"
    with client(ssh_argv(board, ssh_board.client_key, board.known_hosts_path, command)) as session:
        deadline = time.monotonic() + 10
        while not (ps_procs(args=session_sleep) and ps_procs(args=detached_sleep)):
            assert time.monotonic() < deadline, "the sleeps never started on the board"
            time.sleep(0.05)
        sleeps = ps_procs(args=session_sleep) + ps_procs(args=detached_sleep)
        before = board.processes()
        assert set(sleeps) <= set(before)  # the detached one too: it was re-parented to the board's loadd
        assert ps_procs(mentions=str(board.config_path))
        board.stop()
        assert session.wait(timeout=10) == 255  # the client saw its connection go
    assert not ps_procs(mentions=str(board.config_path))
    assert not ps_procs(args=session_sleep) and not ps_procs(args=detached_sleep)
    assert not [pid for pid in before if is_alive(pid)]
    with pytest.raises(ConnectionRefusedError), socket.create_connection((board.host, board.port), timeout=2):
        pass


def test_restart_keeps_port_and_key_drop_keeps_the_listener_freeze_stops_answers(ssh_board: BoardFactory) -> None:
    board = ssh_board("board-restart")
    port, known = board.port, board.known_hosts_line
    board.stop()
    board.start()
    assert (board.port, board.known_hosts_line) == (port, known)
    with client(ssh_argv(board, ssh_board.client_key, board.known_hosts_path, "exec sleep 30")) as session:
        deadline = time.monotonic() + 10
        while not any(ps_procs(args="sleep 30") == [pid] for pid in board.session_processes()):
            assert time.monotonic() < deadline, "the session never started"
            time.sleep(0.05)
        board.drop_connections()
        assert session.wait(timeout=10) == 255
    ok = ssh_argv(board, ssh_board.client_key, board.known_hosts_path, "echo ok")
    assert subprocess.run(ok, capture_output=True, text=True, timeout=30).stdout == "ok\n"
    board.freeze()  # accepts TCP (kernel backlog) but never answers
    with pytest.raises(OSError):
        read_banner(board.host, board.port, timeout_s=0.5)
    board.thaw()
    assert read_banner(board.host, board.port, timeout_s=5).startswith("SSH-2.0-")


def test_a_taken_port_fails_with_the_sshd_log_named(ssh_board: BoardFactory) -> None:
    board = ssh_board("board-port")
    board.stop()
    with socket.socket() as squatter:
        squatter.bind((board.host, board.port))
        squatter.listen()
        with pytest.raises(SimError) as failure:
            board.start()  # a restarted board keeps its port, so it cannot move elsewhere
    assert str(board.sshd_log) in str(failure.value)
    assert "Address already in use" in str(failure.value)
    assert not board.processes()


def test_stop_fleet_from_another_process_using_state_json(tmp_path: Path) -> None:
    require_sshd()
    state_dir = tmp_path / "sim"
    fleet = start_fleet(2, state_dir, exit_with_parent=True)
    try:
        state = json.loads((state_dir / "state.json").read_text())
        assert [b["id"] for b in state["boards"]] == ["board-1", "board-2"]
        assert (state_dir / "devices.yaml").is_file()
        with pytest.raises(SimError, match="still running"):
            start_fleet(1, state_dir)
        pids = [pid for board in fleet.boards for pid in board.processes()]
        assert len(pids) >= 4  # a loadd and an sshd per board
        code = "import sys; from farm.sim.fleet import stop_fleet; print(','.join(stop_fleet(sys.argv[1])))"
        down = subprocess.run([sys.executable, "-c", code, str(state_dir)], capture_output=True, text=True, timeout=30)
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == "board-1,board-2"
        assert not [pid for pid in pids if is_alive(pid)]
        assert not ps_procs(mentions=str(state_dir))
        assert not (state_dir / "state.json").exists()
    finally:
        fleet.stop()
