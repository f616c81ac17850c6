"""Find a device's power instrument: a registry of power sources, chosen by devices.yaml and what the device offers.

Why a registry: which meter a device has used to be decided by platform strings inside device code
(``platform == "android"``), so a Jetson's INA3221 or a bench meter meant editing the device classes. Now each
source is a module in ``farm/power/sources/`` that registers a :class:`PowerSource`: the ``power.meter`` values
it answers, which device capability it needs (a POSIX shell, iOS diagnostics: labgrid's bindings), and a probe.

``power.meter: auto`` tries the sources the device kind prefers, in its order (a phone's fuel gauge before its
sysfs meters; a laptop used as a board has a battery too, but its gauge is not what a board is measured with,
so a plain POSIX device does not list it). An explicit meter tries every source that answers that name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from farm.config.inventory import PowerSettings
from farm.power.instrument import Probe


@dataclass(frozen=True)
class ProbeContext:
    """What a source may need beyond the settings: whether the meter was named explicitly (then the source's
    answer is final even when it found nothing), and whether the charger was just suspended (a fuel gauge may
    take seconds to say Discharging)."""

    explicit: bool
    charger_suspended: bool = False


@dataclass(frozen=True)
class PowerSource:
    """One kind of power meter. ``offered(target)`` says whether the device has what the source needs;
    ``probe`` returns the instrument (or why none), or None when this source found nothing and ``auto`` should
    try the next one."""

    name: str
    meters: frozenset[str]
    offered: Callable[[object], bool]
    probe: Callable[[object, PowerSettings, ProbeContext], Probe | None]


_SOURCES: dict[str, PowerSource] = {}
_LOADED = False


def register(source: PowerSource) -> PowerSource:
    """Add (or replace, by name) a power source; source modules call this when imported."""
    _SOURCES[source.name] = source
    return source


def sources() -> dict[str, PowerSource]:
    """Every registered source by name, after importing each module of ``farm.power.sources`` once."""
    global _LOADED
    if not _LOADED:
        package = importlib.import_module("farm.power.sources")
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
        _LOADED = True
    return dict(_SOURCES)


def probe(target: object, settings: PowerSettings, *, auto: Sequence[str], charger_suspended: bool = False) -> Probe:
    """The instrument measuring ``target`` per ``settings.meter``; ``auto`` is the device kind's source order."""
    if settings.meter == "none":
        return Probe(None)
    known = sources()
    if settings.meter == "auto":
        context = ProbeContext(explicit=False, charger_suspended=charger_suspended)
        for name in auto:
            source = known.get(name)
            if source is None or not source.offered(target):
                continue
            found = source.probe(target, settings, context)
            if found is not None:
                return found
        return Probe(None)
    context = ProbeContext(explicit=True, charger_suspended=charger_suspended)
    candidates = [s for s in known.values() if settings.meter in s.meters and s.offered(target)]
    for source in sorted(candidates, key=lambda s: s.name):
        found = source.probe(target, settings, context)
        if found is not None:
            return found
    if candidates:
        return Probe(None)
    offered = sorted({m for s in known.values() if s.offered(target) for m in s.meters})
    return Probe(None, f"meter {settings.meter!r} does not exist on this device (use auto or {' or '.join(offered)})")
