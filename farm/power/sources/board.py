"""Sysfs meters of a board read through its shell: RAPL package counters and hwmon channels (INA2xx/INA3221 rails).

``auto`` finds one in a single round trip (:func:`farm.power.meters.probe`: RAPL first, then the hwmon channel
labelled as the board's input); ``rapl``, ``hwmon`` and ``sysfs`` in devices.yaml name the nodes explicitly.
Either way the instrument is the on-device sampler, so any device kind with a POSIX shell gets these meters.
"""

from __future__ import annotations

from farm.config.inventory import PowerSettings
from farm.power import meters
from farm.power.instrument import DeviceShell, Probe, shell_run
from farm.power.probe import PowerSource, ProbeContext, register
from farm.power.sysfs import SysfsInstrument

NAME = "sysfs"


def _offered(target: object) -> bool:
    return isinstance(target, DeviceShell)


def _probe(target: object, settings: PowerSettings, context: ProbeContext) -> Probe | None:
    if not isinstance(target, DeviceShell):
        return None
    if not context.explicit:
        found = meters.probe(shell_run(target), settings.sysfs_root)
        return Probe(SysfsInstrument(target, found)) if found is not None else None
    return Probe(SysfsInstrument(target, meters.meter_from_settings(settings.model_dump())))


SOURCE = register(PowerSource(NAME, frozenset({"rapl", "hwmon", "sysfs"}), _offered, _probe))
