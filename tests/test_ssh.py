"""Linux boards over SSH, against real OpenSSH sshd boards on loopback (farm.sim), never mocks."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import paramiko
import pytest

from farm.config.inventory import SshTransport as SshSettings
from farm.config.inventory import load_inventory
from farm.devices.connect import connect
from farm.devices.posix import PosixDevice
from farm.errors import CommandFailed
from farm.sim.fleet import Fleet
from farm.sim.sshboard import SshBoard
from farm.transports.base import TransportError, Unreachable
from farm.transports.ssh import SshLink, fingerprint, scan_host_key
from tests.conftest import alive, check_spawn_and_kill
from tests.sim_fixtures import BoardFactory


def settings(fleet: Fleet, name: str = "board-1", **over: object) -> SshSettings:
    device = load_inventory(fleet.inventory_path).get(name)
    assert isinstance(device.transport, SshSettings)
    return device.transport.model_copy(update=over)


@pytest.fixture
def link(ssh_fleet: Fleet) -> SshLink:
    link = SshLink("board-1", settings(ssh_fleet))
    link.connect()
    yield link
    link.close()


def test_run_keeps_status_and_streams_and_survives_big_output(link: SshLink) -> None:
    res = link.run(["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=20)
    assert (res.exit_status, res.stdout, res.stderr, res.timed_out) == (7, b"out\n", b"err\n", False)
    # 8 MiB on each stream: a client that waits for the exit status before draining would deadlock here
    big = link.run(["sh", "-c", "head -c 8388608 /dev/zero; head -c 8388608 /dev/zero >&2"], timeout=60)
    assert big.ok and len(big.stdout) == len(big.stderr) == 8 << 20


def test_arguments_are_never_shell(link: SshLink, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    res = link.run(["echo", f"$(touch {canary})", "`id`", "a;b", "'q'"], timeout=20)
    assert res.stdout == f"$(touch {canary}) `id` a;b 'q'\n".encode() and not canary.exists()


def test_push_and_pull_are_byte_identical_with_odd_names(link: SshLink, ssh_fleet: Fleet, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(5 << 20))
    remote = f"{ssh_fleet.board('board-1').workdir}/odd name; $(x) 'q'.bin"
    assert link.push(src, remote) == 5 << 20
    back = tmp_path / "back.bin"
    assert link.pull(remote, back) == 5 << 20
    assert back.read_bytes() == src.read_bytes()
    with pytest.raises(CommandFailed, match="pull of") as failed:  # the command failed, the link is fine
        link.pull("/nonexistent/file", tmp_path / "x")
    assert failed.value.exit_status == 1 and "No such file" in failed.value.stderr_tail
    assert not isinstance(failed.value, TransportError) and not (tmp_path / "x").exists()
    assert link.reconnects == 0


def test_remote_timeout_kills_the_whole_tree(link: SshLink) -> None:
    marker = "53.1415"
    start = time.monotonic()
    res = link.run(["sh", "-c", f"sleep {marker} & sleep {marker}"], timeout=1)
    assert res.timed_out and time.monotonic() - start < 15
    time.sleep(0.5)
    assert alive(marker) == []


def test_spawn_and_kill_take_the_process_group(link: SshLink) -> None:
    check_spawn_and_kill(link, "57.2957")


def test_unknown_host_key_is_refused_and_nothing_runs(ssh_fleet: Fleet, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    link = SshLink("board-1", settings(ssh_fleet, known_hosts=str(empty)))
    with pytest.raises(Unreachable, match=r"unknown host key.*farm devices trust board-1"):
        link.connect()


def test_changed_host_key_is_refused_loudly(ssh_fleet: Fleet, tmp_path: Path) -> None:
    board = ssh_fleet.board("board-1")
    impostor = paramiko.Ed25519Key.from_private_key_file(str(ssh_fleet.board("board-2").host_key_path))
    known = tmp_path / "known_hosts"
    known.write_text(f"[{board.host}]:{board.port} ssh-ed25519 {impostor.get_base64()}\n")
    link = SshLink("board-1", settings(ssh_fleet, known_hosts=str(known)))
    with pytest.raises(Unreachable, match="HOST KEY CHANGED"):
        link.connect()


def test_trust_records_the_key_only_when_confirmed(ssh_fleet: Fleet, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from farm.cli import app

    inventory = tmp_path / "devices.yaml"
    known = tmp_path / "known_hosts"
    inventory.write_text(ssh_fleet.inventory_path.read_text().replace(str(ssh_fleet.known_hosts_path), str(known)))
    board = ssh_fleet.board("board-2")
    expected = fingerprint(scan_host_key(board.host, board.port))
    res = CliRunner().invoke(app, ["devices", "trust", "board-2", "--inventory", str(inventory)], input="n\n")
    assert res.exit_code == 1 and expected in res.output and not known.exists()
    res = CliRunner().invoke(app, ["devices", "trust", "board-2", "--inventory", str(inventory), "--yes"])
    assert res.exit_code == 0, res.output
    device = load_inventory(inventory).get("board-2")
    dev = connect(device, tmp_path)
    assert dev.sh("echo ok").strip() == "ok"
    dev.transport.close()


def test_refused_connection_is_unreachable_fast(ssh_fleet: Fleet) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        link = SshLink("gone", settings(ssh_fleet, port=port))
        start = time.monotonic()
        with pytest.raises(Unreachable, match="cannot connect"):
            link.connect()
    assert time.monotonic() - start < 5


def private_link(factory: BoardFactory, name: str) -> tuple[SshBoard, SshLink]:
    """A board of the test's own (to damage) and a connected link to it."""
    board = factory(name)
    device = load_inventory(factory.inventory(board.base_dir.parent / "devices.yaml")).get(name)
    assert isinstance(device.transport, SshSettings)
    link = SshLink(name, device.transport)
    link.connect()
    return board, link


