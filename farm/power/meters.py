"""Which power meter a device has, and how its raw sysfs numbers become watts.

A meter is a list of sysfs files the on-device sampler reads, plus what each raw number means (scale to
base units, sign, counter wrap-around). Finding one is a single ``sh`` round trip through the device's own
shell, so it works the same on this machine, a Linux board over SSH and an Android phone over ADB. The search
root reaches the script only as a positional argument, never pasted into its source.

Auto-detection order: RAPL package energy counters (summed over packages), then one hwmon channel (a power
reading, else a voltage x current pair such as an INA2xx/INA3221 rail; a channel labelled as the board's input
is preferred). Anything else (Android batteries, external meters, a specific rail) is configured explicitly in
devices.yaml and turned into a :class:`Meter` by :func:`meter_from_settings`. No meter means ``None``: power is
then reported as missing, never as 0.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from farm.errors import InputError, Problem

MeterKind = Literal["rapl", "hwmon_power", "hwmon_vi", "sysfs", "battery"]

ShellRun = Callable[[Sequence[str]], tuple[int, str]]
"""Runs argv on the device and returns (exit status, stdout)."""


@dataclass(frozen=True)
class Meter:
    """What the sampler reads and how to turn it into watts.

    ``scale[i]`` multiplies raw value ``i`` into base units: J for ``rapl`` (and ``sysfs`` with ``counter``),
    W for ``hwmon_power``/``sysfs``, and alternating V, A for ``hwmon_vi`` (nodes are voltage, current pairs) and a
    two-node ``battery`` (a fuel gauge's voltage_now, current_now; one node is its power_now).
    ``sign`` is applied to the final watts so that a device consuming power reads positive. ``wrap`` is the
    range of an energy counter in J (RAPL's ``max_energy_range_uj``): a counter that goes backwards has wrapped.
    ``counter`` marks a ``sysfs`` meter whose nodes are cumulative energy counters (RAPL always is one).
    """

    kind: MeterKind
    nodes: tuple[str, ...]
    scale: tuple[float, ...]
    sign: float = 1.0
    wrap: float | None = None
    description: str = ""
    counter: bool = False

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("a meter needs at least one node")
        if len(self.scale) != len(self.nodes):
            raise ValueError(f"{len(self.nodes)} nodes but {len(self.scale)} scale factors")
        if self.pairs and len(self.nodes) % 2:
            raise ValueError("hwmon_vi nodes come in (voltage, current) pairs")
        if self.sign not in (1.0, -1.0):
            raise ValueError(f"sign must be 1 or -1, not {self.sign}")
        if self.wrap is not None and not (math.isfinite(self.wrap) and self.wrap > 0):
            raise ValueError(f"wrap must be a positive number of joules, not {self.wrap}")

    @property
    def pairs(self) -> bool:
        """True when the nodes are (voltage, current) pairs whose products are summed."""
        return self.kind == "hwmon_vi" or (self.kind == "battery" and len(self.nodes) == 2)

    @property
    def is_counter(self) -> bool:
        """True when the nodes are cumulative energy counters (power comes from their differences)."""
        return self.kind == "rapl" or self.counter


# ---------------------------------------------------------------------------------------------------------
# probing
# ---------------------------------------------------------------------------------------------------------

# $1 = sysfs root. One line per readable candidate, tab-separated, names relative to the class directory
# (hwmon/powercap entry names and attribute names never contain tabs or newlines, whatever the root is):
#   rapl <entry> <max_energy_range_uj|-> <name|->
#   hwp  <entry> <power attr>  <name|-> <label>
#   hwvi <entry> <volt attr> <curr attr> <name|-> <label>
# A candidate is listed only if its value could actually be read as a number (RAPL energy_uj is root-only on
# recent kernels; an unpowered INA channel reads EIO).
_PROBE_SCRIPT = r"""
r=$1
for d in "$r"/class/powercap/intel-rapl:*; do
  b=${d##*/}
  case $b in *:*:*) continue ;; esac
  [ -r "$d/energy_uj" ] || continue
  v=; { read -r v <"$d/energy_uj"; } 2>/dev/null
  case $v in '' | *[!0-9]*) continue ;; esac
  m=; { read -r m <"$d/max_energy_range_uj"; } 2>/dev/null
  n=; { read -r n <"$d/name"; } 2>/dev/null
  printf 'rapl\t%s\t%s\t%s\n' "$b" "${m:--}" "${n:--}"
done
for h in "$r"/class/hwmon/hwmon*; do
  [ -d "$h" ] || continue
  b=${h##*/}
  n=; { read -r n <"$h/name"; } 2>/dev/null
  for s in "" device/; do
    for f in "$h/$s"power*_input; do
      [ -r "$f" ] || continue
      v=; { read -r v <"$f"; } 2>/dev/null
      case $v in '' | *[!0-9-]*) continue ;; esac
      l=; { read -r l <"${f%_input}_label"; } 2>/dev/null
      printf 'hwp\t%s\t%s\t%s\t%s\n' "$b" "$s${f##*/}" "${n:--}" "$l"
    done
    for f in "$h/$s"curr*_input; do
      [ -r "$f" ] || continue
      v=; { read -r v <"$f"; } 2>/dev/null
      case $v in '' | *[!0-9-]*) continue ;; esac
      c=${f##*/}; i=${c#curr}; i=${i%_input}
      u="$h/${s}in${i}_input"
      if [ ! -r "$u" ]; then
        u=; k=0
        for g in "$h/$s"in*_input; do [ -r "$g" ] && { u=$g; k=$((k + 1)); }; done
        [ "$k" = 1 ] || continue
      fi
      w=; { read -r w <"$u"; } 2>/dev/null
      case $w in '' | *[!0-9-]*) continue ;; esac
      l=; { read -r l <"${f%_input}_label"; } 2>/dev/null
      [ -n "$l" ] || { read -r l <"${u%_input}_label"; } 2>/dev/null
      printf 'hwvi\t%s\t%s\t%s\t%s\t%s\n' "$b" "$s${u##*/}" "$s$c" "${n:--}" "$l"
    done
  done
