"""The load model that drives a virtual board's SIMULATED power and temperature sensors.

Why a model at all: the virtual SSH boards run on this machine, which has no per-board power rail or thermal
zone. So that the farm's power, energy and cooldown paths run end to end against them, each board gets sensors
whose numbers follow the CPU time its own processes use. The numbers are plausible for a small ARM board, but
they are not measurements of anything, and everything that shows them must say so.

The model (all times in seconds, power in W, temperature in degrees C):

    busy    = CPU seconds used by the board's processes per wall-clock second (i.e. busy cores)
    P       = idle_w + w_per_core * busy
    T_tgt   = ambient_c + c_per_w * P
    T      += (T_tgt - T) * (1 - exp(-dt / tau_s))          (first-order lag, exact for a constant P over dt)
    E      += P * dt                                        (energy counter, J)
    throttled = T > throttle_c                              (reported only; the board is not slowed down)

Defaults (:class:`LoadParams`): idle 1.5 W, 2.0 W per busy core, ambient 30 C, 6 C/W, tau 20 s, throttle above
80 C, a 5.0 V supply for the voltage/current view of the same power. An idle board therefore sits at 39 C
(30 + 6 x 1.5); one busy core settles at 3.5 W and 51 C, reaching 63 % of that step after 20 s. A board starts
in its idle steady state (a board that has been powered on for a while).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadParams:
    """The model's constants; every one can be overridden (``farm.sim.loadd`` takes them as options)."""

    idle_w: float = 1.5
    """Power with no process of the board running, W."""
    w_per_core: float = 2.0
    """Additional power per fully busy core, W."""
    ambient_c: float = 30.0
    """Temperature the board settles at with zero power, C."""
    c_per_w: float = 6.0
    """Steady-state temperature rise per watt (thermal resistance), C/W."""
    tau_s: float = 20.0
    """Thermal time constant, s: after tau the temperature has closed 63 % of the gap to its target."""
    throttle_c: float = 80.0
    """Above this temperature the board reports that it throttles (passive trip point), C."""
    supply_v: float = 5.0
    """Supply voltage for the voltage x current view (``in0_input`` / ``curr1_input``), V."""

    def __post_init__(self) -> None:
        for name in ("idle_w", "w_per_core", "c_per_w"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        for name in ("tau_s", "supply_v"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, not {value!r}")
        for name in ("ambient_c", "throttle_c"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")

    def power_w(self, busy_cores: float) -> float:
        """Power drawn with ``busy_cores`` cores busy (negative load counts as idle)."""
        return self.idle_w + self.w_per_core * max(0.0, busy_cores)

    def target_c(self, power_w: float) -> float:
        """The temperature a constant ``power_w`` settles at."""
        return self.ambient_c + self.c_per_w * power_w


class LoadModel:
    """The model's state: temperature and energy, advanced by :meth:`step`."""

    def __init__(self, params: LoadParams | None = None, temp_c: float | None = None) -> None:
        self.params = params or LoadParams()
        self.power_w = self.params.power_w(0.0)
        self.temp_c = self.params.target_c(self.power_w) if temp_c is None else temp_c
        self.energy_j = 0.0
        self.busy_cores = 0.0

    @property
    def throttled(self) -> bool:
        """True while the temperature is above the throttle threshold."""
        return self.temp_c > self.params.throttle_c

    @property
    def voltage_v(self) -> float:
        """Supply voltage, V (constant)."""
        return self.params.supply_v

    @property
    def current_a(self) -> float:
        """Supply current, A: the same power seen as voltage x current."""
        return self.power_w / self.params.supply_v

    def step(self, cpu_s: float, dt_s: float) -> None:
        """Advance by ``dt_s`` seconds during which the board's processes used ``cpu_s`` CPU seconds."""
        if not (math.isfinite(dt_s) and dt_s > 0):
            raise ValueError(f"dt must be a positive number of seconds, not {dt_s!r}")
        if not math.isfinite(cpu_s):
            raise ValueError(f"cpu seconds must be finite, not {cpu_s!r}")
        self.busy_cores = max(0.0, cpu_s) / dt_s
        self.power_w = self.params.power_w(self.busy_cores)
        target = self.params.target_c(self.power_w)
        self.temp_c += (target - self.temp_c) * (1.0 - math.exp(-dt_s / self.params.tau_s))
        self.energy_j += self.power_w * dt_s
