"""The health poller against real devices: this machine (with sysfs-shaped files), an SSH port nobody serves,
and a TCP peer that accepts but never speaks (a hung board)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.config.inventory import Device, load_inventory
from farm.errors import InputError
from farm.metrics.poller import MAX_PERIOD_S, MIN_PERIOD_S, HealthPoller, parse_probe
from tests.conftest import wait_for, write
from tests.prom_fixtures import free_port

LOCAL = "    platform: linux\n    transport: {kind: local}\n    target: auto\n"


def battery(folder: Path, capacity: str = "73", status: str = "Discharging", kind: str = "Battery") -> Path:
    write(folder / "type", f"{kind}\n")
    write(folder / "capacity", f"{capacity}\n")
    write(folder / "status", f"{status}\n")
    return folder


def devices(tmp_path: Path, body: str) -> list[Device]:
    return list(load_inventory(write(tmp_path / "devices.yaml", "devices:\n" + body)).devices)


def ssh_device(name: str, port: int, connect_timeout_s: float) -> str:
    transport = f"{{kind: ssh, host: 127.0.0.1, port: {port}, user: u, connect_timeout_s: {connect_timeout_s}}}"
    return f"  - id: {name}\n    platform: linux\n    target: linux-aarch64\n    transport: {transport}\n"


def test_a_local_probe_reads_the_battery_and_the_hottest_readable_zone(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    battery(sysfs / "class" / "power_supply" / "hid-mouse", capacity="12").joinpath("scope").write_text("Device\n")
    supply = battery(sysfs / "class" / "power_supply" / "BAT0")
    zones = [write(tmp_path / "tz0" / "temp", "41500\n"), write(tmp_path / "tz1" / "temp", "52250\n")]
    missing = tmp_path / "tz2" / "temp"
    inv = devices(
        tmp_path,
        f"  - id: phone\n{LOCAL}    thermal: {{zones: ['{zones[0]}', '{zones[1]}', '{missing}']}}\n"
        f"    power: {{meter: none, sysfs_root: '{sysfs}'}}\n"
        f"  - id: bare\n{LOCAL}    thermal: {{zones: ['{missing}']}}\n"
        f"    power: {{meter: none, sysfs_root: '{tmp_path / 'empty'}'}}\n",
    )
    poller = HealthPoller(inv, tmp_path, period_s=5)
    before = time.time()
    poller.poll_once()
    state = poller.snapshot()
    phone, bare = state["phone"], state["bare"]
    assert phone.up and phone.temperature_c == 52.25 and phone.battery_ratio == 0.73 and phone.charging is False
    assert phone.seen_at is not None and phone.seen_at >= before
    assert bare.up and bare.temperature_c is None and bare.battery_ratio is None and bare.charging is None
    (supply / "status").write_text("Charging\n")
    (supply / "capacity").write_text("74\n")
    poller.poll_once()
    assert poller.snapshot()["phone"].charging is True and poller.snapshot()["phone"].battery_ratio == 0.74


def test_probe_output_mapping() -> None:
    assert parse_probe("capacity 100\nstatus Full\ntemp 30000\n").charging is False
    assert parse_probe("capacity 5\nstatus Not charging\n").charging is False
    reading = parse_probe("capacity -\nstatus Unknown\ntemp -\ntemp -\n")
    assert reading.battery_ratio is None and reading.charging is None and reading.temperature_c is None
    assert parse_probe("capacity 140\n").battery_ratio is None  # nonsense is missing, not clamped
    assert parse_probe("temp -5000\ntemp 20000\n").temperature_c == 20.0


def test_sysfs_root_must_be_absolute(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        devices(tmp_path, f"  - id: phone\n{LOCAL}    power: {{sysfs_root: sys}}\n")
    assert "devices.yaml:6: devices[0].power.sysfs_root: " in str(info.value) and "absolute" in str(info.value)


def test_an_unreachable_device_is_down_with_its_reason_and_keeps_last_seen(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    inv = devices(tmp_path, ssh_device("board", port, connect_timeout_s=1))
    poller = HealthPoller(inv, tmp_path, period_s=5)
    poller.poll_once()
    health = poller.snapshot()["board"]
    assert not health.up and health.seen_at is None and health.temperature_c is None
    assert health.error is not None and "cannot connect" in health.error


@pytest.fixture
def silent_peer() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP peer that accepts connections and never says a word, like a board whose sshd hung."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stopping.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1]), accepted
    stopping.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_hanging_probe_marks_the_device_down_in_time_and_is_never_stacked(
    tmp_path: Path, silent_peer: tuple[int, list[socket.socket]]
) -> None:
    port, accepted = silent_peer
    inv = devices(tmp_path, ssh_device("hung", port, connect_timeout_s=2) + f"  - id: local\n{LOCAL}")
    poller = HealthPoller(inv, tmp_path, period_s=5, timeout_s=0.3)
    started = time.monotonic()
    poller.poll_once()
    assert time.monotonic() - started < 1.5  # the round is bounded by the probe timeout, not by the hung board
    state = poller.snapshot()
    assert not state["hung"].up and "did not answer within 0.3s" in str(state["hung"].error)
    assert state["local"].up  # one hung device does not take the others down
    poller.poll_once()
    assert len(accepted) == 1  # still in flight: not probed a second time
    # once the stuck probe gives up (the SSH banner timeout), the next round probes again
    assert wait_for(lambda: (poller.poll_once(), len(accepted) == 2)[1], seconds=8)
    poller.stop()


def test_the_period_is_bounded(tmp_path: Path) -> None:
    for period in (MIN_PERIOD_S / 2, MAX_PERIOD_S * 2):
        with pytest.raises(ValueError, match="outside"):
            HealthPoller([], tmp_path, period_s=period)


def test_the_background_loop_keeps_polling_and_stops_promptly(tmp_path: Path) -> None:
    zone = write(tmp_path / "tz" / "temp", "30000\n")
    inv = devices(tmp_path, f"  - id: local\n{LOCAL}    thermal: {{zones: ['{zone}']}}\n")
    poller = HealthPoller(inv, tmp_path, period_s=1)
    poller.start()
    try:
        assert wait_for(lambda: poller.snapshot().get("local") is not None, seconds=5)
        zone.write_text("45000\n")
        assert wait_for(lambda: poller.snapshot()["local"].temperature_c == 45.0, seconds=5)
    finally:
        started = time.monotonic()
        poller.stop()
    assert time.monotonic() - started < 3
