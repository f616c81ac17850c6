"""What the runner may ask of any device, whatever reaches it (a shell over SSH/ADB, or usbmux to an iPhone).

The runner is written against :class:`FarmDevice` only, so a POSIX board, an Android phone and an iOS device run
the same session code: connect, info, check the target, stage, measure, decode, pull, clean up. The small types
every device shares (a decode's outcome, the transfer counter, an app to launch) live here too, so a device
module never has to import another device module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from farm.config.inventory import ChargerSuspend, PowerSettings
from farm.power.battery import BatteryState
from farm.power.instrument import Window
from farm.power.sampler import PowerSample


@dataclass(frozen=True)
class DecodeOutcome:
    """What one decode on the device produced. Times are nanoseconds on the clock the power samples use.

    ``failure`` is set when the device itself knows why the decode failed in a way no exit status says (an iOS
    app that vanished without writing its result file); the runner then reports it as the job's error.
    """

    exit_status: int | None
    timed_out: bool
    start_ns: int | None
    end_ns: int | None
    output_sha: str | None
    output_bytes: int | None
    frame_times_ns: tuple[int, ...]
    stderr_tail: str
    stats_error: str | None = None
    temp_start_c: float | None = None  # hottest zone right before the decoder
    temp_end_c: float | None = None  # and right after it
    failure: str | None = None
    free_bytes: int | None = None  # free space in the job folder right after a failed decode (None: unknown)
    runtime: tuple[tuple[str, str], ...] = ()  # the decoder's runtime report (farm.provenance), key-sorted


class Tether(Protocol):
    """Ties the device-side processes of a run to the controller (see ``FarmDevice.tether``)."""

    def alive(self) -> bool:
        """False once the tether broke (its link dropped) or was closed: the run folder is then being removed."""
        ...

    def close(self) -> None:
        """Stop everything the run started on the device and remove its folder (within about a second)."""
        ...

    def settle(self, timeout_s: float) -> None:
        """After ``close`` (or a dropped link): wait, bounded, until that clean-up has finished on the device.

        A new tether of the same run must not have its folder removed under it by the old watchdog.
        """
        ...


@dataclass(frozen=True)
class NullTether:
    """The tether of a device with no shell to hold (iOS): ``why`` says who stops its processes instead."""

    why: str

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        return None

    def settle(self, timeout_s: float) -> None:
        return None


@dataclass(frozen=True)
class DecodeRequest:
    """One decode as the session asks for it; ``discard`` are earlier jobs' folders to remove first.

    Why ``discard``: a job's folder holds its output until the host has pulled it, and removing it right after
    cost a round trip per job; a device that measures in one round trip removes them in the next decode's.
    """

    argv: tuple[str, ...]
    job_dir: str
    timeout_s: float
    zones: tuple[str, ...] = ()
    app: AppRef | None = None
    discard: tuple[str, ...] = ()


@dataclass(frozen=True)
class MeasuredDecode:
    """A decode with what was measured around it: power samples, hottest temperature per thermal sample, and
    the battery's state right before and after (None: no battery, or a device that does not report it)."""

    outcome: DecodeOutcome
    power: tuple[PowerSample, ...]
    temps: tuple[float, ...]
    battery_before: BatteryState | None
    battery_after: BatteryState | None
    temp_trace: tuple[tuple[float, float], ...] = ()
    """(device-clock s, hottest zone's degrees C) of each thermal sample, where the device stamps them on the clock
    of the decode window (a POSIX shell's decode script); empty where temperatures are polled from the host."""


@dataclass
class TransferCounter:
    pushed_bytes: int = 0
    pushed_files: int = 0
    reused_files: int = 0


@dataclass(frozen=True)
class AppRef:
    """A decoder shipped as an app (iOS): which package to install and what identifies it on the device."""

    bundle_id: str
    package: Path
    digest: str
    """sha256 of the package file (from the bundle's SHA256SUMS)."""


class PowerMeter(Protocol):
    """Whatever a device measures power with; the runner only shows its description and hands it back.

    Devices hand out :class:`farm.power.instrument.Instrument` objects (which have a description); the runner's
    view stays this narrow so a session and its test fakes need nothing of how power is sampled.
    """

    @property
    def description(self) -> str: ...


