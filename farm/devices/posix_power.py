"""Power and temperature on a device with a shell: probe a meter, read the battery, sample on the device.

Moved out of the runner so that the runner asks any device the same three questions (what meter, what battery
state, sample this window) and an iOS device, which has no shell, can answer them from the host instead.
The behaviour is the runner's former POSIX code, unchanged.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from farm.config.inventory import PowerSettings
from farm.errors import FarmError
from farm.power import battery, meters, sampler

if TYPE_CHECKING:
    from farm.devices.posix import PosixDevice
    from farm.transports.base import Background

CHARGER_SETTLE_S = 5.0
"""How long a fuel gauge may take to report Discharging after the charger is suspended."""


def shell_run(dev: PosixDevice) -> Callable[[Any], tuple[int, str]]:
    """The (exit status, stdout) runner the meter and battery probes take."""

    def run(argv: Any) -> tuple[int, str]:
        res = dev.transport.run(list(argv), timeout=dev.command_timeout)
        return (res.exit_status if res.exit_status is not None else -1), res.text()

    return run


def probe_meter(
    dev: PosixDevice, settings: PowerSettings, platform: str, charger_suspended: bool
) -> tuple[meters.Meter | None, battery.Gauge | None]:
    """The device's power meter per devices.yaml (``auto`` probes), and its battery gauge if it has one."""
    if settings.meter == "none":
        return None, None
    run = shell_run(dev)
    gauge: battery.Gauge | None = None
    if settings.meter == "battery" or (settings.meter == "auto" and platform == "android"):
        # a phone's meter is its fuel gauge; its unit and sign are inferred unless devices.yaml gives them.
        # Right after the charger was suspended the gauge may still say Charging: give it a few seconds.
        deadline = time.monotonic() + CHARGER_SETTLE_S
        while True:
            gauge = battery.probe(run, settings.sysfs_root, sign=settings.sign, current_unit=settings.unit)
            if gauge is None or gauge.meter is not None or not charger_suspended:
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if gauge is not None or settings.meter == "battery":
            return (gauge.meter if gauge else None), gauge
    if settings.meter == "auto":
        return meters.probe(run, settings.sysfs_root), gauge
    return meters.meter_from_settings(settings.model_dump()), gauge


def read_battery(dev: PosixDevice, gauge: battery.Gauge | None) -> battery.BatteryState | None:
    return battery.read_state(shell_run(dev), gauge) if gauge is not None else None


def window(
    dev: PosixDevice, meter: meters.Meter | None, zones: Sequence[str], base: str, name: str, hz: float,
    lifetime_s: float, during: Callable[[], Any],
) -> tuple[list[sampler.PowerSample], list[float]]:  # fmt: skip
    """Run ``during`` with the power sampler (and a slower thermal sampler) going on the device.

    Returns the power samples and the hottest zone temperature of each thermal sample.
    """
    procs: list[Background] = []
    # a sampler whose kill is lost (dropped link) must still end: bound its life on the device
    lifetime = ["timeout", f"{lifetime_s:g}"]
    # samples must bracket the window: one sample on each side for instantaneous meters; a counter meter's
    # reading sits between two samples, so it needs two on each side. Waiting for them on the device (not a
    # fixed sleep) keeps that true when a loaded device starts or runs the sampler late.
    need = 0 if meter is None else (2 if meter.is_counter else 1)
    power_file = f"{base}/{name}.power"
    try:
        if meter is not None:
            procs.append(dev.spawn([*lifetime, *sampler.sampler_argv(meter, hz, power_file)]))
            dev.transport.run(sampler.await_samples_argv(power_file, first=need), timeout=dev.command_timeout)
        if zones:
            thermal = meters.Meter(kind="sysfs", nodes=tuple(zones), scale=(1e-3,) * len(zones))
            procs.append(dev.spawn([*lifetime, *sampler.sampler_argv(thermal, min(hz, 5.0), f"{base}/{name}.thermal")]))
        during()
        if meter is not None:
            dev.transport.run(sampler.await_samples_argv(power_file, more=need), timeout=dev.command_timeout)
    finally:
        for proc in procs:
            with contextlib.suppress(FarmError):
                dev.kill(proc)
    power = sampler.parse_samples(meter, dev.read_text(power_file)) if meter is not None else []
    temps: list[float] = []
    if zones:
        rows = sampler.raw_rows(len(zones), dev.read_text(f"{base}/{name}.thermal"))
        temps = [max(values) / 1000.0 for _, values in rows if values]
    return power, temps
