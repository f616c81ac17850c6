"""A virtual board's sysfs tree: the hwmon, thermal and powercap files the farm reads on a real Linux board.

Why files shaped like the kernel's: the farm's power sampler and thermal probe read sysfs with plain ``sh`` on
the board, so pointing them at ``<root>/sys/...`` instead of ``/sys/...`` exercises exactly the code that runs on
a Raspberry Pi or a Jetson. Units follow the kernel ABI (Documentation/hwmon/sysfs-interface,
Documentation/ABI/testing/sysfs-class-thermal, sysfs-class-powercap):

    sys/class/hwmon/hwmon0/name                  farm_sim (an INA2xx-like supply monitor)
    sys/class/hwmon/hwmon0/power1_input          power, microwatts (integer)
    sys/class/hwmon/hwmon0/in0_input             supply voltage, millivolts
    sys/class/hwmon/hwmon0/curr1_input           supply current, milliamperes
    sys/class/thermal/thermal_zone0/type         farm-sim-cpu
    sys/class/thermal/thermal_zone0/temp         millidegrees C
    sys/class/thermal/thermal_zone0/trip_point_0_temp / _type   the throttle threshold (passive), m°C
    sys/class/thermal/thermal_zone0/throttled    1 while above the threshold, else 0 (simulator only)
    sys/class/powercap/intel-rapl:0/energy_uj    energy counter, microjoules, wraps at max_energy_range_uj

Every value is SIMULATED by :mod:`farm.sim.loadmodel`. Each update is written to a hidden temporary file in the
same directory and renamed over the old one (``os.replace``), so a reader sees the old number or the new one,
never a partial line; the dot-prefixed temporary never matches a shell glob such as ``power*_input``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from farm.fileio import write_atomic
from farm.sim.loadmodel import LoadModel

HWMON_NAME = "farm_sim"
THERMAL_TYPE = "farm-sim-cpu"
RAPL_NAME = "package-0"
DEFAULT_ENERGY_RANGE_UJ = 262_143_328_850
"""The range of a typical RAPL package counter (about 262 kJ)."""


@dataclass(frozen=True)
class SysfsTree:
    """The file layout of one board's virtual sysfs, rooted at ``root`` (the board's ``/``)."""

    root: Path
    energy_range_uj: int = DEFAULT_ENERGY_RANGE_UJ
    rails: bool = True
    """Write the hwmon and powercap rails. A phone has none (its power comes from the battery's fuel gauge,
    :mod:`farm.sim.battery`); it keeps only the thermal zone."""
    _written: dict[Path, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def hwmon_dir(self) -> Path:
        return self.root / "sys" / "class" / "hwmon" / "hwmon0"

    @property
    def power_node(self) -> Path:
        """Power in microwatts: the node an inventory's ``power: {meter: hwmon, unit: uW}`` names."""
        return self.hwmon_dir / "power1_input"

    @property
    def voltage_node(self) -> Path:
        return self.hwmon_dir / "in0_input"

    @property
    def current_node(self) -> Path:
        return self.hwmon_dir / "curr1_input"

    @property
    def thermal_zone_dir(self) -> Path:
        return self.root / "sys" / "class" / "thermal" / "thermal_zone0"

    @property
    def temp_node(self) -> Path:
        """Temperature in millidegrees C: the file an inventory's ``thermal: {zones: [...]}`` names."""
        return self.thermal_zone_dir / "temp"

    @property
    def throttle_node(self) -> Path:
        """``1`` while the simulated board throttles, else ``0`` (no kernel equivalent; simulator only)."""
        return self.thermal_zone_dir / "throttled"

    @property
    def rapl_dir(self) -> Path:
        return self.root / "sys" / "class" / "powercap" / "intel-rapl:0"

    @property
    def energy_node(self) -> Path:
        """Cumulative energy in microjoules, wrapping at :attr:`energy_range_uj`."""
        return self.rapl_dir / "energy_uj"

    def create(self, model: LoadModel) -> None:
        """Create the directories and the constant files, then write ``model``'s current readings."""
        if self.energy_range_uj <= 0:
            raise ValueError(f"energy range must be > 0 uJ, not {self.energy_range_uj}")
        self.thermal_zone_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.thermal_zone_dir / "type", f"{THERMAL_TYPE}\n")
        write_atomic(self.thermal_zone_dir / "trip_point_0_temp", f"{round(model.params.throttle_c * 1000)}\n")
        write_atomic(self.thermal_zone_dir / "trip_point_0_type", "passive\n")
        if self.rails:
            self.hwmon_dir.mkdir(parents=True, exist_ok=True)
            self.rapl_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.hwmon_dir / "name", f"{HWMON_NAME}\n")
            write_atomic(self.rapl_dir / "name", f"{RAPL_NAME}\n")
            write_atomic(self.rapl_dir / "max_energy_range_uj", f"{self.energy_range_uj}\n")
        self._written.clear()
        self.update(model)

    def update(self, model: LoadModel) -> None:
        """Write ``model``'s current power, voltage, current, temperature, throttle flag and energy counter.

        A file whose text is unchanged since this object last wrote it is left alone (an idle board rewrites
        only its energy counter), which keeps the daemon's own CPU cost per board small.
        """
        values = {
            self.temp_node: f"{round(model.temp_c * 1e3)}\n",
            self.throttle_node: f"{int(model.throttled)}\n",
        }
        if self.rails:
            values |= {
                self.power_node: f"{round(model.power_w * 1e6)}\n",
                self.voltage_node: f"{round(model.voltage_v * 1e3)}\n",
                self.current_node: f"{round(model.current_a * 1e3)}\n",
                self.energy_node: f"{round(model.energy_j * 1e6) % self.energy_range_uj}\n",
            }
        for path, text in values.items():
            if self._written.get(path) != text:
                write_atomic(path, text)
                self._written[path] = text


def read_int(path: Path) -> int:
    """The integer in a sysfs-style file (one number and a newline)."""
    return int(path.read_text().strip())
