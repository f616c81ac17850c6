"""Energy and mean power over a time window, and energy per decoded frame.

Pure arithmetic on :class:`~farm.power.sampler.PowerSample` traces, kept apart from the sampler so that the
conventions (trapezoid rule, edges interpolated, baseline subtraction) are in one small place and testable
with known traces. A window the samples do not cover gives ``None``: power is then missing, never 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from farm.power.sampler import PowerSample


def energy_joules(
    samples: Sequence[PowerSample], t0: float, t1: float, *, max_gap_s: float | None = None
) -> float | None:
    """Trapezoid integral of watts over [t0, t1], with the watts at t0 and t1 interpolated linearly.

    None when fewer than 2 samples, when the samples do not reach from t0 to t1, or (if ``max_gap_s`` is
    given) when two consecutive samples touching the window are further apart than ``max_gap_s``.
    """
    if not (math.isfinite(t0) and math.isfinite(t1)):
        return None
    if t1 < t0:
        raise ValueError(f"window ends ({t1}) before it starts ({t0})")
    trace = sorted(samples, key=lambda s: s.t_s)
    if len(trace) < 2 or trace[0].t_s > t0 or trace[-1].t_s < t1:
        return None
    # the samples that bound and fill the window: last one at or before t0 .. first one at or after t1
    first = max(i for i, s in enumerate(trace) if s.t_s <= t0)
    last = min(i for i, s in enumerate(trace) if s.t_s >= t1)
    if last <= first:  # t0 == t1 exactly on a sample
        return 0.0
    span = trace[first : last + 1]
    if max_gap_s is not None and any(b.t_s - a.t_s > max_gap_s for a, b in itertools.pairwise(span)):
        return None
    points = [(t0, _at(span[0], span[1], t0))]
    points += [(s.t_s, s.watts) for s in span[1:-1]]
    points.append((t1, _at(span[-2], span[-1], t1)))
    return sum((tb - ta) * (wa + wb) / 2 for (ta, wa), (tb, wb) in itertools.pairwise(points))


def mean_watts(samples: Sequence[PowerSample], t0: float, t1: float, *, max_gap_s: float | None = None) -> float | None:
    """Time-weighted mean power over [t0, t1] (energy / duration); None when not covered or zero-length."""
    if not t1 > t0:
        return None
    energy = energy_joules(samples, t0, t1, max_gap_s=max_gap_s)
    return None if energy is None else energy / (t1 - t0)


def energy_per_frame(energy_j: float | None, baseline_w: float | None, duration_s: float, frames: int) -> float | None:
    """Decode energy above idle per frame: ``(energy_j - baseline_w * duration_s) / frames``.

    None when the energy or the baseline is missing, or there are no frames. The result may be negative
    when the decode drew less than the idle baseline (noise on a light load); it is reported as measured.
    """
    if energy_j is None or baseline_w is None or frames <= 0:
        return None
    if not (math.isfinite(energy_j) and math.isfinite(baseline_w) and math.isfinite(duration_s)):
        return None
    return (energy_j - baseline_w * duration_s) / frames


def _at(a: PowerSample, b: PowerSample, t: float) -> float:
    """Watts at t by linear interpolation between samples a and b (a.t_s <= t <= b.t_s)."""
    if b.t_s == a.t_s:
        return a.watts
    return a.watts + (b.watts - a.watts) * (t - a.t_s) / (b.t_s - a.t_s)
