"""The ADB device emulator (farm.sim.adbd) against two independent real clients: adb-shell and the Debian ``adb``.

Every socket operation in these tests is bounded (adb-shell timeouts, subprocess timeouts) and every test has a
pytest-timeout, so a protocol bug shows up as a failure, never a hang.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from stat import S_ISREG

import pytest
from adb_shell.adb_device import AdbDeviceTcp
from adb_shell.auth.sign_pythonrsa import PythonRSASigner
from cryptography.hazmat.primitives import serialization

from farm.sim.adbd import RESERVED_PORTS, AdbDevice
from farm.sim.adbkeys import encode_adb_public_key, load_public_key, parse_adb_public_key, same_key
from farm.sim.sshboard import free_port
from tests.conftest import require_tool, wait_for

ADB = Path("/usr/bin/adb")
MiB = 1024 * 1024


@pytest.fixture
def device(tmp_path: Path, adb_keys: dict[str, Path]) -> Iterator[AdbDevice]:
    dev = AdbDevice(tmp_path / "phone", trusted_keys=[adb_keys["trusted"].with_suffix(".pub")], serial="emu-test")
    dev.start()
    yield dev
    dev.stop()


def connect(dev: AdbDevice, key: Path | None) -> AdbDeviceTcp:
    client = AdbDeviceTcp("127.0.0.1", dev.port, default_transport_timeout_s=5)
    signers = [PythonRSASigner.FromRSAKeyPath(str(key))] if key is not None else None
    client.connect(rsa_keys=signers, auth_timeout_s=1, read_timeout_s=5)
    return client


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# ---------------------------------------------------------------------------- keys and listening


@pytest.mark.timeout(30)
def test_adb_public_key_format_round_trips(adb_keys: dict[str, Path]) -> None:
    pub_text = adb_keys["trusted"].with_suffix(".pub").read_text()
    parsed = parse_adb_public_key(pub_text)
    private = serialization.load_pem_private_key(adb_keys["trusted"].read_bytes(), password=None)
    assert same_key(parsed, private.public_key())  # type: ignore[arg-type]
    assert same_key(load_public_key(adb_keys["trusted"]), parsed)  # a PEM private key file is accepted too
    # our encoder reproduces adb's structure byte for byte (n0inv and R^2 mod n included)
    assert base64.b64decode(encode_adb_public_key(parsed).split()[0]) == base64.b64decode(pub_text.split()[0])


@pytest.mark.timeout(30)
def test_listens_outside_the_ports_the_adb_server_probes(device: AdbDevice, tmp_path: Path) -> None:
    assert device.port not in RESERVED_PORTS
    with pytest.raises(ValueError, match="5555-5585"):
        AdbDevice(tmp_path, port=5555)


# ---------------------------------------------------------------------------- adb-shell


@pytest.mark.timeout(30)
def test_adb_shell_auth_and_shell_v1(device: AdbDevice, adb_keys: dict[str, Path]) -> None:
    client = connect(device, adb_keys["trusted"])
    try:
        # shell: v1 merges stderr into stdout and carries no exit status, as real adbd does
        assert client.shell("echo hi; echo err >&2") == "hi\nerr\n"
        assert client.shell("pwd; echo $HOME").split() == [str(device.root)] * 2
        # exec: is raw too; AOSP adbd dup2s stderr onto stdout for it, and so do we
        assert client.exec_out("echo out; echo err >&2") == "out\nerr\n"
    finally:
        client.close()


@pytest.mark.timeout(30)
def test_adb_shell_push_pull_stat_list(device: AdbDevice, adb_keys: dict[str, Path], tmp_path: Path) -> None:
    payload = os.urandom(3 * MiB)
    src, back = tmp_path / "src.bin", tmp_path / "back.bin"
    src.write_bytes(payload)
    remote = device.root / "data" / "local" / "tmp" / "odd name;$(x).bin"
    client = connect(device, adb_keys["trusted"])
    try:
        client.push(str(src), str(remote), mtime=1_700_000_000)
        assert remote.read_bytes() == payload
        mode, size, mtime = client.stat(str(remote))
        assert (S_ISREG(mode), size, mtime) == (True, 3 * MiB, 1_700_000_000)
        names = {bytes(e.filename).decode() for e in client.list(str(remote.parent))}
        assert names == {".", "..", remote.name}
        client.pull(str(remote), str(back))
        assert back.read_bytes() == payload
    finally:
        client.close()


@pytest.mark.timeout(30)
def test_unknown_key_is_refused(device: AdbDevice, adb_keys: dict[str, Path]) -> None:
    client = AdbDeviceTcp("127.0.0.1", device.port, default_transport_timeout_s=5)
    signer = PythonRSASigner.FromRSAKeyPath(str(adb_keys["stranger"]))
    with pytest.raises(Exception) as info:  # adb-shell times out waiting for a CNXN that never comes
        client.connect(rsa_keys=[signer], auth_timeout_s=1, read_timeout_s=2)
    client.close()
    assert not client.available, f"connect with an untrusted key must not complete (raised {info.value!r})"
    stranger = adb_keys["stranger"].with_suffix(".pub").read_text().split()[0]
    assert [k.split()[0] for k in device.refused_keys] == [stranger]


@pytest.mark.timeout(30)
def test_no_auth_when_no_trusted_keys_are_configured(tmp_path: Path) -> None:
    with AdbDevice(tmp_path / "phone", properties={"ro.product.model": "Pixel Sim"}) as dev:
        client = connect(dev, None)
        try:
            assert client.shell("echo open") == "open\n"
            assert client.shell("getprop ro.product.model; getprop ro.serialno") == f"Pixel Sim\n{dev.serial}\n"
            assert client.shell("getprop no.such.prop fallback") == "fallback\n"
        finally:
            client.close()


@pytest.mark.timeout(30)
def test_kill_connections_then_a_new_connection_works(device: AdbDevice, adb_keys: dict[str, Path]) -> None:
    first = connect(device, adb_keys["trusted"])
    assert first.shell("echo one") == "one\n"
    device.kill_connections()
    with pytest.raises(Exception):  # noqa: B017 - adb-shell raises several types for a dead socket
        first.shell("echo dead", read_timeout_s=2)
    first.close()
    second = connect(device, adb_keys["trusted"])
    try:
        assert second.shell("echo two") == "two\n"
    finally:
        second.close()


@pytest.mark.timeout(30)
def test_stop_kills_the_commands_it_started(tmp_path: Path, adb_keys: dict[str, Path]) -> None:
    dev = AdbDevice(tmp_path / "phone", trusted_keys=[adb_keys["trusted"].with_suffix(".pub")])
    dev.start()
    client = connect(dev, adb_keys["trusted"])
    pids: list[int] = []

    def hang() -> None:
        try:
            for chunk in client.streaming_shell("sleep 30 & echo $!; wait", read_timeout_s=3):
                pids.extend(int(x) for x in chunk.split())
        except Exception:  # the connection is killed under it on purpose
            pass

    reader = threading.Thread(target=hang, daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: bool(pids)), "the hanging command never printed its child's pid"
        assert pid_alive(pids[0])
    finally:
        dev.stop()
    assert wait_for(lambda: not pid_alive(pids[0])), "stop() left the device's process running"
    client.close()
    reader.join(timeout=10)


# ---------------------------------------------------------------------------- the real Debian adb client


def require_adb() -> None:
    require_tool(ADB, "adb")


@pytest.fixture
def adb(tmp_path: Path, adb_keys: dict[str, Path]) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """Run the real ``adb`` against a private adb server (own port, own HOME, our key as a vendor key)."""
    require_adb()
    home, vendor = tmp_path / "home", tmp_path / "vendor-keys"
    home.mkdir()
    vendor.mkdir()
    # adb loads only files named *.adb_key from a directory in ADB_VENDOR_KEYS
    shutil.copy(adb_keys["trusted"], vendor / "farm.adb_key")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ADB_VENDOR_KEYS": str(vendor),
        "ADB_SERVER_SOCKET": f"tcp:localhost:{free_port(avoid=RESERVED_PORTS)}",
        "ADB_MDNS": "0",
    }

    def run(*args: str, timeout: float = 15, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ADB), *args], env=env, capture_output=True, text=True, timeout=timeout, input=stdin)

    run("start-server")
    try:
        yield run
    finally:
        run("kill-server")


@pytest.mark.timeout(60)
def test_real_adb_connect_shell_push_pull(
    device: AdbDevice, adb: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    serial = f"127.0.0.1:{device.port}"
    connected = adb("connect", serial)
    assert "connected to" in connected.stdout, connected
    assert adb("-s", serial, "wait-for-device", timeout=10).returncode == 0
    listing = adb("devices", "-l").stdout
    assert f"{serial}" in listing and "device product:farm_emu" in listing, listing

    # shell v2: exit status and separate stderr come back
    assert adb("-s", serial, "shell", "exit 3").returncode == 3
    both = adb("-s", serial, "shell", "echo out; echo err >&2")
    assert (both.returncode, both.stdout, both.stderr) == (0, "out\n", "err\n")
    piped = adb("-s", serial, "shell", "cat; echo done", stdin="piped\n")  # stdin, then close-stdin packets
    assert (piped.returncode, piped.stdout) == (0, "piped\ndone\n")
    assert adb("-s", serial, "shell", "kill -9 $$").returncode == 128 + 9
    assert adb("-s", serial, "shell", "getprop ro.build.version.sdk").stdout == "34\n"

    payload = os.urandom(3 * MiB)
    src, back = tmp_path / "src.bin", tmp_path / "back.bin"
    src.write_bytes(payload)
    remote = device.root / "data" / "local" / "tmp" / "farm" / "clip.bin"
    pushed = adb("-s", serial, "push", str(src), str(remote))
    assert pushed.returncode == 0, pushed.stdout[-300:]
    assert remote.read_bytes() == payload
    pulled = adb("-s", serial, "pull", str(remote), str(back))
    assert pulled.returncode == 0, pulled
    assert back.read_bytes() == payload
    missing = adb("-s", serial, "pull", str(device.root / "nope"), str(tmp_path / "nope"))
    assert missing.returncode != 0


@pytest.mark.timeout(60)
def test_real_adb_parallel_streams_on_one_connection(
    device: AdbDevice, adb: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """Four shells at once on one transport: per-stream ids and flow control keep their output apart."""
    serial = f"127.0.0.1:{device.port}"
    assert "connected to" in adb("connect", serial).stdout
    assert adb("-s", serial, "wait-for-device", timeout=10).returncode == 0
    results: dict[int, subprocess.CompletedProcess[str]] = {}

    def one(i: int) -> None:
        results[i] = adb("-s", serial, "shell", f"head -c {(i + 1) * MiB} /dev/zero | tr '\\0' '{i}'; exit {i}")

    workers = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    for i in range(4):
        assert results[i].returncode == i
        assert results[i].stdout == str(i) * ((i + 1) * MiB)


@pytest.mark.timeout(60)
def test_real_adb_is_refused_by_a_device_that_trusts_no_key(
    tmp_path: Path, adb: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    with AdbDevice(tmp_path / "locked", trusted_keys=[]) as dev:
        serial = f"127.0.0.1:{dev.port}"
        out = adb("connect", serial)
        assert "failed to authenticate" in out.stdout + out.stderr, out
        assert wait_for(lambda: f"{serial}\tunauthorized" in adb("devices").stdout)
        assert dev.refused_keys, "the host never offered its public key"


@pytest.mark.timeout(60)
def test_real_adb_uses_the_features_the_emulator_advertises(
    device: AdbDevice, adb: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """ls_v2 (a directory pull lists with LIS2), push_sync (an unchanged file is skipped) and
    fixed_push_symlink_timestamp (a pushed symlink keeps its own mtime), each through the official client."""
    serial = f"127.0.0.1:{device.port}"
    assert "connected to" in adb("connect", serial).stdout
    assert adb("-s", serial, "wait-for-device", timeout=10).returncode == 0
    # `adb features` lists the device's features this client knows too (adb 29 has no name for push_sync; its
    # `push --sync` works on any device with stat, tested below)
    features = adb("-s", serial, "features").stdout.split()
    assert {"ls_v2", "fixed_push_symlink_timestamp", "stat_v2", "shell_v2", "fixed_push_mkdir"} <= set(features)

    tree = device.root / "data" / "local" / "tmp" / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.bin").write_bytes(os.urandom(70_000))
    (tree / "sub" / "b.txt").write_text("b\n")
    pulled = adb("-s", serial, "pull", str(tree), str(tmp_path / "got"))
    assert pulled.returncode == 0, pulled
    assert (tmp_path / "got" / "a.bin").read_bytes() == (tree / "a.bin").read_bytes()
    assert (tmp_path / "got" / "sub" / "b.txt").read_text() == "b\n"

    src = tmp_path / "clip.bin"
    src.write_bytes(os.urandom(100_000))
    remote = tree / "clip.bin"
    first = adb("-s", serial, "push", "--sync", str(src), str(remote))
    again = adb("-s", serial, "push", "--sync", str(src), str(remote))
    assert first.returncode == 0 and again.returncode == 0, (first, again)
    assert "1 file pushed" in first.stdout and "0 files pushed" in again.stdout and "1 skipped" in again.stdout

    links = tmp_path / "links"  # a symlink inside a pushed directory travels as a link (a lone one is followed)
    links.mkdir()
    (links / "clip.bin").write_bytes(b"x")
    (links / "link").symlink_to("clip.bin")
    os.utime(links / "link", (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    pushed = adb("-s", serial, "push", str(links), str(tree / "links"))
    assert pushed.returncode == 0, pushed.stdout[-300:]
    assert os.readlink(tree / "links" / "link") == "clip.bin"
    assert os.lstat(tree / "links" / "link").st_mtime == 1_600_000_000
