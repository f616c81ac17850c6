"""A phone's battery fuel gauge (``class/power_supply``) read through its shell, as the power instrument.

The gauge's unit and sign are inferred (:mod:`farm.power.battery`) unless devices.yaml gives them. Whatever the
outcome, the gauge found is handed back with the probe, so the session can read the battery's state per job
even when the gauge cannot be the meter (a phone on its charger).
"""

from __future__ import annotations

import dataclasses
import time

from farm.config.inventory import PowerSettings
from farm.power import battery
from farm.power.instrument import DeviceShell, Probe, shell_run
from farm.power.probe import PowerSource, ProbeContext, register
from farm.power.sysfs import SysfsInstrument

NAME = "battery"

CHARGER_SETTLE_S = 5.0
"""How long a fuel gauge may take to report Discharging after the charger is suspended."""

SIGN_CONFIRM_S = 0.3
"""An inferred sign is taken only when a second reading this much later agrees. ``status`` and ``current_now``
are separate files that a gauge driver updates one after the other, and right after the charger is suspended the
status may already say Discharging while the current still shows the charge: one reading could flip the sign of
every energy figure of the run."""


def _offered(target: object) -> bool:
    return isinstance(target, DeviceShell)


def find_gauge(shell: DeviceShell, settings: PowerSettings, charger_suspended: bool) -> battery.Gauge | None:
    """The battery and its inferred meter. Right after the charger was suspended the gauge may still say
    Charging (so no sign can be inferred): give it a few seconds rather than lose the run's power."""
    run = shell_run(shell)
    deadline = time.monotonic() + CHARGER_SETTLE_S
    while True:
        gauge = battery.probe(run, settings.sysfs_root, sign=settings.sign, current_unit=settings.unit)
        if gauge is not None and gauge.meter is not None and settings.sign is None:
            gauge = _confirmed(run, settings, gauge, deadline)
        if gauge is None or gauge.meter is not None or not charger_suspended:
            return gauge
        if time.monotonic() > deadline:
            return gauge
        time.sleep(0.2)


def _confirmed(run: battery.ShellRun, settings: PowerSettings, gauge: battery.Gauge, deadline: float) -> battery.Gauge:
    """The gauge once two readings SIGN_CONFIRM_S apart infer the same sign; without a meter if they never do."""
    sign = gauge.meter.sign if gauge.meter is not None else None
    while True:
        time.sleep(SIGN_CONFIRM_S)
        again = battery.probe(run, settings.sysfs_root, sign=None, current_unit=settings.unit)
        if again is None or again.meter is None:
            return again or gauge  # the gauge says Charging again, or vanished: the caller's loop decides
        if again.meter.sign == sign:
            return again
        if time.monotonic() > deadline:
            why = f"{gauge.entry}/current_now changed sign between two discharging readings; set power.sign"
            return dataclasses.replace(again, meter=None, reason=why)
        sign = again.meter.sign


def _probe(target: object, settings: PowerSettings, context: ProbeContext) -> Probe | None:
    if not isinstance(target, DeviceShell):
        return None
    gauge = find_gauge(target, settings, context.charger_suspended)
    if gauge is None:
        return Probe(None) if context.explicit else None  # no battery at all: auto tries the next source
    instrument = SysfsInstrument(target, gauge.meter) if gauge.meter is not None else None
    return Probe(instrument, gauge.reason, gauge)


SOURCE = register(PowerSource(NAME, frozenset({"battery"}), _offered, _probe))
