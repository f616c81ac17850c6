"""The measurement maths of one job: timing, power, thermal and battery, from what the device reported.

Pure functions of a decode's outcome and the samples taken around it, so they are tested without a device and
run wherever the session runs. A value that could not be measured is None with its reason, never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from farm.config.suite import Suite
from farm.devices.base import DecodeOutcome
from farm.measures import Measurement, measurement
from farm.power import energy as power_energy
from farm.power.battery import BatteryState
from farm.power.sampler import PowerSample
from farm.timing import frame_stats
from farm.traces import POWER, TEMP, Trace, bounded, missing


@dataclass(frozen=True)
class PowerContext:
    """How power was measured on this device for the whole session (the same for each of its jobs)."""

    meter: str | None  # the meter's description; None: the device has no usable meter
    no_meter_reason: str | None
    sampled_on: str
    baseline_w: float | None


def failure(outcome: DecodeOutcome, timeout_s: float) -> str | None:
    """Why a decode failed, in the words a codec engineer needs (None: it did not)."""
    if outcome.timed_out:
        return f"decoder timed out after {timeout_s:g}s and was killed"
    if outcome.failure is not None:
        return outcome.failure
    if outcome.exit_status != 0:
        tail = outcome.stderr_tail.strip().splitlines()[-1:] if outcome.stderr_tail.strip() else []
        return f"decoder exited {outcome.exit_status}" + (f": {tail[0][:300]}" if tail else "")
    if outcome.output_sha is None:
        return "decoder exited 0 but wrote no output"
    if outcome.stats_error:
        return f"decoder stats malformed: {outcome.stats_error}"
    return None


def timing(outcome: DecodeOutcome, frames: int | None, suite: Suite, fps: float) -> list[Measurement]:
    """fps and frame-time quantiles in steady state after warm-up; wall time including start-up apart."""
    wall = outcome.end_ns - outcome.start_ns if outcome.start_ns is not None and outcome.end_ns is not None else None
    n = frames or len(outcome.frame_times_ns)
    stats = frame_stats(outcome.frame_times_ns, warmup=suite.warmup_frames, sequence_fps=fps, wall_ns=wall, frames=n)
    conv = (
        f"{stats.source}; steady state after {suite.warmup_frames} warm-up frames; "
        f"deadline {1000 / fps:.3f} ms; wall from device `date +%s%N` incl. start-up"
    )
    return [
        measurement(name, value, conv, None if value is not None else f"not measurable ({stats.source} timing)")
        for name, value in stats.as_metrics().items()
    ]


def power(
    outcome: DecodeOutcome, frames: int, samples: Sequence[PowerSample], ctx: PowerContext, hz: float,
    charging: str | None,
) -> list[Measurement]:  # fmt: skip
    """Mean power, energy and energy per frame over the decode window, net of the idle baseline."""
    power_w = energy_j = per_frame = None
    reason = None
    if ctx.meter is None:
        reason = f"no usable power meter: {ctx.no_meter_reason}" if ctx.no_meter_reason else "device has no power meter"
    elif outcome.start_ns is not None and outcome.end_ns is not None:
        t0, t1 = outcome.start_ns / 1e9, outcome.end_ns / 1e9
        power_w = power_energy.mean_watts(list(samples), t0, t1)
        energy_j = power_energy.energy_joules(list(samples), t0, t1)
        per_frame = power_energy.energy_per_frame(energy_j, ctx.baseline_w, t1 - t0, frames)
        if energy_j is None:
            reason = "power samples did not cover the decode window"
        elif per_frame is None:
            reason = "no idle baseline"
    if charging is not None:
        power_w = energy_j = per_frame = None
        reason = charging
    conv = f"{ctx.meter}; {hz:g} Hz {ctx.sampled_on}; trapezoid over decode window" if ctx.meter else "no meter"
    out = [
        measurement("power_w", power_w, conv, None if power_w is not None else reason),
        measurement("energy_j", energy_j, conv, None if energy_j is not None else reason),
        measurement("energy_per_frame_j", per_frame, conv + "; (E - baseline_w*t)/frames",
                    None if per_frame is not None else reason),
    ]  # fmt: skip
    if ctx.baseline_w is not None:
        out.append(measurement("baseline_w", ctx.baseline_w, conv + "; idle before jobs"))
    return out


def power_trace(
    outcome: DecodeOutcome, samples: Sequence[PowerSample], ctx: PowerContext, charging: str | None
) -> Trace:
    """The power samples inside the decode window, edges interpolated as the energy integral does them.

    So the trace's trapezoid mean is the job's ``power_w`` (up to decimation). Missing for the same reasons as
    the job's mean power: no meter, a phone on its charger (the gauge reads charger minus load), no window.
    """
    if charging is not None:  # first, as for the mean: the charger is what the engineer can act on
        return missing(POWER, charging)
    if ctx.meter is None:
        return missing(POWER, f"no usable power meter: {ctx.no_meter_reason}" if ctx.no_meter_reason
                       else "device has no power meter")  # fmt: skip
    window = _window(outcome)
    if window is None:
        return missing(POWER, "the decode window was not stamped on the device (the decoder did not run)")
    t0, t1 = window
    pts = _clipped(sorted((s.t_s, s.watts) for s in samples), t0, t1)
    if len(pts) < 2:
        return missing(POWER, f"{len(pts)} power sample(s) inside the decode window ({len(samples)} taken)")
    return bounded(POWER, [(t - t0, w) for t, w in pts])


def temp_trace(outcome: DecodeOutcome, timed: Sequence[tuple[float, float]], untimed: int, zones: bool) -> Trace:
    """The hottest zone's temperature at each thermal sample inside the decode window (device clock)."""
    if not zones:
        return missing(TEMP, "no readable thermal zone")
    if not timed and untimed:
        why = "measured around the decode (iOS, an external meter), not by its decode script: no trace over the window"
        return missing(TEMP, f"{untimed} thermal sample(s) without device time: {why}")
    window = _window(outcome)
    if window is None:
        return missing(TEMP, "the decode window was not stamped on the device (the decoder did not run)")
    t0, t1 = window
    pts = [(t - t0, c) for t, c in sorted(timed) if t0 <= t <= t1]
    if not pts:
        return missing(TEMP, f"no thermal sample inside the decode window ({len(timed)} taken around it)")
    return bounded(TEMP, pts)


