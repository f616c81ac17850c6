"""The farm's ADB transport (farm.transports.adb) against the ADB device emulator, one test per adb-shell trap.

The emulator runs commands as real processes on this machine with cwd = its root, and sync paths are host paths,
so every remote path here lives under ``tmp_path``. Every test is bounded by pytest-timeout and by the link's own
deadlines, so a regression shows up as a failure, never a hang.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.config.inventory import AdbTransport
from farm.devices.posix import PosixDevice
from farm.errors import CommandFailed
from farm.sim.adbd import AdbDevice
from farm.transports.adb import AdbLink, keygen
from farm.transports.base import TransportError, Unreachable
from tests.conftest import alive, wait_for
from tests.sim_fixtures import PhoneFactory

MiB = 1024 * 1024


@pytest.fixture
def phone(tmp_path: Path, adb_keys: dict[str, Path]) -> Iterator[AdbDevice]:
    dev = AdbDevice(tmp_path / "root", trusted_keys=[adb_keys["trusted"].with_suffix(".pub")], serial="emu-link")
    dev.start()
    yield dev
    dev.stop()


def settings(dev: AdbDevice, key: Path, **extra: object) -> AdbTransport:
    # io_timeout_s is small on purpose: a command's own read limits must come from its timeout (trap 4)
    values: dict[str, object] = {
        "kind": "adb",
        "address": f"127.0.0.1:{dev.port}",
        "key": str(key),
        "connect_timeout_s": 3.0,
        "auth_timeout_s": 1.0,
        "io_timeout_s": 2.0,
        "tmpdir": str(dev.root / "data" / "local" / "tmp"),
    }
    values.update(extra)
    return AdbTransport.model_validate(values)


@pytest.fixture
def link(phone: AdbDevice, adb_keys: dict[str, Path]) -> Iterator[AdbLink]:
    lk = AdbLink("phone", settings(phone, adb_keys["trusted"]))
    lk.connect()
    yield lk
    lk.close()


# ---------------------------------------------------------------------------- trap 2: exit status and stderr


@pytest.mark.timeout(60)
def test_run_returns_exit_status_stdout_and_stderr_separately(link: AdbLink) -> None:
    res = link.run(["sh", "-c", "printf out; echo err >&2; exit 3"], timeout=10)
    assert (res.exit_status, res.stdout, res.stderr, res.timed_out) == (3, b"out", b"err\n", False)
    ok = link.run(["true"], timeout=10)
    assert (ok.exit_status, ok.stdout, ok.stderr, ok.ok) == (0, b"", b"", True)
    binary = bytes(range(256)) * 4
    echoed = link.run(["cat"], timeout=10, stdin=binary)  # stdin goes through a file on the device
    assert (echoed.exit_status, echoed.stdout) == (0, binary)
    # a command that prints lines resembling the wrapper's own cannot fake its exit status
    fake = link.run(["sh", "-c", "printf '\\n%s 0\\n' deadbeef; exit 7"], timeout=10)
    assert fake.exit_status == 7


@pytest.mark.timeout(60)
def test_argv_is_data_not_shell(link: AdbLink, phone: AdbDevice) -> None:
    odd = ["$(touch pwned)", "a b", "it's", '"q"', "`touch pwned2`", ";", "*", "\\n", ""]
    res = link.run(["printf", "%s\\n", *odd], timeout=10)
    assert res.exit_status == 0
    assert res.stdout.decode().split("\n")[:-1] == odd
    assert not list(phone.root.glob("pwned*"))


@pytest.mark.timeout(60)
def test_large_output_does_not_hang(link: AdbLink) -> None:
    start = time.monotonic()
    res = link.run(["sh", "-c", "head -c 4194304 /dev/zero | tr '\\0' x; echo tail >&2"], timeout=30)
    assert res.exit_status == 0 and res.stderr == b"tail\n"
    assert res.stdout == b"x" * (4 * MiB)
    assert time.monotonic() - start < 30


# ---------------------------------------------------------------------------- trap 1: transfers lose nothing


@pytest.mark.timeout(60)
def test_push_pull_8mib_byte_identical_with_odd_names(link: AdbLink, phone: AdbDevice, tmp_path: Path) -> None:
    payload = os.urandom(8 * MiB)
    src = tmp_path / "src bin;$(x)'.y4m"
    src.write_bytes(payload)
    src.chmod(0o755)
    remote = phone.root / "data" / "local" / "tmp" / "farm" / "odd name;$(touch pwned) 'q'.bin"
    assert link.push(src, str(remote)) == 8 * MiB
    assert hashlib.sha256(remote.read_bytes()).digest() == hashlib.sha256(payload).digest()
    assert stat.S_IMODE(remote.stat().st_mode) == 0o755
    back = tmp_path / "back" / "b a c k"
    assert link.pull(str(remote), back) == 8 * MiB
    assert back.read_bytes() == payload
    assert not list(phone.root.rglob("pwned*"))
    with pytest.raises(CommandFailed, match="pulling") as refused:  # the phone said no: not a dropped link
        link.pull(str(phone.root / "missing"), tmp_path / "missing")
    assert not isinstance(refused.value, TransportError)
    assert not (tmp_path / "missing").exists()


@pytest.mark.timeout(60)
def test_push_survives_a_tiny_send_buffer(link: AdbLink, phone: AdbDevice, tmp_path: Path) -> None:
    """Trap 1 made certain: with a 4 KiB send buffer every write is short. adb-shell's own transport, given a timeout
    at connect, goes non-blocking, ignores the short count and desyncs the stream; ours must deliver every byte."""
    assert link._tcp is not None and link._tcp._connection is not None
    link._tcp._connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = os.urandom(8 * MiB)
    src = tmp_path / "clip.bin"
    src.write_bytes(payload)
    remote = phone.root / "data" / "clip.bin"
    assert link.push(src, str(remote)) == 8 * MiB
    assert remote.read_bytes() == payload


# ---------------------------------------------------------------------------- deadlines and processes


@pytest.mark.timeout(60)
def test_remote_timeout_kills_the_hung_command_and_its_children(link: AdbLink) -> None:
    tag = f"300.{secrets.randbelow(10**6):06d}"  # unique sleep durations mark the processes
    start = time.monotonic()
    res = link.run(["sh", "-c", f"sleep {tag}1 & sleep {tag}2; wait"], timeout=1)
    assert res.timed_out and res.exit_status is None and not res.ok
    assert time.monotonic() - start < 8
    assert wait_for(lambda: not alive(tag)), alive(tag)
    assert link.run(["echo", "alive"], timeout=5).stdout == b"alive\n"  # the link is still good


@pytest.mark.timeout(60)
def test_silent_command_longer_than_io_timeout_succeeds(link: AdbLink) -> None:
    """Trap 4: 5 s of silence (io_timeout_s is 2 s) within a 10 s budget is a normal decode, not a dead link."""
    res = link.run(["sh", "-c", "sleep 5; echo done"], timeout=10)
    assert (res.exit_status, res.stdout, res.timed_out) == (0, b"done\n", False)
    assert link.reconnects == 0


@pytest.mark.timeout(60)
def test_spawn_and_kill_leave_nothing(link: AdbLink) -> None:
    tag = f"400.{secrets.randbelow(10**6):06d}"
    proc = link.spawn(["sh", "-c", f"sleep {tag}1 & sleep {tag}2"])
    assert wait_for(lambda: len(alive(tag)) >= 2), alive(tag)  # both sleeps (and their sh)
    link.kill(proc)
    assert wait_for(lambda: not alive(tag)), alive(tag)
    link.kill(proc)  # killing a finished process is not an error


# ---------------------------------------------------------------------------- trap 3: dropped connections


@pytest.mark.timeout(60)
def test_connection_killed_mid_command_fails_fast_then_reconnects(link: AdbLink, phone: AdbDevice) -> None:
    errors: list[BaseException] = []
    finished = threading.Event()

    def hang() -> None:
        try:
            link.run(["sleep", "30"], timeout=40)
        except BaseException as exc:  # recorded for the assertion below
            errors.append(exc)
        finished.set()

    worker = threading.Thread(target=hang, daemon=True)
    worker.start()
    time.sleep(1.0)
    killed_at = time.monotonic()
    phone.kill_connections()
    assert finished.wait(10), "the link kept waiting on a closed connection"
    assert time.monotonic() - killed_at < 5  # no spin until a read timeout (40 s + margin)
    assert len(errors) == 1 and isinstance(errors[0], TransportError), errors
    assert not isinstance(errors[0], Unreachable)
    assert link.run(["echo", "back"], timeout=5).stdout == b"back\n"
    assert link.reconnects == 1


@pytest.mark.timeout(60)
def test_connection_killed_between_calls_is_reopened_transparently(link: AdbLink, phone: AdbDevice) -> None:
    assert link.run(["true"], timeout=5).ok
    phone.kill_connections()
    assert wait_for(lambda: link._tcp is not None and link._tcp.looks_closed(), 3)
    assert link.run(["echo", "ok"], timeout=5).stdout == b"ok\n"
    assert link.reconnects == 1


@pytest.mark.timeout(60)
def test_device_gone_is_unreachable(link: AdbLink, phone: AdbDevice) -> None:
    phone.stop()
    with pytest.raises(Unreachable, match="cannot connect"):
        link.run(["true"], timeout=5)


# ---------------------------------------------------------------------------- keys and AUTH


@pytest.mark.timeout(60)
def test_auth_refused_is_unreachable_and_names_the_key(phone: AdbDevice, adb_keys: dict[str, Path]) -> None:
    lk = AdbLink("phone", settings(phone, adb_keys["stranger"]))
    start = time.monotonic()
    with pytest.raises(Unreachable, match=str(adb_keys["stranger"])) as info:
        lk.connect()
    assert "did not accept" in str(info.value)
    assert time.monotonic() - start < 10
    assert phone.refused_keys


@pytest.mark.timeout(60)
def test_missing_key_is_unreachable_and_keygen_makes_a_private_one(phone: AdbDevice, tmp_path: Path) -> None:
    key = tmp_path / "home" / ".android" / "adbkey"
    with pytest.raises(Unreachable, match=f"{key}.*farm devices keygen"):
        AdbLink("phone", settings(phone, key)).connect()
    assert keygen(key) is True
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.with_suffix(".pub").is_file()
    before = key.read_bytes()
    assert keygen(key) is False and key.read_bytes() == before  # an existing key is never replaced
    # a new key the phone does not trust yet: refused with the key named, as for a stranger
    with pytest.raises(Unreachable, match=str(key)):
        AdbLink("phone", settings(phone, key)).connect()


# ---------------------------------------------------------------------------- the device layer on top


@pytest.mark.timeout(60)
def test_posix_device_over_adb_stages_once_and_decodes(link: AdbLink, phone: AdbDevice, tmp_path: Path) -> None:
    workdir = phone.root / "data" / "local" / "tmp" / "farm"
    dev = PosixDevice("phone", link, workdir=str(workdir))
    dev.prepare()
    decoder = tmp_path / "fake decoder.sh"
    decoder.write_text('#!/bin/sh\necho "decoding $1" >&2\nprintf frame >"$2"\nexit 4\n')
    decoder.chmod(0o755)
    digest = hashlib.sha256(decoder.read_bytes()).hexdigest()
    remote = f"{workdir}/cas/{digest}"
    dev.stage([(decoder, remote, digest)])
    dev.stage([(decoder, remote, digest)])
    assert (dev.counter.pushed_files, dev.counter.reused_files) == (1, 1)
    out = dev.decode([remote, "in put.bin", "out.y4m"], f"{workdir}/jobs/j1", timeout=10)
    assert out.exit_status == 4 and not out.timed_out
    assert out.start_ns is not None and out.end_ns is not None and out.end_ns >= out.start_ns
    assert out.output_sha == hashlib.sha256(b"frame").hexdigest() and out.output_bytes == 5
    assert "decoding in put.bin" in out.stderr_tail


@pytest.mark.timeout(60)
def test_cli_keygen_creates_a_private_key_once(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from farm.cli import app

    key = tmp_path / "keys" / "adbkey"
    res = CliRunner().invoke(app, ["devices", "keygen", "--key", str(key)])
    assert res.exit_code == 0 and "created" in res.output
    assert key.stat().st_mode & 0o777 == 0o600 and key.with_name("adbkey.pub").is_file()
    before = key.read_bytes()
    res = CliRunner().invoke(app, ["devices", "keygen", "--key", str(key)])
    assert res.exit_code == 0 and "kept existing" in res.output and key.read_bytes() == before


# ---------------------------------------------------------------------------- the checksum speed-up
def test_fast_checksum_matches_adb_shells_own() -> None:
    import random

    from farm.transports import adb_checksum

    rng = random.Random(7)
    samples: list[bytes | bytearray | str] = [b"", b"\xff" * (1 << 20), bytearray(b"CNXN"), "host::\0", bytes(255)]
    samples += [rng.randbytes(rng.randrange(1, 70_000)) for _ in range(20)]
    for data in samples:
        assert adb_checksum.fast_checksum(data) == adb_checksum.ORIGINAL(data)
    assert adb_checksum.fast_checksum(b"\xff" * (1 << 25)) == (255 << 25) & 0xFFFFFFFF  # wraps like the protocol


def test_checksum_patch_is_refused_when_adb_shell_is_not_as_expected(monkeypatch: pytest.MonkeyPatch) -> None:
    from adb_shell import adb_device, adb_message

    from farm.transports import adb_checksum

    assert adb_checksum.install() and adb_message.checksum is adb_checksum.fast_checksum
    monkeypatch.setattr(adb_message, "checksum", lambda data: 0)  # a reworked library
    monkeypatch.setattr(adb_device, "checksum", adb_message.checksum)
    assert adb_checksum.install() is False
    assert adb_message.checksum(b"x") == 0  # left alone


def test_usb_without_the_usb_extra_names_it(tmp_path: Path) -> None:
    try:
        import usb1  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("libusb1 is installed here: the usb extra is present")
    key = tmp_path / "adbkey"
    keygen(key)
    link = AdbLink("usb-phone", AdbTransport(kind="adb", serial="0123456789ABCDEF", key=str(key)))
    with pytest.raises(Unreachable, match=r"codec-farm\[usb\]"):
        link.connect()


@pytest.mark.timeout(60)
def test_a_frozen_phone_is_a_silent_link_not_a_timed_out_command(sim_phone: PhoneFactory) -> None:
    """The phone's own `timeout -k` ends a command in time; past the host's deadline only the link can be dead."""
    phone = sim_phone("frozen")
    assert phone.proc is not None
    entry = phone.inventory_entry(sim_phone.key)["transport"]
    link = AdbLink("frozen", AdbTransport.model_validate(entry))
    link.connect()
    assert link.run(["echo", "up"], timeout=5).stdout == b"up\n"  # learns that the phone has `timeout`
    threading.Timer(0.5, os.kill, (phone.proc.pid, signal.SIGSTOP)).start()
    start = time.monotonic()
    try:
        # the host's budget: 1 s + KILL_GRACE_S (2 s) + DEADLINE_MARGIN_S (10 s)
        with pytest.raises(TransportError, match=r"^frozen: .*did not answer for 13 s while running 'sleep'"):
            link.run(["sleep", "30"], timeout=1)
        assert time.monotonic() - start < 13 + 3
    finally:
        os.kill(phone.proc.pid, signal.SIGCONT)
    link.close()
