"""An instrument read through the device's own shell: the on-device sampler over a :class:`Meter`'s sysfs nodes.

RAPL counters, hwmon channels (an INA3221 rail), a phone's fuel gauge and any explicitly configured sysfs file
differ only in which nodes are read and what their numbers mean (the :class:`Meter`); they are all sampled the
same way, by the ``sh`` loop of :mod:`farm.power.sampler` running on the device, so one class serves them all.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable
from dataclasses import dataclass

from farm.errors import FarmError
from farm.power import sampler
from farm.power.instrument import Channel, ChannelKind, DeviceShell, Window
from farm.power.meters import Meter
from farm.power.sampler import PowerSample
from farm.transports.base import Background

# what each raw node of a meter kind is (pairs alternate voltage, current)
_NODE_KINDS: dict[str, tuple[ChannelKind, str]] = {
    "rapl": ("energy", "J"),
    "hwmon_power": ("power", "W"),
}


@dataclass(frozen=True)
class SysfsInstrument:
    """``meter`` sampled on ``shell``'s device by the sh sampler (an :class:`~farm.power.instrument.Instrument`)."""

    shell: DeviceShell
    meter: Meter

    @property
    def description(self) -> str:
        return self.meter.description

    @property
    def channels(self) -> tuple[Channel, ...]:
        """One channel per node read, named by the node's directory (``intel-rapl:0``, ``hwmon3``, ``battery``)."""
        out: list[Channel] = []
        for i, node in enumerate(self.meter.nodes):
            site = posixpath.basename(posixpath.dirname(node)) or node
            kind: ChannelKind
            if self.meter.pairs:
                kind, unit = ("voltage", "V") if i % 2 == 0 else ("current", "A")
            elif self.meter.is_counter:
                kind, unit = "energy", "J"
            else:
                kind, unit = _NODE_KINDS.get(self.meter.kind, ("power", "W"))
            out.append(Channel(site, kind, unit))
        return tuple(out)

    def measure(self, window: Window, during: Callable[[], object]) -> list[PowerSample]:
        """Sample on the device while ``during`` runs; the raw file stays in the job folder for inspection.

        Samples must bracket the window: one on each side for an instantaneous meter; a counter's reading sits
        between two samples, so it needs two on each side. Waiting for them on the device (not a fixed sleep)
        keeps that true when a loaded device starts or runs the sampler late.
        """
        shell, meter = self.shell, self.meter
        need = 2 if meter.is_counter else 1
        out = f"{window.folder}/{window.name}.power"
        proc = spawn_sampler(shell, meter, window.hz, out, window.lifetime_s)
        try:
            shell.transport.run(sampler.await_samples_argv(out, first=need), timeout=shell.command_timeout)
            during()
            shell.transport.run(sampler.await_samples_argv(out, more=need), timeout=shell.command_timeout)
        finally:
            stop(shell, proc)
        return sampler.parse_samples(meter, shell.read_text(out))


def spawn_sampler(shell: DeviceShell, meter: Meter, hz: float, out: str, lifetime_s: float) -> Background:
    """Start the sampler for ``meter``; a sampler whose kill is lost (dropped link) still ends after
    ``lifetime_s`` on the device, because ``timeout`` bounds its life there."""
    return shell.spawn(["timeout", f"{lifetime_s:g}", *sampler.sampler_argv(meter, hz, out)])


def stop(shell: DeviceShell, proc: Background) -> None:
    """Kill a sampler; a link already gone cannot kill it, and its lifetime bound ends it instead."""
    with contextlib.suppress(FarmError):
        shell.kill(proc)
