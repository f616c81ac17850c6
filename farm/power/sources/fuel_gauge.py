"""A phone's battery fuel gauge (``class/power_supply``) read through its shell, as the power instrument.

The gauge's unit and sign are inferred (:mod:`farm.power.battery`) unless devices.yaml gives them. Whatever the
outcome, the gauge found is handed back with the probe, so the session can read the battery's state per job
even when the gauge cannot be the meter (a phone on its charger).
"""

from __future__ import annotations

import time

from farm.config.inventory import PowerSettings
from farm.power import battery
from farm.power.instrument import DeviceShell, Probe, shell_run
from farm.power.probe import PowerSource, ProbeContext, register
from farm.power.sysfs import SysfsInstrument

NAME = "battery"

CHARGER_SETTLE_S = 5.0
"""How long a fuel gauge may take to report Discharging after the charger is suspended."""


def _offered(target: object) -> bool:
    return isinstance(target, DeviceShell)


def find_gauge(shell: DeviceShell, settings: PowerSettings, charger_suspended: bool) -> battery.Gauge | None:
    """The battery and its inferred meter. Right after the charger was suspended the gauge may still say
    Charging (so no sign can be inferred): give it a few seconds rather than lose the run's power."""
    run = shell_run(shell)
    deadline = time.monotonic() + CHARGER_SETTLE_S
    while True:
        gauge = battery.probe(run, settings.sysfs_root, sign=settings.sign, current_unit=settings.unit)
        if gauge is None or gauge.meter is not None or not charger_suspended:
            return gauge
        if time.monotonic() > deadline:
            return gauge
        time.sleep(0.2)


def _probe(target: object, settings: PowerSettings, context: ProbeContext) -> Probe | None:
    if not isinstance(target, DeviceShell):
        return None
    gauge = find_gauge(target, settings, context.charger_suspended)
    if gauge is None:
        return Probe(None) if context.explicit else None  # no battery at all: auto tries the next source
    instrument = SysfsInstrument(target, gauge.meter) if gauge.meter is not None else None
    return Probe(instrument, gauge.reason, gauge)


SOURCE = register(PowerSource(NAME, frozenset({"battery"}), _offered, _probe))
