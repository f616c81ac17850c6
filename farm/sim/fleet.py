"""A fleet of virtual SSH boards and the inventory that points the farm at them (``farm sim up/down``).

Why a state directory: ``farm sim up`` returns while the boards keep running, and ``farm sim down`` runs in a
different process later, so everything needed to find and stop them is on disk::

    <state_dir>/id_ed25519(.pub)   the client key every board accepts (mode 0600)
    <state_dir>/known_hosts        every board's host key, for strict host-key checking
    <state_dir>/boards/board-N/    one board each (see farm.sim.sshboard)
    <state_dir>/adbkey(.pub)       the ADB key every emulated phone trusts (mode 0600)
    <state_dir>/phones/phone-N/    one emulated Android phone each (see farm.sim.phone)
    <state_dir>/qemu/qemu-N/       one emulated aarch64 board each (see farm.sim.qemu.board)
    <state_dir>/state.json         pids (with start times, so a recycled pid is never killed) of every device
    <state_dir>/devices.yaml       the inventory (default; ``farm sim up --out`` may put it elsewhere)

Keys and board directories are reused by the next ``up``, so host keys, workdirs and the farm's content cache on
the boards survive a restart; ports are chosen afresh.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from farm.fileio import write_atomic
from farm.sim.battery import BatteryParams
from farm.sim.loadmodel import LoadParams
from farm.sim.phone import SimPhone, phone_from_state
from farm.sim.qemu.board import QemuBoard, kill_qemu, power_off
from farm.sim.sshboard import SimError, SshBoard, generate_key, proc_from_state, stop_recorded

DEFAULT_STATE_DIR = Path(".farm/sim")
STATE_FILE = "state.json"
OTHER_GAUGE = BatteryParams(current_sign=1, current_unit="mA", voltage_unit="mV")
"""The even phones' fuel-gauge convention (the odd ones use the kernel ABI's uV/uA, negative while discharging)."""
INVENTORY_HEADER = """\
# Virtual devices started by `farm sim up` (farm.sim): SSH boards are real OpenSSH sshd on 127.0.0.1, phones
# are the farm's ADB emulator (farm.sim.adbd) on 127.0.0.1. Their POWER, BATTERY AND TEMPERATURE ARE SIMULATED
# by the load model in farm/sim/loadmodel.py (power rises with the CPU time the device's processes use;
# temperature follows power with a time constant). They are not measurements of any hardware.
# QEMU boards (tag qemu, emulated: true) are Debian arm64 under qemu-system-aarch64 (TCG): real kernel and
# userland, an EMULATED CPU (their fps is not a hardware measurement) and no power meter (power is missing);
# `local` (this host) is listed with them, so one inventory compares ISAs: --devices local,qemu-1.
# Stop them with `farm sim down`. Generated; do not edit.
"""
LOCAL_DEVICE: dict[str, Any] = {
    "id": "local",
    "platform": "linux",
    "transport": {"kind": "local"},
    "target": "auto",
    "tags": ["host"],
    "runtime": {"ffmpeg": "@imageio-ffmpeg", "python": "@python", "onnxruntime": "@python"},
    "power": {"meter": "auto"},
    "thermal": {"zones": "auto"},
}
"""This host, as in the shipped devices.yaml: a fleet with QEMU boards lists it so that one inventory runs a
cross-ISA comparison (``--devices local,qemu-1``)."""


@dataclass
class Fleet:
    """Running virtual boards plus the files that describe them."""

    state_dir: Path
    boards: list[SshBoard]
    key_path: Path
    known_hosts_path: Path
    inventory_path: Path
    phones: list[SimPhone] = field(default_factory=list)
    adb_key_path: Path | None = None
    qemu_boards: list[QemuBoard] = field(default_factory=list)

    def board(self, board_id: str) -> SshBoard:
        for board in self.boards:
            if board.name == board_id:
                return board
        raise KeyError(board_id)

    def write_inventory(self, path: Path) -> Path:
        """Write (or rewrite, e.g. after a board restarted) the devices YAML for these boards to ``path``."""
        return write_inventory(
            path, self.boards, self.key_path, self.known_hosts_path, self.phones, self.adb_key_path, self.qemu_boards
        )

    def phone(self, phone_id: str) -> SimPhone:
        for phone in self.phones:
            if phone.name == phone_id:
                return phone
        raise KeyError(phone_id)

    def write_known_hosts(self) -> Path:
        """Rewrite the shared known_hosts from the boards' current ports and keys."""
        devices: list[SshBoard | QemuBoard] = [*self.boards, *self.qemu_boards]
        write_atomic(self.known_hosts_path, "".join(b.known_hosts_line + "\n" for b in devices))
        return self.known_hosts_path

    def write_state(self) -> Path:
        state = {
            "version": 1,
            "inventory": str(self.inventory_path),
            "boards": [board.state() for board in self.boards],
            "phones": [phone.state() for phone in self.phones],
            "qemu": [board.state() for board in self.qemu_boards],
        }
        path = self.state_dir / STATE_FILE
        write_atomic(path, json.dumps(state, indent=2) + "\n")
        return path

    def stop(self) -> None:
        """Stop every board (no process of any of them is left) and forget the fleet's state."""
        errors: list[str] = []
        devices: list[SshBoard | SimPhone | QemuBoard] = [*self.boards, *self.phones, *self.qemu_boards]
        for device in devices:
            try:
                device.stop()
            except SimError as error:
                errors.append(str(error))
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        if errors:
            raise SimError("; ".join(errors))

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def write_inventory(
    path: Path, boards: Sequence[SshBoard], key: Path, known_hosts: Path,
    phones: Sequence[SimPhone] = (), adb_key: Path | None = None, qemu: Sequence[QemuBoard] = (),
) -> Path:  # fmt: skip
    """A devices YAML for ``boards`` and ``phones`` (farm inventory schema), with the SIMULATED-sensor notice on top."""
    entries = [board.inventory_entry(key, known_hosts) for board in boards]
    if phones:
        if adb_key is None:
            raise ValueError("phones need the ADB key they trust")
        entries += [phone.inventory_entry(adb_key) for phone in phones]
    if qemu:
        entries = [LOCAL_DEVICE, *entries, *(board.inventory_entry(known_hosts) for board in qemu)]
    body = yaml.safe_dump({"devices": entries}, sort_keys=False, default_flow_style=None, width=1000)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, INVENTORY_HEADER + body)
    return path


