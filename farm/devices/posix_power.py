"""A measured window on a device with a shell: the power instrument's samples and the on-device thermal sampler.

The power side belongs to the instrument (:mod:`farm.power.instrument`), whatever it is; this module adds only
what a shell device does around it: temperatures sampled by the same sh loop, and the battery state read from the
gauge the probe found. It takes the device as a :class:`~farm.power.instrument.DeviceShell`, never the POSIX
device class, so posix.py imports this module and not the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from farm.power import battery, sampler
from farm.power.instrument import DeviceShell, Instrument, Window, shell_run
from farm.power.meters import Meter
from farm.power.sampler import PowerSample
from farm.power.sysfs import spawn_sampler, stop

THERMAL_MAX_HZ = 5.0
"""Zones change slowly; sampling them faster only loads the device being measured."""


def read_battery(shell: DeviceShell, gauge: battery.Gauge | None) -> battery.BatteryState | None:
    return battery.read_state(shell_run(shell), gauge) if gauge is not None else None


def window(
    shell: DeviceShell,
    instrument: Instrument | None,
    zones: Sequence[str],
    window: Window,
    during: Callable[[], object],
) -> tuple[list[PowerSample], list[float]]:
    """Run ``during`` with the instrument sampling power and a slower thermal sampler on the device.

    Returns the power samples and the hottest zone temperature of each thermal sample. The thermal sampler runs
    inside the instrument's window, so the instrument's bracketing samples are taken before it starts and after
    it stops, as they were when both lived here.
    """
    thermal_file = f"{window.folder}/{window.name}.thermal"

    def with_thermal() -> None:
        if not zones:
            during()
            return
        thermal = Meter(kind="sysfs", nodes=tuple(zones), scale=(1e-3,) * len(zones))
        proc = spawn_sampler(shell, thermal, min(window.hz, THERMAL_MAX_HZ), thermal_file, window.lifetime_s)
        try:
            during()
        finally:
            stop(shell, proc)

    power: list[PowerSample] = []
    if instrument is not None:
        power = instrument.measure(window, with_thermal)
    else:
        with_thermal()
    temps: list[float] = []
    if zones:
        rows = sampler.raw_rows(len(zones), shell.read_text(thermal_file))
        temps = [max(values) / 1000.0 for _, values in rows if values]
    return power, temps