done
exit 0
"""

# Labels that name a board's total input rather than one rail (INA3221 on Jetson: "VDD_IN", "POM_5V_IN").
_INPUT_LABEL = re.compile(r"(?i)(vdd_?in\b|\bvin\b|_in$|^in$|input|total|system|board)")
_DIGITS = re.compile(r"\d+")

_UW = 1e-6
_MV = 1e-3
_MA = 1e-3
_UJ = 1e-6


def probe(run: ShellRun, root: str = "/sys") -> Meter | None:
    """Find a readable power meter on the device in one shell round trip; None if it has none."""
    if "\n" in root or "\0" in root:
        raise ValueError("sysfs root must not contain a newline or NUL")
    status, out = run(["sh", "-c", _PROBE_SCRIPT, "probe", root])
    if status != 0:
        return None
    rapl: list[tuple[int, str, str, str]] = []
    hwmon: list[tuple[tuple[int, int, int, int], Meter]] = []
    for line in out.splitlines():
        fields = line.split("\t")
        if fields[0] == "rapl" and len(fields) == 4:
            _, entry, max_range, name = fields
            if name == "-" or name.startswith("package"):
                rapl.append((_index(entry), entry, max_range, name))
        elif fields[0] == "hwp" and len(fields) >= 5:
            entry, attr, name, label = fields[1], fields[2], fields[3], "\t".join(fields[4:])
            meter = Meter(
                kind="hwmon_power",
                nodes=(posixpath.join(root, "class", "hwmon", entry, attr),),
                scale=(_UW,),
                description=_hwmon_description(entry, name, label, attr),
            )
            hwmon.append(((_label_rank(label), 0, _index(entry), _index(attr)), meter))
        elif fields[0] == "hwvi" and len(fields) >= 6:
            entry, vattr, cattr, name, label = fields[1], fields[2], fields[3], fields[4], "\t".join(fields[5:])
            meter = Meter(
                kind="hwmon_vi",
                nodes=(
                    posixpath.join(root, "class", "hwmon", entry, vattr),
                    posixpath.join(root, "class", "hwmon", entry, cattr),
                ),
                scale=(_MV, _MA),
                description=_hwmon_description(entry, name, label, f"{vattr} x {cattr}"),
            )
            hwmon.append(((_label_rank(label), 1, _index(entry), _index(cattr)), meter))
    if rapl:
        rapl.sort()
        return _rapl_meter(root, rapl)
    if hwmon:
        hwmon.sort(key=lambda item: item[0])
        return hwmon[0][1]
    return None


def _rapl_meter(root: str, domains: list[tuple[int, str, str, str]]) -> Meter:
    ranges = {max_range for _, _, max_range, _ in domains}
    wrap: float | None = None
    if len(ranges) == 1 and (only := ranges.pop()).isdigit() and int(only) > 0:
        wrap = int(only) * _UJ
    names = "+".join(name if name != "-" else entry for _, entry, _, name in domains)
    return Meter(
        kind="rapl",
        nodes=tuple(posixpath.join(root, "class", "powercap", entry, "energy_uj") for _, entry, _, _ in domains),
        scale=(_UJ,) * len(domains),
        wrap=wrap,
        description=f"RAPL {names} energy_uj" + (" (summed)" if len(domains) > 1 else ""),
    )


def _index(name: str) -> int:
    """First number in an entry/attribute name (hwmon10 sorts after hwmon2)."""
    m = _DIGITS.search(name)
    return int(m.group()) if m else 0


def _label_rank(label: str) -> int:
    return 0 if label and _INPUT_LABEL.search(label) else 1


def _hwmon_description(entry: str, name: str, label: str, attrs: str) -> str:
    who = entry if name == "-" else f"{entry} ({name})"
    return f"hwmon {who} {attrs}" + (f" [{label}]" if label else "")


# ---------------------------------------------------------------------------------------------------------
# explicit meters from devices.yaml
# ---------------------------------------------------------------------------------------------------------

# unit -> (dimension, factor to base unit). "u" and the micro signs are all accepted for micro.
_UNITS: dict[str, tuple[str, float]] = {
    f"{prefix}{dim}": (dim, factor)
    for dim in ("W", "J", "V", "A")
    for prefix, factor in (("", 1.0), ("m", 1e-3), ("u", 1e-6), ("n", 1e-9))
}


def meter_from_settings(settings: Mapping[str, Any]) -> Meter:
    """An explicitly configured meter (the devices.yaml ``power`` block).

    ``meter``: ``rapl`` (energy counters, default unit uJ), ``hwmon`` (power nodes in uW, or voltage/current
    pairs in mV,mA) or ``sysfs`` (any nodes; ``unit`` required). ``unit`` is one unit for every node or a
    comma-separated list, one per node: all power units (summed), all energy units (a counter, summed), or
    alternating voltage, current units (``"uV,uA"``: V x A per pair, summed). ``sign``: 1 or -1. Optional
    ``wrap``: counter range in the node's unit. ``auto``/``none`` are not explicit meters and are refused.
    """
    kind = settings.get("meter")
    if kind not in ("rapl", "hwmon", "sysfs"):
        raise InputError(f"power.meter: {kind!r} is not an explicit meter (rapl, hwmon or sysfs)")
    kind = str(kind)
    nodes, sign, unit = _explicit_fields(kind, settings)
    dims, scale = _units(unit, len(nodes))
    if all(d == "J" for d in dims):
        return _counter_meter(kind, nodes, unit, scale, sign, settings.get("wrap"))
    if kind == "rapl":
        raise InputError(f"power.unit: rapl nodes are energy counters; {unit!r} is not an energy unit")
    if all(d == "W" for d in dims):
        return Meter(
            kind="hwmon_power" if kind == "hwmon" else "sysfs",
            nodes=nodes,
            scale=scale,
            sign=float(sign),
            description=_explicit_description(kind, "power", nodes, unit, sign),
        )
    if len(dims) % 2 == 0 and all(d == "V" for d in dims[0::2]) and all(d == "A" for d in dims[1::2]):
        return Meter(
            kind="hwmon_vi",
            nodes=nodes,
            scale=scale,
            sign=float(sign),
            description=_explicit_description(kind, "V x A", nodes, unit, sign),
        )
    raise InputError(f"power.unit: {unit!r}: expected all power, all energy, or alternating voltage,current units")


def _explicit_fields(kind: str, settings: Mapping[str, Any]) -> tuple[tuple[str, ...], int, str]:
    """Nodes, sign and unit of an explicit meter, every problem reported at once (a config is fixed in one go)."""
    problems: list[str] = []
    raw_nodes = settings.get("nodes") or ()
    if isinstance(raw_nodes, str):
        raw_nodes = (raw_nodes,)
    nodes = tuple(str(n) for n in raw_nodes)
    if not nodes:
        problems.append(f"power.nodes: meter {kind!r} needs at least one node path")
    for node in nodes:
        if not node.startswith("/") or "\n" in node or "\0" in node:
            problems.append(f"power.nodes: {node!r} is not an absolute path on the device")
    sign = settings.get("sign")
    sign = 1 if sign is None else sign
    if sign not in (1, -1):
        problems.append(f"power.sign: must be 1 or -1, not {sign!r}")
    unit = settings.get("unit")
    if unit is None and kind == "rapl":
        unit = "uJ"  # powercap energy_uj
    elif unit is None and kind == "hwmon":  # the hwmon sysfs ABI: power*_input uW, in*_input mV, curr*_input mA
        unit = "mV,mA" if nodes and len(nodes) % 2 == 0 and _looks_vi(nodes) else "uW"
    if unit is None:
        problems.append(f"power.unit: meter {kind!r} needs a unit (e.g. uW, mW, W, uJ, or uV,uA)")
    if problems:
        raise InputError([Problem("", None, "", p) for p in problems])
    return nodes, int(sign), str(unit)


def _counter_meter(
    kind: str, nodes: tuple[str, ...], unit: str, scale: tuple[float, ...], sign: int, wrap_raw: str | float | None
) -> Meter:
    """An energy-counter meter; ``wrap`` is given in the node's unit and kept in joules."""
    if kind == "hwmon":
        raise InputError("power.unit: hwmon energy counters: use meter 'sysfs' with an energy unit")
    try:
        wrap = float(wrap_raw) * scale[0] if wrap_raw is not None else None
    except (TypeError, ValueError):
        raise InputError(f"power.wrap: {wrap_raw!r} is not a number") from None
    if wrap is not None and not (math.isfinite(wrap) and wrap > 0):
        raise InputError(f"power.wrap: {wrap_raw!r} must be a positive counter range")
    return Meter(
        kind="rapl" if kind == "rapl" else "sysfs",
        nodes=nodes,
        scale=scale,
        sign=float(sign),
        wrap=wrap,
        counter=kind != "rapl",
        description=_explicit_description(kind, "energy counter", nodes, unit, sign),
    )


def _looks_vi(nodes: Sequence[str]) -> bool:
    names = [posixpath.basename(n) for n in nodes]
    return all(v.startswith("in") for v in names[0::2]) and all(c.startswith("curr") for c in names[1::2])


def _units(unit: str, count: int) -> tuple[list[str], tuple[float, ...]]:
    parts = [p.strip().replace("\u00b5", "u").replace("\u03bc", "u") for p in unit.split(",")]
    if len(parts) == 1:
        parts *= count
    if len(parts) != count:
        raise InputError(f"power.unit: {len(parts)} units for {count} nodes (give one, or one per node)")
    unknown = [p for p in parts if p not in _UNITS]
    if unknown:
        raise InputError(f"power.unit: unknown unit {unknown[0]!r} (W, mW, uW, J, mJ, uJ, V, mV, uV, A, mA, uA)")
    return [_UNITS[p][0] for p in parts], tuple(_UNITS[p][1] for p in parts)


def _explicit_description(kind: str, what: str, nodes: Sequence[str], unit: str, sign: Any) -> str:
    shown = ", ".join(nodes)
    return f"{kind} {what} {shown} ({unit}{', sign -1' if sign == -1 else ''})"