def test_dropped_connection_mid_command_then_reconnects(ssh_board: BoardFactory) -> None:
    board, link = private_link(ssh_board, "drop")
    threading.Timer(0.5, board.drop_connections).start()
    with pytest.raises(TransportError, match="connection dropped"):
        link.run(["sleep", "5"], timeout=20)
    assert link.run(["echo", "back"], timeout=20).stdout == b"back\n"
    assert link.reconnects == 1
    link.close()


def test_dropped_connection_mid_push_fails_cleanly(ssh_board: BoardFactory, tmp_path: Path) -> None:
    board, link = private_link(ssh_board, "droppush")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(64 << 20))
    threading.Timer(0.05, board.drop_connections).start()
    with pytest.raises(TransportError, match="connection dropped"):
        for _ in range(20):  # keep pushing until the drop lands mid-transfer
            link.push(src, f"{board.workdir}/big.bin")
    assert link.push(src, f"{board.workdir}/again.bin") == 64 << 20
    link.close()


def test_a_frozen_board_is_dropped_not_waited_for(ssh_board: BoardFactory, tmp_path: Path) -> None:
    """A stopped sshd keeps TCP alive (the kernel still ACKs): only our own I/O deadlines can notice."""
    board = ssh_board("frozen")
    device = load_inventory(ssh_board.inventory(tmp_path / "devices.yaml")).get("frozen")
    assert isinstance(device.transport, SshSettings)
    link = SshLink("frozen", device.transport.model_copy(update={"io_timeout_s": 2.0}))
    link.connect()
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(32 << 20))
    board.freeze()
    try:
        start = time.monotonic()
        with pytest.raises(TransportError):
            link.push(src, f"{board.workdir}/big.bin")
        with pytest.raises(TransportError):
            link.run(["echo", "hi"], timeout=30)
        assert time.monotonic() - start < 20
    finally:
        board.thaw()
    assert link.run(["echo", "back"], timeout=20).stdout == b"back\n"
    link.close()


