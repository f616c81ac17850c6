"""An emulated phone's battery and charger, as the files of ``/sys/class/power_supply`` that Android exposes.

Why: a phone's only power meter is its battery fuel gauge, and vendors disagree on its conventions. So that the
farm's Android power path (probe, sign and unit inference, charging detection, charger suspend) runs here end to
end, an emulated phone gets a battery whose readings follow the phone's own CPU load (the same
:class:`farm.sim.loadmodel.LoadModel` as the virtual SSH boards) and whose conventions are chosen per phone:

    sys/class/power_supply/battery/type           Battery
    sys/class/power_supply/battery/status         Charging | Discharging | Full
    sys/class/power_supply/battery/present        1
    sys/class/power_supply/battery/capacity       level, percent (integer)
    sys/class/power_supply/battery/voltage_now    uV (or mV: ``voltage_unit``)
    sys/class/power_supply/battery/current_now    uA (or mA: ``current_unit``); sign per ``current_sign``
    sys/class/power_supply/battery/temp           tenths of a degree C
    sys/class/power_supply/battery/input_suspend  0 | 1, writable: 1 stops charging (Qualcomm's node, rooted phones)
    sys/class/power_supply/usb/type               USB
    sys/class/power_supply/usb/online             1 while a charger is plugged in

Every number is SIMULATED. ``current_sign`` +1 means the gauge reads positive while the battery discharges, -1
negative (both exist in the field). While charging, the gauge reads the battery's net current (charger minus
load), which is exactly why the farm must not take it for the phone's draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from farm.fileio import write_atomic
from farm.sim.loadmodel import LoadModel


@dataclass(frozen=True)
class BatteryParams:
    """A phone battery's constants and the conventions of its fuel gauge."""

    capacity_wh: float = 15.0
    """Energy of a full battery, Wh (a 4000 mAh cell at 3.85 V)."""
    empty_v: float = 3.5
    full_v: float = 4.2
    """Open-circuit voltage from empty to full, linear in the level (V)."""
    charge_w: float = 7.5
    """What a plugged-in charger delivers, W."""
    level: float = 0.8
    """Level at start, 0..1."""
    charger: bool = True
    """A charger (USB) is plugged in at start: a phone on a test host usually is."""
    current_sign: Literal[1, -1] = -1
    """Sign of ``current_now`` while discharging."""
    current_unit: Literal["uA", "mA"] = "uA"
    voltage_unit: Literal["uV", "mV"] = "uV"

    def __post_init__(self) -> None:
        if not (0.0 <= self.level <= 1.0):
            raise ValueError(f"level must be within 0..1, not {self.level}")
        for name in ("capacity_wh", "empty_v", "full_v", "charge_w"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, not {value!r}")
        if self.current_sign not in (1, -1):
            raise ValueError("current_sign must be 1 or -1")


@dataclass
class Battery:
    """The battery's state, advanced together with the phone's load model."""

    params: BatteryParams = field(default_factory=BatteryParams)
    level: float = -1.0
    charger: bool = False
    suspended: bool = False
    current_a: float = 0.0
    """Net battery current, A, positive while discharging."""

    def __post_init__(self) -> None:
        if self.level < 0:
            self.level = self.params.level
        self.charger = self.params.charger

    @property
    def voltage_v(self) -> float:
        return self.params.empty_v + (self.params.full_v - self.params.empty_v) * self.level

    @property
    def charging(self) -> bool:
        """The charger feeds the phone (and the battery, unless full)."""
        return self.charger and not self.suspended

    @property
    def status(self) -> str:
        if not self.charging:
            return "Discharging"
        return "Full" if self.level >= 1.0 else "Charging"

    def step(self, load_w: float, dt_s: float) -> None:
        """Advance by ``dt_s`` seconds while the phone draws ``load_w``."""
        supply_w = 0.0
        if self.charging:
            # a full battery only tops up: the charger covers the load and nothing more
            supply_w = load_w if self.level >= 1.0 else self.params.charge_w
        net_w = load_w - supply_w  # > 0: the battery discharges
        self.current_a = net_w / self.voltage_v
        self.level = min(1.0, max(0.0, self.level - net_w * dt_s / 3600.0 / self.params.capacity_wh))


@dataclass(frozen=True)
class PowerSupplyTree:
    """The power_supply files of one emulated phone, rooted at ``root`` (the phone's ``/``)."""

    root: Path
    _written: dict[Path, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def battery_dir(self) -> Path:
        return self.root / "sys" / "class" / "power_supply" / "battery"

    @property
    def usb_dir(self) -> Path:
        return self.root / "sys" / "class" / "power_supply" / "usb"

    @property
    def suspend_node(self) -> Path:
        """Write ``1`` to stop charging (the farm's ``power.charger_suspend``), ``0`` to resume."""
        return self.battery_dir / "input_suspend"

    def create(self, battery: Battery, model: LoadModel) -> None:
        self.battery_dir.mkdir(parents=True, exist_ok=True)
        self.usb_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.battery_dir / "type", "Battery\n")
        write_atomic(self.battery_dir / "present", "1\n")
        write_atomic(self.usb_dir / "type", "USB\n")
        write_atomic(self.suspend_node, f"{int(battery.suspended)}\n")
        self._written.clear()
        self.update(battery, model)

    def read_suspend(self) -> bool | None:
        """What the farm last wrote to ``input_suspend`` (None if unreadable or not 0/1)."""
        try:
            text = self.suspend_node.read_text().strip()
        except OSError:
            return None
        return {"0": False, "1": True}.get(text)

    def update(self, battery: Battery, model: LoadModel) -> None:
        p = battery.params
        volts = battery.voltage_v * (1e6 if p.voltage_unit == "uV" else 1e3)
        amps = p.current_sign * battery.current_a * (1e6 if p.current_unit == "uA" else 1e3)
        ambient = model.params.ambient_c
        values = {
            self.battery_dir / "status": f"{battery.status}\n",
            self.battery_dir / "capacity": f"{round(battery.level * 100)}\n",
            self.battery_dir / "voltage_now": f"{round(volts)}\n",
            self.battery_dir / "current_now": f"{round(amps)}\n",
            # the cell sits away from the SoC: it sees about half of the SoC's rise over ambient
            self.battery_dir / "temp": f"{round((ambient + 0.5 * (model.temp_c - ambient)) * 10)}\n",
            self.usb_dir / "online": f"{int(battery.charger)}\n",
        }
        for path, text in values.items():
            if self._written.get(path) != text:
                write_atomic(path, text)
                self._written[path] = text