def _running(state_dir: Path) -> list[str]:
    """Ids of boards recorded in ``state_dir``'s state.json whose processes are still alive."""
    state = _read_state(state_dir)
    alive: list[str] = []
    for record in state.get("boards", []):
        procs = [proc_from_state(record.get(k)) for k in ("loadd", "sshd")]
        if any(p is not None and p.alive() for p in procs):
            alive.append(str(record.get("id")))
    for record in state.get("phones", []):
        proc = phone_from_state(record)
        if proc is not None and proc.alive():
            alive.append(str(record.get("id")))
    for record in state.get("qemu", []):
        proc = proc_from_state(record.get("qemu"))
        if proc is not None and proc.alive():
            alive.append(str(record.get("id")))
    return alive


def _read_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as error:
        raise SimError(f"{path}: not valid JSON ({error}); stop the boards by hand and delete it") from error
    if not isinstance(state, dict):
        raise SimError(f"{path}: expected a JSON object")
    return state


def _boards(
    n: int, state_dir: Path, key_path: Path, params: LoadParams, period_s: float, exit_with_parent: bool
) -> list[SshBoard]:
    """The boards of a fleet, all trusting one client key made for the fleet."""
    generate_key(key_path, "farm-sim client")
    public_key = key_path.with_name(key_path.name + ".pub").read_text()
    return [
        SshBoard(name=f"board-{i}", base_dir=state_dir / "boards" / f"board-{i}", client_public_key=public_key,
                 params=params, period_s=period_s, exit_with_parent=exit_with_parent)
        for i in range(1, n + 1)
    ]  # fmt: skip


def _phones(
    n: int, state_dir: Path, adb_key: Path, params: LoadParams, period_s: float, exit_with_parent: bool
) -> list[SimPhone]:
    """The phones of a fleet; odd and even ones use the two fuel-gauge conventions (see start_fleet)."""
    if not n:
        return []
    from farm.transports.adb import keygen

    keygen(adb_key)
    return [
        SimPhone(name=f"phone-{i}", base_dir=state_dir / "phones" / f"phone-{i}",
                 trusted_key=adb_key.with_name(adb_key.name + ".pub"), params=params,
                 battery=BatteryParams() if i % 2 else OTHER_GAUGE, period_s=period_s,
                 exit_with_parent=exit_with_parent)
        for i in range(1, n + 1)
    ]  # fmt: skip


def _qemu_boards(n: int, state_dir: Path, key_path: Path, exit_with_parent: bool) -> list[QemuBoard]:
    """The emulated aarch64 boards of a fleet; the image and the ONNX Runtime disk are built first if the cache
    lacks them (minutes)."""
    if not n:
        return []
    from farm.sim.qemu.image import ensure_image
    from farm.sim.qemu.runtime import ensure_runtime

    image = ensure_image(say=lambda line: print(line, flush=True))
    try:
        runtime = ensure_runtime(say=lambda line: print(line, flush=True))
    except SimError as error:  # e.g. offline with a cached image: boards still boot, without onnxruntime
        print(f"warning: the boards get no onnxruntime runtime: {error}", flush=True)
        runtime = None
    generate_key(key_path, "farm-sim client")
    return [
        QemuBoard(name=f"qemu-{i}", base_dir=state_dir / "qemu" / f"qemu-{i}", image=image, client_key=key_path,
                  exit_with_parent=exit_with_parent, runtime=runtime)
        for i in range(1, n + 1)
    ]  # fmt: skip