@dataclass(frozen=True)
class PowerProbe:
    """The device's meter (None: power is missing) and, when it has none, why (None: it simply has no meter)."""

    meter: PowerMeter | None
    reason: str | None = None


class FarmDevice(Protocol):
    """One connected device as the runner sees it. ``workdir`` holds the content-addressed cache and job folders."""

    device_id: str
    workdir: str
    runtime: dict[str, str]
    counter: TransferCounter

    charging_advice: str
    """What the user can do about a device measured on its charger (shown with the missing power)."""

    power_sampled_on: str
    """Where power samples are taken ("on device", or from the host), written into every power convention."""

    def prepare(self, *subdirs: str) -> None: ...

    def info(self) -> dict[str, str]: ...

    def check_target(self, target: str, props: dict[str, str]) -> None: ...

    def temperatures(self, zones: Sequence[str]) -> list[float | None]: ...

    def install_app(self, app: AppRef) -> None: ...

    def stage(self, files: Sequence[tuple[Path, str, str]]) -> None: ...

    def decode(
        self, argv: Sequence[str], job_dir: str, timeout: float, zones: Sequence[str] = (), app: AppRef | None = None
    ) -> DecodeOutcome: ...

    def measured_decode(self, request: DecodeRequest, meter: PowerMeter | None, window: Window) -> MeasuredDecode:
        """Decode once inside a power window, with the battery read before and after (see ``measure_around``)."""
        ...

    def kill_job(self, job_dir: str) -> None: ...

    def pull(self, remote: str, local: Path) -> int: ...

    def remove(self, path: str) -> None: ...

    def tether(self, run_dir: str) -> Tether:
        """Tie everything this run starts on the device to this controller's link, and create ``run_dir``.

        When the tether is closed, or the link to the controller ends (the controller exited, crashed or was
        SIGKILLed), the device itself kills every process group recorded in a ``*.pid`` file under ``run_dir``
        (decoders, samplers: everything this device spawns while tethered) and removes ``run_dir``. A tether
        does not survive a reconnect: after one, take a new one. Raises CommandFailed or TransportError.
        """
        ...

    def free_bytes(self, path: str) -> int | None:
        """Free bytes on the device's file system that holds ``path`` (or its nearest existing parent); None
        when the device cannot tell. Raises TransportError when the link fails."""
        ...

    def close(self) -> None: ...

    def set_charging(self, control: ChargerSuspend, enabled: bool) -> bool:
        """Stop (or resume) charging through ``control``; False when this kind of device has no such control."""
        ...

    # -- power: each device measures in its own way (an on-device sampler, or the host polling the device)
    def probe_power(self, settings: PowerSettings, platform: str, charger_suspended: bool) -> PowerProbe: ...

    def battery(self) -> BatteryState | None: ...

    def power_window(
        self, meter: PowerMeter | None, zones: Sequence[str], folder: str, name: str, hz: float, lifetime_s: float,
        during: Callable[[], Any],
    ) -> tuple[list[PowerSample], list[float]]:  # fmt: skip
        """Run ``during`` while sampling power (and temperature); return the samples and the hottest temperatures."""
        ...


def measure_around(dev: FarmDevice, request: DecodeRequest, meter: PowerMeter | None, window: Window) -> MeasuredDecode:
    """``measured_decode`` from a device's separate verbs, one round trip each: for devices (iOS, test fakes)
    whose decode cannot start and stop the sampler itself, as a POSIX shell's decode script does."""
    for path in request.discard:
        dev.remove(path)
    before = dev.battery()
    box: list[DecodeOutcome] = []
    power, temps = dev.power_window(
        meter, request.zones, window.folder, window.name, window.hz, window.lifetime_s,
        lambda: box.append(dev.decode(request.argv, request.job_dir, request.timeout_s, request.zones, request.app)),
    )  # fmt: skip
    return MeasuredDecode(box[0], tuple(power), tuple(temps), before, dev.battery())
