"""A fleet of virtual SSH boards and the inventory that points the farm at them (``farm sim up/down``).

Why a state directory: ``farm sim up`` returns while the boards keep running, and ``farm sim down`` runs in a
different process later, so everything needed to find and stop them is on disk::

    <state_dir>/id_ed25519(.pub)   the client key every board accepts (mode 0600)
    <state_dir>/known_hosts        every board's host key, for strict host-key checking
    <state_dir>/boards/board-N/    one board each (see farm.sim.sshboard)
    <state_dir>/state.json         pids (with start times, so a recycled pid is never killed) of every board
    <state_dir>/devices.yaml       the inventory (default; ``farm sim up --out`` may put it elsewhere)

Keys and board directories are reused by the next ``up``, so host keys, workdirs and the farm's content cache on
the boards survive a restart; ports are chosen afresh.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from farm.fileio import write_atomic
from farm.sim.loadmodel import LoadParams
from farm.sim.sshboard import SimError, SshBoard, generate_key, proc_from_state, stop_recorded

DEFAULT_STATE_DIR = Path(".farm/sim")
STATE_FILE = "state.json"
INVENTORY_HEADER = """\
# Virtual SSH boards started by `farm sim up` (farm.sim): real OpenSSH sshd on 127.0.0.1, one per board.
# Their POWER AND TEMPERATURE ARE SIMULATED by the load model in farm/sim/loadmodel.py (power rises with the
# CPU time the board's processes use; temperature follows power with a time constant). They are not
# measurements of any hardware. Stop the boards with `farm sim down`. Generated; do not edit.
"""


@dataclass
class Fleet:
    """Running virtual boards plus the files that describe them."""

    state_dir: Path
    boards: list[SshBoard]
    key_path: Path
    known_hosts_path: Path
    inventory_path: Path

    def board(self, board_id: str) -> SshBoard:
        for board in self.boards:
            if board.name == board_id:
                return board
        raise KeyError(board_id)

    def write_inventory(self, path: Path) -> Path:
        """Write (or rewrite, e.g. after a board restarted) the devices YAML for these boards to ``path``."""
        return write_inventory(path, self.boards, self.key_path, self.known_hosts_path)

    def write_known_hosts(self) -> Path:
        """Rewrite the shared known_hosts from the boards' current ports and keys."""
        write_atomic(self.known_hosts_path, "".join(b.known_hosts_line + "\n" for b in self.boards))
        return self.known_hosts_path

    def write_state(self) -> Path:
        state = {
            "version": 1,
            "inventory": str(self.inventory_path),
            "boards": [board.state() for board in self.boards],
        }
        path = self.state_dir / STATE_FILE
        write_atomic(path, json.dumps(state, indent=2) + "\n")
        return path

    def stop(self) -> None:
        """Stop every board (no process of any of them is left) and forget the fleet's state."""
        errors: list[str] = []
        for board in self.boards:
            try:
                board.stop()
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


def write_inventory(path: Path, boards: Sequence[SshBoard], key: Path, known_hosts: Path) -> Path:
    """A devices YAML for ``boards`` (farm inventory schema), with the SIMULATED-sensor notice on top."""
    entries = [board.inventory_entry(key, known_hosts) for board in boards]
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


def start_fleet(
    n: int,
    state_dir: Path = DEFAULT_STATE_DIR,
    *,
    inventory: Path | None = None,
    params: LoadParams | None = None,
    period_s: float = 0.1,
    exit_with_parent: bool = False,
) -> Fleet:
    """Start ``n`` boards (``board-1`` ... ``board-N``) under ``state_dir`` and write their inventory.

    ``inventory`` defaults to ``state_dir/devices.yaml`` (``.farm/sim/devices.yaml`` for the default state
    directory). Refuses to start over a fleet that is still running in ``state_dir``.
    """
    if n < 1:
        raise SimError(f"a fleet needs at least one board, not {n}")
    state_dir = Path(os.path.abspath(state_dir))
    running = _running(state_dir)
    if running:
        raise SimError(f"virtual boards {', '.join(running)} are still running in {state_dir}; `farm sim down` first")
    state_dir.mkdir(parents=True, exist_ok=True)
    key_path = state_dir / "id_ed25519"
    generate_key(key_path, "farm-sim client")
    public_key = key_path.with_name(key_path.name + ".pub").read_text()
    boards = [
        SshBoard(
            name=f"board-{i}",
            base_dir=state_dir / "boards" / f"board-{i}",
            client_public_key=public_key,
            params=params or LoadParams(),
            period_s=period_s,
            exit_with_parent=exit_with_parent,
        )
        for i in range(1, n + 1)
    ]
    fleet = Fleet(
        state_dir=state_dir,
        boards=boards,
        key_path=key_path,
        known_hosts_path=state_dir / "known_hosts",
        inventory_path=Path(os.path.abspath(inventory)) if inventory else state_dir / "devices.yaml",
    )
    with ThreadPoolExecutor(max_workers=min(n, 8)) as pool:
        futures = [pool.submit(board.start) for board in boards]
        errors = [str(error) for error in (f.exception() for f in futures) if error is not None]
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
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped
