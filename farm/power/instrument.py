"""Power instruments: what measures a device's power, as objects that do not depend on the device's class.

Why: a device kind says how commands and bytes reach a device (a shell over SSH or ADB, usbmux to an iPhone);
what measures its power is separate hardware (RAPL counters, an INA3221 on the board, a phone's fuel gauge, a
bench meter on USB). devlib keeps the two apart (``Instrument(target)`` with typed channels) and so do we: a new
meter is one module in ``farm/power/sources/``, whatever device it sits on, and a new device kind gets every
meter its capabilities reach (a POSIX shell reaches every sysfs meter) without naming them.

The device asks for a window with ``measure``: the instrument starts sampling, runs ``during`` (the decode or the
idle baseline), makes sure samples bracket it, stops, and returns watts on the clock the device's decode window
is stamped with. Units, sign and counter wrap are the instrument's business; the runner only sees watts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from farm.power.battery import Gauge
from farm.power.sampler import PowerSample
from farm.transports.base import Background, Transport

ChannelKind = Literal["power", "energy", "voltage", "current", "temperature"]

ShellRun = Callable[[Sequence[str]], tuple[int, str]]
"""Runs argv on the device and returns (exit status, stdout): what the probe scripts take."""


@dataclass(frozen=True)
class Channel:
    """One quantity an instrument reads, in SI base units after scaling (devlib's ``InstrumentChannel``).

    ``site`` says where (``package-0``, ``VDD_IN``, ``battery``), so a report can tell a CPU package from a rail.
    """

    site: str
    kind: ChannelKind
    unit: str

    @property
    def name(self) -> str:
        return f"{self.site}_{self.kind}"


@dataclass(frozen=True)
class Window:
    """Where and how one measured window samples: the device folder and file stem for raw samples, the rate,
    and how long a sampler may live on the device if the host loses it (a dropped link must not leave it running).
    """

    folder: str
    name: str
    hz: float
    lifetime_s: float


@runtime_checkable
class Instrument(Protocol):
    """A power meter bound to one device. ``description`` is recorded with every power result as its meter."""

    @property
    def description(self) -> str: ...

    @property
    def channels(self) -> tuple[Channel, ...]: ...

    def measure(self, window: Window, during: Callable[[], object]) -> list[PowerSample]:
        """Run ``during`` while sampling; return watts (consumed power positive), bracketing the window."""
        ...


@runtime_checkable
class DeviceShell(Protocol):
    """What an on-device instrument needs of a device: its transport and a few shell verbs.

    A protocol rather than the POSIX device class, so power code never imports a device module (that import was
    the posix.py <-> posix_power.py cycle) and any device kind with a shell gets the sysfs meters for free.
    """

    @property
    def transport(self) -> Transport: ...

    @property
    def command_timeout(self) -> float: ...

    def spawn(self, argv: Sequence[str]) -> Background: ...

    def kill(self, proc: Background) -> None: ...

    def read_text(self, path: str) -> str: ...


def shell_run(shell: DeviceShell) -> ShellRun:
    """The (exit status, stdout) runner the meter and battery probes take."""

    def run(argv: Sequence[str]) -> tuple[int, str]:
        res = shell.transport.run(list(argv), timeout=shell.command_timeout)
        return (res.exit_status if res.exit_status is not None else -1), res.text()

    return run


@dataclass(frozen=True)
class Probe:
    """What probing found: the instrument (None: power is missing) and, when there is none, why (None: the
    device simply has no meter). ``gauge`` is the battery found on the way, read for battery state per job even
    when it cannot be the power meter (a phone on its charger).
    """

    instrument: Instrument | None
    reason: str | None = None
    gauge: Gauge | None = None
