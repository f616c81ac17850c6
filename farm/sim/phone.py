"""A handle on one emulated Android phone (a :mod:`farm.sim.phoned` process) for ``farm sim up --adb N``.

Layout under the phone's directory::

    root/                     the phone's sandbox '/': its sysfs (sys/...) and /data/local/tmp live here
    ready.json                {"pid", "port"} once the phone listens
    phoned.log                the daemon's log

Because the emulator runs commands on this machine, the inventory entry points the farm's Android workdir, the
ADB tmpdir, the battery's sysfs root and the thermal zone *inside* ``root``; see docs/adb-emulator.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.sim import loadd
from farm.sim.adbd import DEFAULT_PROPERTIES
from farm.sim.battery import BatteryParams, PowerSupplyTree
from farm.sim.loadmodel import LoadParams
from farm.sim.sshboard import LOCALHOST, Proc, SimError, stop_recorded
from farm.sim.sysfs import SysfsTree

ABI_ARCH = {"arm64-v8a": "arm64", "armeabi-v7a": "armv7", "x86_64": "x86_64", "x86": "x86"}
_START_TIMEOUT_S = 15.0


def emulator_target() -> str:
    """The farm target an emulated phone reports (its ABI is this machine's: commands run here)."""
    abi = DEFAULT_PROPERTIES["ro.product.cpu.abi"]
    return f"android-{ABI_ARCH.get(abi, abi)}"


@dataclass
class SimPhone:
    name: str
    base_dir: Path
    trusted_key: Path
    params: LoadParams = field(default_factory=LoadParams)
    battery: BatteryParams = field(default_factory=BatteryParams)
    period_s: float = 0.1
    exit_with_parent: bool = False
    port: int = 0
    proc: Proc | None = None
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def root(self) -> Path:
        return self.base_dir / "root"

    @property
    def workdir(self) -> Path:
        return self.root / "data" / "local" / "tmp" / "farm"

    @property
    def tmpdir(self) -> Path:
        return self.root / "data" / "local" / "tmp"

    @property
    def thermal_zone(self) -> Path:
        return SysfsTree(self.root, rails=False).temp_node

    @property
    def supply(self) -> PowerSupplyTree:
        return PowerSupplyTree(self.root)

    @property
    def log_path(self) -> Path:
        return self.base_dir / "phoned.log"

    @property
    def ready_path(self) -> Path:
        return self.base_dir / "ready.json"

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def argv(self) -> list[str]:
        b = self.battery
        argv = [
            sys.executable, "-m", "farm.sim.phoned", "--root", str(self.root), "--key", str(self.trusted_key),
            "--ready", str(self.ready_path), "--serial", self.name, "--period", repr(self.period_s),
            "--level", repr(b.level), "--current-sign", str(b.current_sign), "--current-unit", b.current_unit,
            "--voltage-unit", b.voltage_unit, *loadd.params_to_argv(self.params),
        ]  # fmt: skip
        if not b.charger:
            argv.append("--no-charger")
        if self.exit_with_parent:
            argv.append("--exit-with-parent")
        return argv

    def start(self) -> SimPhone:
        """Start the phone and wait until it listens; raises SimError with its log if it does not."""
        if self.proc is not None and self.proc.alive():
            raise SimError(f"phone {self.name} is already running (pid {self.proc.pid})")
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.ready_path.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=not self.exit_with_parent,
            )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise SimError(self._failure(f"exited with status {self._popen.returncode}"))
            try:
                ready = json.loads(self.ready_path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.02)
                continue
            if ready.get("pid") == self._popen.pid:
                self.port = int(ready["port"])
                self.proc = Proc.of(self._popen.pid)
                return self
        self.stop()
        raise SimError(self._failure(f"did not listen within {_START_TIMEOUT_S:g}s"))

    def _failure(self, what: str) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            tail = []
        return f"emulated phone {self.name} {what}" + (": " + " | ".join(tail) if tail else "")

    def stop(self) -> None:
        """Stop the phone; no process it started is left (it kills its own tree, then stragglers get SIGKILL)."""
        if self._popen is not None and self.proc is None:
            self.proc = Proc.of(self._popen.pid)
        stop_recorded(self.proc, None, popen=self._popen)
        self.proc = None
        self._popen = None

    def drop_connections(self) -> None:
        """Drop every host connection and kill its commands (a USB unplug); the phone stays up."""
        if self.proc is None or not self.proc.alive():
            raise SimError(f"phone {self.name} is not running")
        os.kill(self.proc.pid, signal.SIGUSR1)

    def running(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def processes(self) -> list[int]:
        """Pids of every process of the phone (the daemon and what it runs)."""
        if self.proc is None or not self.proc.alive():
            return []
        return sorted({self.proc.pid} | loadd.descendants(loadd.proc_table(), self.proc.pid))

    def state(self) -> dict[str, Any]:
        return {
            "id": self.name, "dir": str(self.base_dir), "port": self.port,
            "phoned": None if self.proc is None else [self.proc.pid, self.proc.starttime],
        }  # fmt: skip

    def inventory_entry(self, key: Path, *, charger_suspend: bool = True) -> dict[str, Any]:
        """This phone as a devices.yaml entry, every path absolute and inside the phone's root."""
        import imageio_ffmpeg

        power: dict[str, Any] = {"meter": "battery", "sysfs_root": str(self.root / "sys"), "simulated": True}
        if charger_suspend:
            power["charger_suspend"] = {"node": str(self.supply.suspend_node), "suspend": "1", "resume": "0"}
        return {
            "id": self.name,
            "platform": "android",
            "transport": {
                "kind": "adb", "address": self.address, "key": str(Path(key).resolve()),
                "tmpdir": str(self.tmpdir), "connect_timeout_s": 5.0,
            },
            "target": emulator_target(),
            "tags": ["sim", "adb", "android"],
            "workdir": str(self.workdir),
            "runtime": {
                "ffmpeg": str(Path(imageio_ffmpeg.get_ffmpeg_exe()).resolve()),
                "python": sys.executable,
                "onnxruntime": sys.executable,  # a python that imports onnxruntime (docs/learned-codec.md)
            },
            "power": power,
            "thermal": {"zones": [str(self.thermal_zone)], "throttle_c": self.params.throttle_c, "simulated": True},
        }  # fmt: skip


def phone_from_state(record: dict[str, Any]) -> Proc | None:
    value = record.get("phoned")
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return Proc(value[0], value[1])
    return None
