"""A phone's battery fuel gauge as a power meter: find it, infer its conventions, and read its state per job.

Why inference: the kernel's power_supply ABI says ``current_now`` is in uA and ``voltage_now`` in uV, but phones
in the field report mA or mV, and the sign of the current while discharging is positive on some gauges and
negative on others. A wrong guess is off by 1000x or flips the sign of every energy figure, so the farm infers
from what a reading can be, and records which node and convention it used with every result:

* voltage: a one- or two-cell Li-ion pack reads 2.5..10 V. That is 2.5e6..1e7 in uV or 2500..10000 in mV; the
  ranges do not overlap, so the magnitude decides.
* current unit: |I| x V must be a plausible phone draw (10 mW..30 W). Read as uA and as mA the same number gives
  powers 1000x apart, so at most one of them is plausible; if neither is, the meter is refused (power missing).
* sign: only a *discharging* reading tells it (the consumed power is then positive). While charging, the gauge
  reads charger minus load, which says nothing about the phone's draw: then the sign cannot be inferred, and the
  jobs that run on the charger report power as missing anyway (see ``charging`` in :func:`read_state`).

``devices.yaml`` may state ``sign`` and the current ``unit`` (``uA``/``mA``) to override the inference.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from farm.power.meters import Meter

ShellRun = Callable[[Sequence[str]], tuple[int, str]]

# $1 = sysfs root. One tab-separated line per power_supply entry:
#   <name> <type> <status> <voltage_now> <current_now> <power_now> <capacity> <temp> <online>
# with "-" for anything unreadable (names of power_supply entries never contain tabs or newlines).
_PROBE_SCRIPT = r"""
for d in "$1"/class/power_supply/*; do
  [ -d "$d" ] || continue
  l=${d##*/}
  for a in type status voltage_now current_now power_now capacity temp online; do
    v=; { read -r v <"$d/$a"; } 2>/dev/null
    l="$l	${v:--}"
  done
  echo "$l"
done
exit 0
"""

# $1.. = files: one line each, "-" when unreadable (status, capacity, temp of the chosen battery)
_STATE_SCRIPT = r"""
for f do v=; { read -r v <"$f"; } 2>/dev/null; echo "${v:--}"; done
"""

PLAUSIBLE_W = (0.01, 30.0)
VOLTAGE_UV = (2.5e6, 1e7)
VOLTAGE_MV = (2500.0, 10000.0)
CLEAN_STATUS = "Discharging"
"""The only status in which the battery alone powers the phone ("Not charging" means the charger does)."""


@dataclass(frozen=True)
class Entry:
    name: str
    type: str
    status: str
    voltage_now: float | None
    current_now: float | None
    power_now: float | None
    capacity: float | None
    temp: float | None


@dataclass(frozen=True)
class Gauge:
    """The chosen battery: its meter (None when it cannot be used, with ``reason``) and its state files."""

    entry: str
    meter: Meter | None
    reason: str | None
    status_node: str
    capacity_node: str
    temp_node: str


@dataclass(frozen=True)
class BatteryState:
    status: str | None
    level: float | None
    """0..1"""
    temp_c: float | None
    source: str = "power_supply capacity / 100, temp in 0.1 C"
    """Which readings and units the level and temperature came from (stored as their convention)."""

    @property
    def charging(self) -> bool | None:
        """True unless the battery alone powers the phone; None when the status could not be read."""
        return None if self.status is None else self.status != CLEAN_STATUS


def probe(
    run: ShellRun, root: str = "/sys", *, sign: int | None = None, current_unit: str | None = None
) -> Gauge | None:
    """The phone's battery under ``root``/class/power_supply (None if it has none) with its inferred meter."""
    if "\n" in root or "\0" in root:
        raise ValueError("sysfs root must not contain a newline or NUL")
    status, out = run(["sh", "-c", _PROBE_SCRIPT, "probe", root])
    if status != 0:
        return None
    batteries = [e for e in (_entry(line) for line in out.splitlines()) if e is not None and e.type == "Battery"]
    if not batteries:
        return None
    # a phone has one; with several (a dock, a stylus) prefer the one the kernel calls "battery"
    entry = sorted(batteries, key=lambda e: (e.name != "battery", e.name))[0]
    base = posixpath.join(root, "class", "power_supply", entry.name)
    meter, reason = infer(entry, base, sign=sign, current_unit=current_unit)
    return Gauge(
        entry=base, meter=meter, reason=reason, status_node=f"{base}/status", capacity_node=f"{base}/capacity",
        temp_node=f"{base}/temp",
    )  # fmt: skip


