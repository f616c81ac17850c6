"""Fixtures for tests that need Linux boards over SSH: real OpenSSH sshd on loopback (farm.sim), never mocks.

Loaded by tests/conftest.py through ``pytest_plugins``. ``ssh_fleet`` is two boards shared by the whole session
(cheap to reuse, about 0.5 s to start); ``ssh_board`` is a factory for tests that stop, restart, freeze or
otherwise damage a board of their own. Both skip only where sshd is missing on a developer machine; under CI
(``CI`` set) a missing sshd fails loudly, because scripts/system-deps installs it there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml

from farm.sim.battery import BatteryParams
from farm.sim.fleet import Fleet, start_fleet, write_inventory
from farm.sim.loadmodel import LoadParams
from farm.sim.phone import SimPhone
from farm.sim.sshboard import SSHD, SshBoard, generate_key
from farm.transports.adb import keygen as adb_keygen
from tests.conftest import require_tool


def require_sshd() -> None:
    """Skip (developer machine) or fail (CI) when the real sshd the board tests need is missing."""
    require_tool(SSHD, "openssh-server")


def ssh_argv(board: SshBoard, key: Path, known_hosts: Path, *command: str, options: Sequence[str] = ()) -> list[str]:
    """OpenSSH client argv for ``board``: no user config, strict host-key checking, key auth, no prompts."""
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ConnectTimeout=5",
        *options,
        "-i",
        str(key),
        "-p",
        str(board.port),
        f"{board.user}@{board.host}",
        *command,
    ]


@pytest.fixture(scope="session")
def ssh_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two running boards (``board-1``, ``board-2``), their client key, known_hosts and devices.yaml."""
    require_sshd()
    fleet = start_fleet(2, tmp_path_factory.mktemp("ssh-fleet"), exit_with_parent=True)
    try:
        yield fleet
    finally:
        fleet.stop()


class BoardFactory:
    """Starts private boards for one test (``ssh_board("name")``) and stops them all afterwards."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.client_key = base / "id_ed25519"
        generate_key(self.client_key, "farm-test client")
        self.boards: list[SshBoard] = []

    def __call__(self, name: str = "board-t", *, params: LoadParams | None = None, period_s: float = 0.1) -> SshBoard:
        board = SshBoard(
            name=name,
            base_dir=self.base / name,
            client_public_key=self.client_key.with_name(self.client_key.name + ".pub").read_text(),
            params=params or LoadParams(),
            period_s=period_s,
            exit_with_parent=True,
        )
        self.boards.append(board)
        return board.start()

    def inventory(self, path: Path, boards: Sequence[SshBoard] | None = None) -> Path:
        """A devices.yaml (and a known_hosts next to it) for ``boards`` (default: every board made so far)."""
        chosen = list(self.boards if boards is None else boards)
        known_hosts = path.with_name("known_hosts")
        known_hosts.write_text("".join(b.known_hosts_line + "\n" for b in chosen))
        return write_inventory(path, chosen, self.client_key, known_hosts)

    def stop_all(self) -> None:
        for board in self.boards:
            board.stop()


@pytest.fixture
def ssh_board(tmp_path: Path) -> Iterator[BoardFactory]:
    """Factory of private boards: ``board = ssh_board("b1")``; ``ssh_board.client_key`` logs in to all of them."""
    require_sshd()
    factory = BoardFactory(tmp_path / "sim-boards")
    try:
        yield factory
    finally:
        factory.stop_all()


# ---------------------------------------------------------------------------------------------------------
# emulated Android phones (farm.sim.phoned: the farm's ADB emulator with a simulated battery)
# ---------------------------------------------------------------------------------------------------------


class PhoneFactory:
    """Starts private emulated phones for one test (``sim_phone("name")``) and stops them all afterwards."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.key = base / "adbkey"
        adb_keygen(self.key)
        self.phones: list[SimPhone] = []

    def __call__(
        self, name: str = "phone-t", *, battery: BatteryParams | None = None, params: LoadParams | None = None
    ) -> SimPhone:
        phone = SimPhone(
            name=name,
            base_dir=self.base / name,
            trusted_key=self.key.with_name(self.key.name + ".pub"),
            params=params or LoadParams(),
            battery=battery or BatteryParams(),
            exit_with_parent=True,
        )
        self.phones.append(phone)
        return phone.start()

    def inventory(self, path: Path, phones: Sequence[SimPhone] | None = None, *, charger_suspend: bool = True) -> Path:
        """A devices.yaml for ``phones`` (default: every phone made so far)."""
        entries = [p.inventory_entry(self.key, charger_suspend=charger_suspend) for p in (phones or self.phones)]
        path.write_text(yaml.safe_dump({"devices": entries}))
        return path

    def stop_all(self) -> None:
        for phone in self.phones:
            phone.stop()


@pytest.fixture(scope="session")
def phone_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two running emulated phones (``phone-1`` uV/uA negative-discharging, ``phone-2`` mV/mA positive)."""
    fleet = start_fleet(0, tmp_path_factory.mktemp("phone-fleet"), phones=2, exit_with_parent=True)
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def sim_phone(tmp_path: Path) -> Iterator[PhoneFactory]:
    """Factory of private emulated phones: ``phone = sim_phone("p1")``; ``sim_phone.key`` is trusted by all."""
    factory = PhoneFactory(tmp_path / "sim-phones")
    try:
        yield factory
    finally:
        factory.stop_all()
