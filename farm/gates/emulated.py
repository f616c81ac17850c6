"""Which devices a gate on CPU timing judges: never one whose CPU is emulated.

Why: a QEMU TCG board's frame rate, decode time and (modelled or host-side) energy describe the binary
translator and the host's load, not the chip the bundle ships to (docs/qemu-boards.md). Gating them would fail
a release on a number no hardware produced, or pass one on it. So a timing gate leaves such a device out: its
line says so (verdict ``exempt``), the gate judges the real devices of its scope, and when none remains the
gate is ``missing`` like any other value nobody measured, so a run of emulated boards alone never passes a
speed gate. Quality, consistency, BD-rate and failure gates judge emulated boards like any other device: their
values do not depend on how fast the CPU ran.
"""

from __future__ import annotations

from dataclasses import dataclass

from farm.config.suite import Gate
from farm.gates.view import RunView
from farm.measures import cpu_timed_metrics

CPU_TIMED = frozenset(cpu_timed_metrics())
NOT_GATED = "EMULATED CPU, not a hardware measurement: not gated"


@dataclass(frozen=True)
class Judged:
    """A scope's devices split into those the gate judges and the emulated ones it leaves out."""

    devices: list[str]
    exempt: list[str]

    def note(self) -> str:
        return "; ".join(f"{d}: {NOT_GATED}" for d in self.exempt)


def judged(gate: Gate, view: RunView, devices: list[str]) -> Judged:
    """The scope's devices a gate judges: all of them, unless the gate times the CPU and some are emulated."""
    if gate.metric not in CPU_TIMED or not view.emulated:
        return Judged(devices, [])
    return Judged([d for d in devices if d not in view.emulated], [d for d in devices if d in view.emulated])


def any_real(view: RunView) -> bool:
    """Whether the run has a device whose CPU timing is a hardware measurement."""
    return any(d not in view.emulated for d in view.devices)
