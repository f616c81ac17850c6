"""A fake device for session unit tests: it keeps files in memory and "decodes" by handing back a real Y4M.

Only the session's own logic is under test with it (retries, stop, cleanup, events); every real device kind is
tested against a real peer elsewhere (sshd boards, the ADB emulator, this machine).
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.devices.base import (
    AppRef,
    DecodeOutcome,
    DecodeRequest,
    MeasuredDecode,
    PowerProbe,
    TransferCounter,
    measure_around,
)
from farm.errors import CommandFailed
from farm.power.instrument import Window
from farm.transports.base import TransportError


def write_y4m(path: Path, frames: int = 3, width: int = 16, height: int = 8) -> Path:
    frame = b"FRAME\n" + bytes(width * height * 3 // 2)
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode() + frame * frames)
    return path


@dataclass
class FakeTether:
    device: FakeDevice
    closed: bool = False

    def alive(self) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True
        self.device.killed.set()  # what the device's watchdog does: kill the decoder
        self.device.calls.append("untether")

    def settle(self, timeout_s: float) -> None:
        self.device.killed.clear()  # the watchdog has finished: a new decode is not killed


@dataclass
class FakeDevice:
    output: Path  # the Y4M every decode "writes"
    device_id: str = "fake"
    workdir: str = "/fake"
    free: int | None = 10**12
    decode_s: float = 0.0
    failures: dict[int, BaseException] = field(default_factory=dict)  # decode call number -> what it raises
    runtime: dict[str, str] = field(default_factory=dict)
    counter: TransferCounter = field(default_factory=TransferCounter)
    charging_advice: str = "unplug it"
    power_sampled_on: str = "on device"
    calls: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    decodes: int = 0
    killed: threading.Event = field(default_factory=threading.Event)
    tethers: list[FakeTether] = field(default_factory=list)
    on_decode: Callable[[int], None] = lambda _: None

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.output.read_bytes()).hexdigest()

    def prepare(self, *subdirs: str) -> None:
        self.calls.append("prepare")

    def info(self) -> dict[str, str]:
        return {"machine": "x86_64"}

    def check_target(self, target: str, props: dict[str, str]) -> None: ...

    def temperatures(self, zones: Sequence[str]) -> list[float | None]:
        return []

    def install_app(self, app: AppRef) -> None: ...

    def stage(self, files: Sequence[tuple[Path, str, str]]) -> None:
        for local, remote, digest in files:
            if hashlib.sha256(local.read_bytes()).hexdigest() != digest:
                raise CommandFailed(self.device_id, f"commit {remote}", 1, "sha256 mismatch after push")
            self.files[remote] = digest
            self.counter.pushed_files += 1

    def decode(
        self, argv: Sequence[str], job_dir: str, timeout: float, zones: Sequence[str] = (), app: AppRef | None = None
    ) -> DecodeOutcome:
        self.decodes += 1
        self.calls.append(f"decode {job_dir}")
        self.on_decode(self.decodes)
        if self.decodes in self.failures:
            raise self.failures[self.decodes]
        if self.killed.wait(self.decode_s):
            return DecodeOutcome(137, False, 1, 2, None, None, (), "Killed")
        times = (1_000_000,) * 3
        return DecodeOutcome(0, False, 10**9, 2 * 10**9, self.digest, self.output.stat().st_size, times, "")

    def measured_decode(self, request: DecodeRequest, meter: Any, window: Window) -> MeasuredDecode:
        return measure_around(self, request, meter, window)

    def kill_job(self, job_dir: str) -> None:
        self.calls.append(f"kill {job_dir}")

    def pull(self, remote: str, local: Path) -> int:
        self.calls.append(f"pull {remote}")
        shutil.copyfile(self.output, local)
        return self.output.stat().st_size

    def remove(self, path: str) -> None:
        self.calls.append(f"remove {path}")

    def close(self) -> None:
        self.calls.append("close")

    def set_charging(self, control: Any, enabled: bool) -> bool:
        return False

    def probe_power(self, settings: Any, platform: str, charger_suspended: bool) -> PowerProbe:
        return PowerProbe(None, "fake devices have no meter")

    def battery(self) -> None:
        return None

    def power_window(
        self, meter: Any, zones: Sequence[str], folder: str, name: str, hz: float, lifetime_s: float,
        during: Callable[[], Any],
    ) -> tuple[list[Any], list[float]]:  # fmt: skip
        during()
        return [], []

    def tether(self, run_dir: str) -> FakeTether:
        t = FakeTether(self)
        self.tethers.append(t)
        self.calls.append("tether")
        return t

    def free_bytes(self, path: str) -> int | None:
        return self.free


def link_drop() -> TransportError:
    return TransportError("fake: link dropped")
