"""An iPhone's battery gauge polled from the host over usbmux: iOS runs no farm process to sample on the device."""

from __future__ import annotations

from farm.config.inventory import PowerSettings
from farm.power.instrument import Probe
from farm.power.ios_battery import BatteryDiagnostics, IosBatteryInstrument
from farm.power.probe import PowerSource, ProbeContext, register

NAME = "ios-battery"


def _offered(target: object) -> bool:
    return isinstance(target, BatteryDiagnostics)


def _probe(target: object, settings: PowerSettings, context: ProbeContext) -> Probe | None:
    if not isinstance(target, BatteryDiagnostics):
        return None
    reading = target.battery_reading()
    if reading.volts is None or reading.amps is None:
        return Probe(None, "the battery's IORegistry entry has no readable Voltage and InstantAmperage")
    return Probe(IosBatteryInstrument(target))


SOURCE = register(PowerSource(NAME, frozenset({"battery"}), _offered, _probe))