def test_known_hosts_with_markers_and_comments_survive_trust(ssh_fleet: Fleet, tmp_path: Path) -> None:
    """paramiko cannot parse @cert-authority or security-key lines; they must neither break us nor be lost."""
    from typer.testing import CliRunner

    from farm.cli import app

    known = tmp_path / "known_hosts"
    foreign = (
        "# lab CA\n"
        "@cert-authority *.lab ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0oZZkyI0lfJhP6fQmPZtJ2uJfO6vF2oj4+s8o7a0yV\n"
        "gitlab.lab sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t\n"
    )
    known.write_text(foreign)
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(ssh_fleet.inventory_path.read_text().replace(str(ssh_fleet.known_hosts_path), str(known)))
    res = CliRunner().invoke(app, ["devices", "trust", "board-1", "--inventory", str(inventory), "--yes"])
    assert res.exit_code == 0, res.output
    text = known.read_text()
    assert text.startswith(foreign) and text.count("\n") == 4
    dev = connect(load_inventory(inventory).get("board-1"), tmp_path)
    assert dev.sh("echo ok").strip() == "ok"
    dev.transport.close()


def test_a_refused_push_and_a_checksum_mismatch_are_command_failures_not_dropped_links(
    ssh_fleet: Fleet, tmp_path: Path
) -> None:
    """A retry cannot fix either: they must not look like a dropped link (which the session retries once)."""
    link = SshLink("board-1", settings(ssh_fleet))
    dev = PosixDevice("board-1", link, str(ssh_fleet.board("board-1").workdir), command_timeout=20)
    src = tmp_path / "bits.bin"
    src.write_bytes(b"abc")
    try:
        with pytest.raises(CommandFailed, match="push to") as refused:
            link.push(src, "/proc/version")  # the board takes the bytes over the link, then cannot write them
        assert refused.value.exit_status == 1 and "error" in refused.value.stderr_tail.lower()
        with pytest.raises(CommandFailed, match="sha256 mismatch") as mismatch:
            dev.stage([(src, f"{dev.workdir}/cas/mismatch", "0" * 64)])
        assert mismatch.value.device_id == "board-1" and mismatch.value.exit_status == 1
        assert not isinstance(mismatch.value, TransportError) and link.reconnects == 0
        with pytest.raises(CommandFailed, match=r"exit 3\): nope"):
            dev.sh("echo nope >&2; exit 3")
        assert dev.sh("echo still fine").strip() == "still fine"
    finally:
        link.close()


@pytest.mark.timeout(90)
def test_a_board_frozen_mid_command_is_reported_as_silent_within_the_bound(ssh_board: BoardFactory) -> None:
    """A SIGSTOPped sshd keeps TCP up (its kernel ACKs); the heartbeat notices within answer_timeout_s + 2 s."""
    board, link = private_link(ssh_board, "silent")
    assert link.answer_timeout_s == 10.0  # the bound with the default io_timeout_s (60 s)
    threading.Timer(1.0, board.freeze).start()
    start = time.monotonic()
    try:
        with pytest.raises(TransportError, match=r"^silent: did not answer for 10 s") as silent:
            link.run(["sleep", "60"], timeout=120)
        took = time.monotonic() - start - 1.0
        assert not isinstance(silent.value, Unreachable)
        assert 9.5 < took < 10 + 2 + 2, took  # bound + one heartbeat period + scheduling slack
        reconnect = time.monotonic()
        with pytest.raises(Unreachable, match=r"^silent: did not answer for 5 s"):  # the connect timeout
            link.run(["echo", "hi"], timeout=20)
        assert time.monotonic() - reconnect < 5 + 3
    finally:
        board.thaw()
    assert link.run(["echo", "back"], timeout=20).stdout == b"back\n"
    link.close()