def _window(outcome: DecodeOutcome) -> tuple[float, float] | None:
    if outcome.start_ns is None or outcome.end_ns is None or outcome.end_ns < outcome.start_ns:
        return None
    return outcome.start_ns / 1e9, outcome.end_ns / 1e9


def _clipped(pts: Sequence[tuple[float, float]], t0: float, t1: float) -> list[tuple[float, float]]:
    """Points inside [t0, t1], plus t0 and t1 themselves interpolated from the samples around them."""
    inside = [p for p in pts if t0 <= p[0] <= t1]
    before = [p for p in pts if p[0] < t0]
    after = [p for p in pts if p[0] > t1]
    if before and after and not inside:  # a window shorter than a sampling period
        return [(t0, _lerp(before[-1], after[0], t0)), (t1, _lerp(before[-1], after[0], t1))]
    if before and inside and inside[0][0] > t0:
        inside.insert(0, (t0, _lerp(before[-1], inside[0], t0)))
    if after and inside and inside[-1][0] < t1:
        inside.append((t1, _lerp(inside[-1], after[0], t1)))
    return inside


def _lerp(a: tuple[float, float], b: tuple[float, float], t: float) -> float:
    return a[1] + (b[1] - a[1]) * (t - a[0]) / (b[0] - a[0])


def thermal(
    during: Sequence[float], start: float | None, end: float | None, throttle_c: float | None
) -> list[Measurement]:
    """Temperatures around and during a job, and whether the board reached its throttling temperature."""
    conv = "hottest thermal zone; during = sampled on the device over the decode window"
    seen = [t for t in [start, end, *during] if t is not None]
    peak = max(seen) if seen else None
    no_zone = "no readable thermal zone"
    throttled: float | None = None
    why = no_zone if peak is None else "no throttle temperature known (thermal.throttle_c or a passive trip)"
    if peak is not None and throttle_c is not None:
        throttled = 1.0 if peak >= throttle_c else 0.0
    return [
        measurement("temp_start_c", start, conv, None if start is not None else no_zone),
        measurement("temp_end_c", end, conv, None if end is not None else no_zone),
        measurement("temp_max_c", peak, conv, None if peak is not None else no_zone),
        measurement(
            "throttled", throttled, f"peak >= throttle_c ({throttle_c})", None if throttled is not None else why
        ),
    ]


def charging_reason(before: BatteryState | None, after: BatteryState | None, advice: str) -> str | None:
    """Why the fuel gauge does not show the phone's draw for this job (None when it does, or no battery)."""
    states = [s for s in (before, after) if s is not None]
    if not states:
        return None
    if any(s.charging is None for s in states):
        return "battery status unreadable, so charging cannot be ruled out"
    dirty = [s for s in states if s.charging]
    if not dirty:
        return None
    return f"battery was {dirty[0].status!r} (on the charger the gauge reads charger minus load); {advice}"


def battery(before: BatteryState | None, after: BatteryState | None, charging: str | None) -> list[Measurement]:
    """The battery's state around a job: charging (1/0), level at start (ratio) and hottest cell temperature."""
    if before is None and after is None:
        return []
    states = [s for s in (before, after) if s is not None]
    status = "/".join(s.status or "?" for s in states)
    unknown = any(s.charging is None for s in states)
    temps = [s.temp_c for s in states if s.temp_c is not None]
    level = before.level if before is not None else None
    return [
        measurement("charging", None if unknown else float(charging is not None),
                    f"battery status start/end: {status}", "battery status unreadable" if unknown else None),
        measurement("battery_level", level, f"battery level at job start ({states[0].source})",
                    None if level is not None else "battery capacity unreadable"),
        measurement("battery_temp_c", max(temps) if temps else None,
                    f"hottest battery temperature at start/end ({states[0].source})",
                    None if temps else "battery temperature unreadable"),
    ]  # fmt: skip