def _start_all(devices: Sequence[SshBoard | SimPhone | QemuBoard]) -> list[str]:
    """Start every device in parallel; the errors of those that failed.

    Ctrl-C (or any exception) while they start kills what was started before it propagates: QEMU boards are
    cancelled from this thread, so no booting qemu is left behind and no worker waits out its boot timeout.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, min(len(devices), 8)))
    try:
        for device in devices:
            if isinstance(device, QemuBoard):
                device.launch()  # in this thread: see QemuBoard.launch
        futures = [pool.submit(d.wait_ready if isinstance(d, QemuBoard) else d.start) for d in devices]
        errors = [str(error) for error in (f.exception() for f in futures) if error is not None]
    except BaseException:
        for device in devices:
            if isinstance(device, QemuBoard):
                device.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        for device in devices:
            if not isinstance(device, QemuBoard):
                device.stop()
        raise
    pool.shutdown(wait=True)
    return errors


def start_fleet(
    n: int,
    state_dir: Path = DEFAULT_STATE_DIR,
    *,
    phones: int = 0,
    qemu: int = 0,
    inventory: Path | None = None,
    params: LoadParams | None = None,
    period_s: float = 0.1,
    exit_with_parent: bool = False,
) -> Fleet:
    """Start ``n`` boards (``board-1`` ...), ``phones`` phones (``phone-1`` ...) and ``qemu`` emulated aarch64
    boards (``qemu-1`` ...), and write their inventory.

    Phones alternate between the two fuel-gauge conventions seen in the field, so a fleet of two exercises the
    farm's inference of both: odd phones read uV/uA with a negative current while discharging, even phones
    mV/mA with a positive one (docs/android.md).

    ``inventory`` defaults to ``state_dir/devices.yaml`` (``.farm/sim/devices.yaml`` for the default state
    directory). Refuses to start over a fleet that is still running in ``state_dir``.
    """
    if n < 0 or phones < 0 or qemu < 0 or n + phones + qemu < 1:
        raise SimError(f"a fleet needs at least one device, not {n} boards, {phones} phones and {qemu} qemu boards")
    state_dir = Path(os.path.abspath(state_dir))
    running = _running(state_dir)
    if running:
        raise SimError(f"virtual boards {', '.join(running)} are still running in {state_dir}; `farm sim down` first")
    state_dir.mkdir(parents=True, exist_ok=True)
    key_path = state_dir / "id_ed25519"
    boards = _boards(n, state_dir, key_path, params or LoadParams(), period_s, exit_with_parent) if n else []
    adb_key = state_dir / "adbkey"
    sims = _phones(phones, state_dir, adb_key, params or LoadParams(), period_s, exit_with_parent)
    fleet = Fleet(
        state_dir=state_dir,
        boards=boards,
        key_path=key_path,
        known_hosts_path=state_dir / "known_hosts",
        inventory_path=Path(os.path.abspath(inventory)) if inventory else state_dir / "devices.yaml",
        phones=sims,
        adb_key_path=adb_key if phones else None,
        qemu_boards=_qemu_boards(qemu, state_dir, key_path, exit_with_parent),
    )
    errors = _start_all([*boards, *sims, *fleet.qemu_boards])
    if errors:
        fleet.stop()
        raise SimError("\n".join(errors))
    fleet.write_state()
    fleet.write_known_hosts()
    fleet.write_inventory(fleet.inventory_path)
    return fleet


def stop_fleet(state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    """Stop every board recorded in ``state_dir/state.json`` (from any process); returns the boards' ids.

    Only processes whose pid *and* start time match the record are signalled. The state file is removed once
    nothing of the fleet is left; keys, workdirs and the inventory stay for the next ``start_fleet``.
    """
    state_dir = Path(os.path.abspath(state_dir))
    state = _read_state(state_dir)
    stopped: list[str] = []
    for record in state.get("boards", []):
        stop_recorded(proc_from_state(record.get("loadd")), proc_from_state(record.get("sshd")))
        stopped.append(str(record.get("id")))
    for record in state.get("phones", []):
        stop_recorded(phone_from_state(record), None)
        stopped.append(str(record.get("id")))
    for record in state.get("qemu", []):
        _stop_qemu_record(record, state_dir / "known_hosts")
        stopped.append(str(record.get("id")))
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def _stop_qemu_record(record: dict[str, Any], known_hosts: Path) -> None:
    """Power a recorded QEMU board off over SSH (a clean shutdown), then make sure its qemu is gone."""
    proc = proc_from_state(record.get("qemu"))
    port = record.get("port")
    if isinstance(port, int) and isinstance(record.get("key"), str):
        power_off(proc, str(record.get("host", "127.0.0.1")), port, Path(record["key"]), known_hosts)
    kill_qemu(proc)
