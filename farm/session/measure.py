"""The measurement maths of one job: timing, power, thermal and battery, from what the device reported.

Pure functions of a decode's outcome and the samples taken around it, so they are tested without a device and
run wherever the session runs. A value that could not be measured is None with its reason, never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from farm.config.suite import Suite
from farm.devices.base import DecodeOutcome
from farm.measures import Measurement
from farm.power import energy as power_energy
from farm.power.battery import BatteryState
from farm.power.sampler import PowerSample
from farm.timing import frame_stats


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
    units = {"fps": "fps", "deadline_misses": "frames", "wall_s": "s"}
    return [
        Measurement(
            name, value, units.get(name.split(".")[0], "ms" if "ms" in name else "fps"), conv,
            None if value is not None else f"not measurable ({stats.source} timing)",
        )
        for name, value in stats.as_metrics().items()
    ]  # fmt: skip


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
        Measurement("power_w", power_w, "W", conv, None if power_w is not None else reason),
        Measurement("energy_j", energy_j, "J", conv, None if energy_j is not None else reason),
        Measurement("energy_per_frame_j", per_frame, "J", conv + "; (E - baseline_w*t)/frames",
                    None if per_frame is not None else reason),
    ]  # fmt: skip
    if ctx.baseline_w is not None:
        out.append(Measurement("baseline_w", ctx.baseline_w, "W", conv + "; idle before jobs"))
    return out


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
        Measurement("temp_start_c", start, "C", conv, None if start is not None else no_zone),
        Measurement("temp_end_c", end, "C", conv, None if end is not None else no_zone),
        Measurement("temp_max_c", peak, "C", conv, None if peak is not None else no_zone),
        Measurement(
            "throttled", throttled, "bool", f"peak >= throttle_c ({throttle_c})", None if throttled is not None else why
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
        Measurement(
            "charging", None if unknown else float(charging is not None), "bool", f"battery status start/end: {status}",
            "battery status unreadable" if unknown else None,
        ),
        Measurement("battery_level", level, "ratio", f"battery level at job start ({states[0].source})",
                    None if level is not None else "battery capacity unreadable"),
        Measurement("battery_temp_c", max(temps) if temps else None, "C",
                    f"hottest battery temperature at start/end ({states[0].source})",
                    None if temps else "battery temperature unreadable"),
    ]  # fmt: skip
