"""Tethers: a run's processes on a device end soon after the controller does, even after a SIGKILL.

Real peers only: the local device, a real sshd board and the farm's ADB emulator. The "controller" is a child
Python process that connects, tethers a run folder, spawns a sampler-like process and starts a long decode;
the test SIGKILLs it mid-decode and watches this machine's /proc (every device here runs on this machine).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from farm.config.inventory import Device, load_inventory
from farm.devices import ios
from farm.devices.base import FarmDevice, NullTether
from farm.devices.connect import connect
from farm.devices.posix import PosixDevice
from farm.transports.local import LocalTransport
from tests.conftest import ROOT, alive, wait_for
from tests.ios_fakes import FakePhone, FakeServices, ios_entry
from tests.sim_fixtures import BoardFactory, PhoneFactory

BOUND_S = 5.0
"""What a test allows from the controller's SIGKILL to a clean device: link end + 1 s of polling + kills."""

# argv: inventory, device id, state dir, marker. Prints the run folder once everything is started.
_CONTROLLER = r"""
import sys, threading, time
from pathlib import Path
from farm.config.inventory import load_inventory
from farm.devices.connect import connect
inventory, device_id, state, marker = sys.argv[1:5]
dev = connect(load_inventory(Path(inventory)).get(device_id), Path(state))
run = f"{dev.workdir}/jobs/tether-{marker}"
tether = dev.tether(run)
dev.spawn(["sleep", marker + "1"])
threading.Thread(target=dev.decode, args=(["sleep", marker + "2"], f"{run}/0", 600), daemon=True).start()
print(run, flush=True)
time.sleep(600)
"""


def _kill_controller_mid_decode(inventory: Path, device_id: str, state: Path, marker: str) -> tuple[float, str]:
    """Start the controller, SIGKILL it once its sampler and decoder run; seconds until the device is clean."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", _CONTROLLER, str(inventory), device_id, str(state), marker]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert child.stdout is not None
        run = child.stdout.readline().strip()
        assert run, child.stderr.read() if child.stderr else ""

        def started() -> bool:  # the decode script's argv holds the marker before its decoder runs: see the pids
            pids = Path(run, "0", "decoder.pid").is_file() and bool(list(Path(run, "pids").glob("*.pid")))
            return pids and bool(alive(marker + "1")) and bool(alive(marker + "2"))

        assert wait_for(started, 20), alive(marker)
        child.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        child.wait(10)
        clean = wait_for(lambda: not alive(marker) and not Path(run).exists(), 30)
        took = time.monotonic() - killed
        assert clean, (alive(marker), Path(run).exists())
        print(f"{device_id}: clean {took:.2f} s after the controller's SIGKILL")  # the bound, for the record
        return took, run
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_local_device_is_clean_soon_after_the_controller_is_sigkilled(tmp_path: Path) -> None:
    inventory = tmp_path / "devices.yaml"
    entry = {"id": "here", "platform": "linux", "transport": {"kind": "local"}, "target": "auto",
             "workdir": str(tmp_path / "work")}  # fmt: skip
    inventory.write_text(yaml.safe_dump({"devices": [entry]}))
    took, _ = _kill_controller_mid_decode(inventory, "here", tmp_path / "state", "71.1234")
    assert took < BOUND_S, took


def test_closing_the_tether_from_another_thread_stops_a_running_decode(tmp_path: Path) -> None:
    dev = PosixDevice("t", LocalTransport(), str(tmp_path / "work"), command_timeout=20)
    run = f"{dev.workdir}/jobs/r1"
    tether = dev.tether(run)
    assert tether.alive() and Path(run).is_dir() and alive(str(tether.watchdog_pid)) == []  # pid is not argv
    sampler = dev.spawn(["sleep", "72.11"])
    outcomes = []
    decoding = threading.Thread(target=lambda: outcomes.append(dev.decode(["sleep", "72.22"], f"{run}/0", 600)))
    decoding.start()
    assert wait_for(lambda: bool(alive("72.11")) and bool(alive("72.22")), 10)
    closed = time.monotonic()
    tether.close()
    assert wait_for(lambda: not alive("72.") and not Path(run).exists(), 10), alive("72.")
    assert time.monotonic() - closed < 3
    decoding.join(10)
    assert outcomes and outcomes[0].exit_status != 0 and not tether.alive()
    assert dev.tethered_run is None
    dev.kill(sampler)  # already gone: harmless
    dev.spawn(["true"])  # untethered again: no pid file, no run folder recreated
    assert not Path(run).exists()


@pytest.mark.timeout(120)
def test_ssh_board_is_clean_soon_after_the_controller_is_sigkilled(ssh_board: BoardFactory, tmp_path: Path) -> None:
    board = ssh_board("tethered")
    inventory = ssh_board.inventory(tmp_path / "devices.yaml")
    took, _ = _kill_controller_mid_decode(inventory, "tethered", tmp_path / "state", "73.1234")
    assert took < BOUND_S, took
    assert board.running()  # the board's own sshd is untouched


@pytest.mark.timeout(120)
def test_emulated_phone_is_clean_soon_after_the_controller_is_sigkilled(
    sim_phone: PhoneFactory, tmp_path: Path
) -> None:
    sim_phone("tethered")
    inventory = sim_phone.inventory(tmp_path / "devices.yaml")
    took, _ = _kill_controller_mid_decode(inventory, "tethered", tmp_path / "state", "74.1234")
    assert took < BOUND_S, took


def test_ios_tether_is_a_no_op_that_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakePhone(tmp_path / "iphone")
    monkeypatch.setattr(ios, "SERVICES", lambda: FakeServices(fake))
    dev = ios.connect_ios(Device.model_validate(ios_entry()), tmp_path)
    try:
        tether = dev.tether(f"{dev.workdir}/jobs/r1")
        assert isinstance(tether, NullTether) and "DVT" in tether.why and tether.alive()
        tether.close()
        assert dev.free_bytes(dev.workdir) is None
    finally:
        dev.close()
        fake.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["local", "ssh", "phone"])
def test_every_shell_device_tethers_and_tells_its_free_space(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The same two calls on every shell device kind: a tether made and closed, and df read on the device."""
    if kind == "local":
        dev: FarmDevice = PosixDevice("here", LocalTransport(), str(tmp_path / "work"), command_timeout=20)
    else:
        fleet = request.getfixturevalue("ssh_fleet" if kind == "ssh" else "phone_fleet")
        device_id = "board-1" if kind == "ssh" else "phone-1"
        dev = connect(load_inventory(fleet.inventory_path).get(device_id), tmp_path / "state")
    try:
        free = dev.free_bytes(dev.workdir)
        assert free is not None and free > 0
        run = f"{dev.workdir}/jobs/contract-{kind}"
        tether = dev.tether(run)
        assert tether.alive() and Path(run).is_dir()
        tether.close()
        assert wait_for(lambda: not Path(run).exists(), 5) and not tether.alive()
    finally:
        dev.close()
