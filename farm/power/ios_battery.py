"""An iPhone's battery (DiagnosticsService IORegistry ``IOPMPowerSource``) as watts, degrees C and charging state.

Pure functions on the dictionary pymobiledevice3 returns, so the unit and sign conventions are tested on their own:

* ``Voltage`` (and ``AppleRawBatteryVoltage``) is in mV.
* ``InstantAmperage`` (else ``Amperage``, a slower average) is in mA, **signed**: negative while the battery
  discharges. The farm reports consumed power positive, so watts = -I x V. Some gauges report the 16-bit value
  unsigned (65535 for -1 mA): values >= 2**15 are read as two's complement.
* ``Temperature`` is in hundredths of a degree C.
* ``IsCharging`` / ``ExternalConnected``: on USB the phone is powered by the cable and the gauge reads charger
  minus load, which says nothing about the decode. Such samples are kept (the trace is recorded) but the job's
  power is reported missing with that reason, as on Android.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from farm.errors import FarmError
from farm.power.battery import CLEAN_STATUS, BatteryState
from farm.power.instrument import Channel, Window
from farm.power.sampler import PowerSample

MAX_PLAUSIBLE_W = 30.0
SOURCE = "IORegistry CurrentCapacity / MaxCapacity, Temperature in 0.01 C"
"""An iPhone or iPad draws well under this; a larger figure means the units were misread."""


@dataclass(frozen=True)
class IosBatteryReading:
    """One IORegistry read: watts consumed (positive), volts, amperes (signed as reported), state."""

    watts: float | None
    volts: float | None
    amps: float | None
    temp_c: float | None
    level: float | None
    charging: bool | None
    external: bool | None

    @property
    def status(self) -> str | None:
        """A power_supply-style status, so the runner treats an iPhone's charging like a phone's."""
        if self.charging is None and self.external is None:
            return None
        if self.charging:
            return "Charging"
        if self.external:
            return "Not charging"  # on the cable but full: the charger still powers the phone
        return CLEAN_STATUS

    def state(self) -> BatteryState:
        return BatteryState(status=self.status, level=self.level, temp_c=self.temp_c, source=SOURCE)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def signed16(raw: float) -> float:
    """A current the gauge reported as an unsigned 16-bit value, back to its sign (65535 -> -1)."""
    if 2**15 <= raw < 2**16:
        return raw - 2**16
    return raw


def parse(battery: Mapping[str, Any] | None) -> IosBatteryReading:
    """Convert ``DiagnosticsService.get_battery()`` output (None when the device has no power source entry)."""
    if not battery:
        return IosBatteryReading(None, None, None, None, None, None, None)
    mv = _number(battery.get("Voltage"))
    if mv is None:
        mv = _number(battery.get("AppleRawBatteryVoltage"))
    ma = _number(battery.get("InstantAmperage"))
    if ma is None:
        ma = _number(battery.get("Amperage"))
    volts = mv / 1000.0 if mv is not None and mv > 0 else None
    amps = signed16(ma) / 1000.0 if ma is not None else None
    watts = None
    if volts is not None and amps is not None:
        watts = -amps * volts  # negative current = discharging = power consumed
        if abs(watts) > MAX_PLAUSIBLE_W:
            watts = None
    centi = _number(battery.get("Temperature"))
    capacity = _number(battery.get("CurrentCapacity"))
    max_capacity = _number(battery.get("MaxCapacity"))
    level = None
    if capacity is not None:
        # CurrentCapacity is a percentage on iOS when MaxCapacity is 100; otherwise mAh against MaxCapacity
        if max_capacity and max_capacity > 0 and max_capacity != 100:
            level = capacity / max_capacity
        elif 0 <= capacity <= 100:
            level = capacity / 100.0
    if level is not None and not 0.0 <= level <= 1.0:
        level = None
    return IosBatteryReading(
        watts=watts,
        volts=volts,
        amps=amps,
        temp_c=centi / 100.0 if centi is not None else None,
        level=level,
        charging=_flag(battery.get("IsCharging")),
        external=_flag(battery.get("ExternalConnected")),
    )


DESCRIPTION = (
    "iOS battery IORegistry (DiagnosticsService IOPMPowerSource) -InstantAmperage x Voltage "
    "(mA, mV, negative while discharging), polled from the host over usbmux"
)


@runtime_checkable
class BatteryDiagnostics(Protocol):
    """What the host-polled instrument needs of a device: one battery read (an iPhone's DiagnosticsService).

    A protocol, so this module never imports the iOS device (nor pymobiledevice3): it is tested on its own.
    """

    @property
    def device_id(self) -> str: ...

    @property
    def command_timeout(self) -> float: ...

    def battery_reading(self) -> IosBatteryReading: ...


def poll(device: BatteryDiagnostics, hz: float, during: Callable[[], object]) -> list[tuple[float, IosBatteryReading]]:
    """Read the battery at ``hz`` on a host thread while ``during`` runs, with one read on each side of it.

    Times are the host's monotonic clock at the middle of each read, the clock an iOS decode's start and end use,
    so the trapezoid over the decode window lines up. A read that fails stops the polling quietly: the decode
    sees the same broken link and reports it.
    """
    readings: list[tuple[float, IosBatteryReading]] = []
    stop = threading.Event()

    def sample() -> None:
        before = time.monotonic_ns()
        reading = device.battery_reading()
        readings.append(((before + time.monotonic_ns()) / 2e9, reading))

    def loop() -> None:
        period = 1.0 / hz
        while not stop.wait(period):
            try:
                sample()
            except FarmError:
                return

    sample()
    thread = threading.Thread(target=loop, name=f"ios-power-{device.device_id}", daemon=True)
    thread.start()
    try:
        during()
    finally:
        stop.set()
        thread.join(device.command_timeout)
    with contextlib.suppress(FarmError):
        sample()
    readings.sort(key=lambda r: r[0])
    return readings


def watts(readings: list[tuple[float, IosBatteryReading]]) -> list[PowerSample]:
    """The power samples of a poll (reads whose units made no sense are left out, never guessed)."""
    return [PowerSample(t, r.watts) for t, r in readings if r.watts is not None]


@dataclass(frozen=True)
class IosBatteryInstrument:
    """An iPhone's battery gauge polled from the host (an :class:`~farm.power.instrument.Instrument`)."""

    device: BatteryDiagnostics
    description: str = DESCRIPTION

    @property
    def channels(self) -> tuple[Channel, ...]:
        return (Channel("battery", "voltage", "V"), Channel("battery", "current", "A"))

    def measure(self, window: Window, during: Callable[[], object]) -> list[PowerSample]:
        return watts(poll(self.device, window.hz, during))
