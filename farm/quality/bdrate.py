"""Bjøntegaard-delta rate (BD-rate) between an anchor and a test rate-quality curve.

BD-rate answers "how many more (or fewer) bits does the test codec spend for the same quality, averaged
over the quality range both codecs cover". The choices below follow the farm's design (docs/bd-rate.md):

* **Interpolate log(rate) as a function of quality.** The average is taken over quality (the x axis), so a
  rate difference is read horizontally at equal quality; averaging in log(rate) makes it a geometric mean
  of rate ratios, and ``exp(mean) - 1`` turns it back into a fraction. Natural log is used throughout; the
  base cancels, so results equal those of log10-based tools.
* **PCHIP, not the original cubic polynomial fit.** Bjøntegaard's 2001 method fits one cubic through four
  points, which overshoots and can turn non-monotonic. Piecewise cubic Hermite interpolation
  (JCTVC-E137 / MATLAB ``pchip`` / ``scipy.interpolate.PchipInterpolator``) passes through every point,
  preserves monotonicity and works for any number of points >= 4.
* **Exact integration of the interpolant.** The PCHIP is a piecewise cubic, so its integral over
  ``[q_lo, q_hi]`` is computed in closed form (``PchipInterpolator.integrate``). Sampling plus the
  trapezoid rule (as newer VMAF tooling does) adds an error that depends on the sample count.
* **Only the overlapping quality range, and refuse rather than guess.** Extrapolating an RD curve is
  meaningless, so the integral runs over ``[max(min q), min(max q)]``. Curves that are too short, carry
  non-positive or non-finite values, repeat a rate, or whose quality does not strictly rise with rate are an
  error (:class:`BDRateError`) naming the curve and the points, never a number: a gate on a BD-rate that
  could not be computed must show up as missing, not as a silently wrong pass. A small overlap still gives
  a number but adds a warning, because then it describes only a sliver of either curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["MIN_OVERLAP", "MIN_POINTS", "BDRate", "BDRateError", "bd_rate"]

MIN_POINTS = 4
"""A curve needs at least this many (rate, quality) points."""

MIN_OVERLAP = 0.75
"""Below this overlap fraction the result carries a warning."""


class BDRateError(ValueError):
    """The BD-rate cannot be computed; the message names the curve and the offending points."""


@dataclass(frozen=True)
class BDRate:
    """Result of :func:`bd_rate`.

    ``value`` is a fraction: -0.05 means the test codec needs 5% fewer bits than the anchor for the same
    quality. ``overlap`` is the length of the shared quality interval divided by the quality span of the
    narrower curve (0..1). ``warnings`` holds human-readable caveats (e.g. a small overlap).
    """

    value: float
    overlap: float
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class _Point:
    index: int  # position in the caller's sequence, for error messages
    rate: float
    quality: float

    def __str__(self) -> str:
        return f"#{self.index} (rate={self.rate!r}, quality={self.quality!r})"


def _fail(curve: str, why: str, points: Sequence[_Point | str]) -> BDRateError:
    listed = "; ".join(str(p) for p in points)
    return BDRateError(f"{curve} curve: {why}: {listed}" if listed else f"{curve} curve: {why}")


def _validated(curve: str, raw: Sequence[tuple[float, float]]) -> list[_Point]:
    """Check one curve and return its points sorted by rate (ties are an error, reported here)."""
    points: list[_Point] = []
    malformed: list[str] = []
    for index, item in enumerate(raw):
        try:
            rate, quality = item
            points.append(_Point(index, float(rate), float(quality)))
        except (TypeError, ValueError):
            malformed.append(f"#{index} {item!r}")
    if malformed:
        raise _fail(curve, "points must be (rate, quality) pairs of numbers", malformed)
    if len(points) < MIN_POINTS:
        raise _fail(curve, f"needs at least {MIN_POINTS} points, got {len(points)}", points)

    bad_rate = [p for p in points if not (math.isfinite(p.rate) and p.rate > 0.0)]
    if bad_rate:
        raise _fail(curve, "rate must be finite and > 0", bad_rate)
    bad_quality = [p for p in points if not math.isfinite(p.quality)]
    if bad_quality:
        raise _fail(curve, "quality must be finite (cap an infinite PSNR before calling)", bad_quality)

    points.sort(key=lambda p: p.rate)
    duplicates: list[str] = []
    for lower, upper in pairwise(points):
        if lower.rate == upper.rate:
            duplicates.append(f"{lower} and {upper}")
    if duplicates:
        raise _fail(curve, "duplicate rates", duplicates)

    not_rising: list[str] = []
    for lower, upper in pairwise(points):
        if not upper.quality > lower.quality:
            not_rising.append(f"{lower} -> {upper}")
    if not_rising:
        raise _fail(curve, "non-monotonic: quality must strictly increase with rate, but does not between", not_rising)
    return points


def _log_rate_integral(points: list[_Point], q_lo: float, q_hi: float) -> float:
    """Exact integral over [q_lo, q_hi] of the PCHIP through (quality, ln rate)."""
    import numpy as np  # scipy.interpolate is imported when a BD-rate is computed, not with the module
    from scipy.interpolate import PchipInterpolator

    quality = np.array([p.quality for p in points], dtype=np.float64)
    log_rate = np.log(np.array([p.rate for p in points], dtype=np.float64))
    return float(PchipInterpolator(quality, log_rate, extrapolate=False).integrate(q_lo, q_hi))


def bd_rate(anchor: Sequence[tuple[float, float]], test: Sequence[tuple[float, float]]) -> BDRate:
    """BD-rate of ``test`` against ``anchor``; points are ``(rate, quality)``.

    Rates may be in any positive unit (kbps, bytes, bpp) as long as both curves use the same one; quality is
    any metric that rises with rate (PSNR in dB, SSIM, VMAF). Points may come in any order.

    Raises :class:`BDRateError` for fewer than 4 points on a curve, non-positive or non-finite rates,
    non-finite quality, duplicate rates, quality not strictly increasing with rate, or quality ranges that
    do not overlap.
    """
    a = _validated("anchor", anchor)
    t = _validated("test", test)

    a_lo, a_hi = a[0].quality, a[-1].quality
    t_lo, t_hi = t[0].quality, t[-1].quality
    q_lo, q_hi = max(a_lo, t_lo), min(a_hi, t_hi)
    if not q_hi > q_lo:
        raise BDRateError(
            f"quality ranges do not overlap: anchor covers [{a_lo!r}, {a_hi!r}], test covers [{t_lo!r}, {t_hi!r}]"
        )

    overlap = min(1.0, (q_hi - q_lo) / min(a_hi - a_lo, t_hi - t_lo))
    warnings: list[str] = []
    if overlap < MIN_OVERLAP:
        warnings.append(
            f"quality overlap [{q_lo:g}, {q_hi:g}] is only {overlap:.0%} of the narrower curve's span "
            f"(below {MIN_OVERLAP:.0%}): the BD-rate describes a small part of the curves"
        )

    mean_log_ratio = (_log_rate_integral(t, q_lo, q_hi) - _log_rate_integral(a, q_lo, q_hi)) / (q_hi - q_lo)
    return BDRate(value=math.expm1(mean_log_ratio), overlap=overlap, warnings=tuple(warnings))