def infer(
    entry: Entry, base: str, *, sign: int | None = None, current_unit: str | None = None
) -> tuple[Meter | None, str | None]:
    """The meter for one battery entry, or (None, why not)."""
    volts, v_unit = _voltage(entry.voltage_now)
    if entry.current_now is None:
        return _power_now_meter(entry, base, sign)
    if volts is None:
        return None, f"{base}/voltage_now reads {entry.voltage_now}: neither uV nor mV of a Li-ion pack"
    raw = entry.current_now
    if raw == 0:
        return None, f"{base}/current_now reads 0: cannot infer its unit or sign"
    if current_unit is None:
        units = [u for u, f in (("uA", 1e-6), ("mA", 1e-3)) if _plausible(abs(raw) * f * volts)]
        if len(units) != 1:
            return None, (
                f"{base}/current_now={raw:g} at {volts:.2f} V is {abs(raw) * 1e-6 * volts:.3g} W as uA and "
                f"{abs(raw) * 1e-3 * volts:.3g} W as mA: not exactly one plausible phone draw; set power.unit"
            )
        current_unit = units[0]
    how = "configured sign"
    if sign is None:
        if entry.status != CLEAN_STATUS:
            return None, f"battery is {entry.status!r}, so the sign of current_now cannot be inferred; set power.sign"
        sign, how = (1 if raw > 0 else -1), f"sign inferred from a discharging reading of {raw:g}"
    i_scale = {"uA": 1e-6, "mA": 1e-3}[current_unit]
    v_scale = {"uV": 1e-6, "mV": 1e-3}[v_unit]
    return (
        Meter(
            kind="battery",
            nodes=(f"{base}/voltage_now", f"{base}/current_now"),
            scale=(v_scale, i_scale),
            sign=float(sign),
            description=(
                f"battery fuel gauge {base} voltage_now x current_now ({v_unit}, {current_unit}, "
                f"{'positive' if sign > 0 else 'negative'} while discharging; {how})"
            ),
        ),
        None,
    )


def _power_now_meter(entry: Entry, base: str, sign: int | None) -> tuple[Meter | None, str | None]:
    raw = entry.power_now
    if raw is None or raw == 0:
        return None, f"{base} has neither a readable current_now nor power_now"
    if not _plausible(abs(raw) * 1e-6):
        return None, f"{base}/power_now reads {raw:g}: not a plausible phone draw in uW"
    if sign is None:
        if entry.status != CLEAN_STATUS:
            return None, f"battery is {entry.status!r}, so the sign of power_now cannot be inferred; set power.sign"
        sign = 1 if raw > 0 else -1
    return (
        Meter(
            kind="battery", nodes=(f"{base}/power_now",), scale=(1e-6,), sign=float(sign),
            description=f"battery fuel gauge {base}/power_now (uW, {'positive' if sign > 0 else 'negative'} "
            "while discharging)",
        ),
        None,
    )  # fmt: skip


def read_state(run: ShellRun, gauge: Gauge) -> BatteryState:
    """Status, level and temperature of the battery now (one round trip)."""
    status, out = run(["sh", "-c", _STATE_SCRIPT, "state", *state_nodes(gauge)])
    return parse_state(out.splitlines() if status == 0 else [])


def state_nodes(gauge: Gauge) -> tuple[str, str, str]:
    """The files read for a battery state, in the order :func:`parse_state` expects their values."""
    return gauge.status_node, gauge.capacity_node, gauge.temp_node


def parse_state(lines: Sequence[str]) -> BatteryState:
    """A battery state from the first line of each of :func:`state_nodes` ("-": unreadable, missing: unreadable)."""
    lines = [*lines[:3], *["-"] * (3 - len(lines[:3]))]
    capacity, temp = _number(lines[1]), _number(lines[2])
    return BatteryState(
        status=None if lines[0] == "-" else lines[0].strip(),
        level=capacity / 100.0 if capacity is not None and 0 <= capacity <= 100 else None,
        temp_c=temp / 10.0 if temp is not None else None,  # tenths of a degree (power_supply ABI)
    )


def _entry(line: str) -> Entry | None:
    fields = line.split("\t")
    if len(fields) != 9:
        return None
    name, kind, status, volt, curr, power, capacity, temp, _online = fields
    return Entry(
        name=name, type=kind, status=status, voltage_now=_number(volt), current_now=_number(curr),
        power_now=_number(power), capacity=_number(capacity), temp=_number(temp),
    )  # fmt: skip


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _voltage(raw: float | None) -> tuple[float | None, str]:
    if raw is not None and VOLTAGE_UV[0] <= raw <= VOLTAGE_UV[1]:
        return raw * 1e-6, "uV"
    if raw is not None and VOLTAGE_MV[0] <= raw <= VOLTAGE_MV[1]:
        return raw * 1e-3, "mV"
    return None, "uV"


def _plausible(watts: float) -> bool:
    return PLAUSIBLE_W[0] <= watts <= PLAUSIBLE_W[1]
