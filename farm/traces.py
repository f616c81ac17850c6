"""A job's per-sample traces (power, hottest-zone temperature) over its decode window, bounded in size.

Why a trace and not only the job's mean: a device-lab engineer judges a power spike at the decoder's start, a
throttle two thirds through a long decode or a drifting baseline from the samples over time. The samples travel
from the session to the recorder in ``JobDone`` (across processes and hosts), so a trace is a small frozen value
of float tuples, never an array object, and is bounded: at most ``MAX_POINTS`` points per series, evenly
decimated (first and last sample kept) when the sampler took more. Times are seconds since the decode window's
start on the device's own clock (the clock the window is stamped with), so no clock offset is ever estimated.
A trace that could not be taken has no points and says why (``missing_reason``): it is never drawn as zeros.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

MAX_POINTS = 2000
"""Points kept per job and series: a 10 Hz sampler over a 200 s decode; longer traces are decimated evenly."""

POWER = "power_w"
TEMP = "temp_c"
UNITS = {POWER: "W", TEMP: "°C"}
"""The series a job can carry and their units (power: the meter's watts; temp: the hottest thermal zone)."""


@dataclass(frozen=True)
class Trace:
    """One series of one job: ``t_s`` ascending, seconds since the decode window's start; ``values`` alike.

    ``samples`` is how many samples fell in the window before decimation (equal to the points when none was
    needed). No points: the trace is missing and ``missing_reason`` says why.
    """

    series: str
    t_s: tuple[float, ...] = ()
    values: tuple[float, ...] = ()
    samples: int = 0
    missing_reason: str | None = None

    @property
    def unit(self) -> str:
        return UNITS[self.series]

    @property
    def points(self) -> list[tuple[float, float]]:
        return list(zip(self.t_s, self.values, strict=True))


def missing(series: str, reason: str) -> Trace:
    return Trace(series, missing_reason=reason)


def bounded(series: str, points: Sequence[tuple[float, float]], limit: int = MAX_POINTS) -> Trace:
    """A trace of ``points`` (time-ordered), decimated evenly to ``limit`` points, first and last kept.

    Values are kept to 6 significant digits and times to 0.1 ms: finer than any sampler here resolves, and the
    stored JSON stays about 20 bytes a point.
    """
    if limit < 2:
        raise ValueError(f"a trace needs at least 2 points, not {limit}")
    n = len(points)
    keep = points if n <= limit else [points[round(i * (n - 1) / (limit - 1))] for i in range(limit)]
    return Trace(
        series,
        tuple(round(t, 4) for t, _ in keep),
        tuple(float(f"{v:.6g}") for _, v in keep),
        n,
    )


def trapezoid_mean(trace: Trace) -> float | None:
    """Time-weighted mean of the trace (trapezoid rule), the way the job's mean power is integrated."""
    pts = trace.points
    if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
        return None
    area = sum((tb - ta) * (va + vb) / 2 for (ta, va), (tb, vb) in itertools.pairwise(pts))
    return area / (pts[-1][0] - pts[0][0])
