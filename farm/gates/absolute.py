"""Gates against a fixed number: a declared statistic of the scope's values, compared with the threshold.

Job metrics are summarised over the bundle's jobs in scope (every sequence, rate point and repeat) with the
gate's ``stat``, median by default so that one noisy repeat does not decide a release; device metrics
(BD-rate) over the devices in scope. A value missing in any job of the scope makes the whole scope missing:
a statistic over the jobs that happened to be measured would describe a different run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from farm.config.suite import Gate
from farm.errors import named
from farm.gates.verdict import Measured
from farm.gates.view import RunView
from farm.measures import device_metrics

# gate metrics with one value per device and run (BD-rate): read from the run's device rows, not from jobs
DEVICE_METRICS = device_metrics()


def statistic(values: Sequence[float], stat: str) -> float:
    import numpy as np  # when a gate is evaluated, not when the run starts

    arr = np.asarray(values, dtype=np.float64)
    if stat == "median":
        return float(np.median(arr))
    if stat == "mean":
        return float(arr.mean())
    if stat == "min":
        return float(arr.min())
    if stat == "max":
        return float(arr.max())
    return float(np.percentile(arr, 5 if stat == "p5" else 95))


def failures(view: RunView, devices: list[str]) -> Measured:
    """Failed bundle jobs plus planned jobs with no result at all (a crash must not look like fewer failures)."""
    jobs = [j for j in view.jobs if j.device_id in devices and j.role == "test"]
    failed = [j for j in jobs if j.status != "ok"]
    planned = sum(view.planned_test_jobs.get(d, 0) for d in devices)
    ok = len(jobs) - len(failed)
    unrecorded = max(planned - len(jobs), 0)
    if not jobs and not planned:
        return Measured(None, "no jobs ran", {"devices": devices})
    count = len(failed) + unrecorded
    reasons = sorted({named(j.device_id, str(j.error)) for j in failed})[:5]
    detail = f"{count} of {max(planned, len(jobs))} jobs failed" + (f" ({'; '.join(reasons)})" if reasons else "")
    if unrecorded:
        detail += f"; {unrecorded} planned jobs have no result"
    counts = {"devices": devices, "jobs": len(jobs), "ok": ok, "failed": len(failed), "unrecorded": unrecorded}
    return Measured(float(count), detail, counts)


def device_metric(gate: Gate, view: RunView, devices: list[str]) -> Measured:
    values: list[float] = []
    missing: list[str] = []
    for device in devices:
        value, why = view.device_metrics.get(device, {}).get(gate.metric, (None, "not computed"))
        if value is None:
            missing.append(named(device, str(why)))
        else:
            values.append(value)
    inputs: dict[str, Any] = {"devices": devices, "values": values}
    if missing:
        return Measured(None, "; ".join(missing), inputs)
    return Measured(statistic(values, gate.stat), f"{gate.stat} of {len(values)} device value(s)", inputs)


def job_metric(gate: Gate, view: RunView, devices: list[str]) -> Measured:
    jobs = [j for j in view.jobs if j.device_id in devices and j.role == "test" and j.status == "ok"]
    if not jobs:
        return Measured(None, "no successful job in scope", {"devices": devices})
    measured = [j.metrics.get(gate.metric) for j in jobs]
    have = [v for v in measured if v is not None]
    inputs: dict[str, Any] = {"devices": devices, "values": have, "jobs": len(jobs)}
    if len(have) < len(measured):
        gap = len(measured) - len(have)
        return Measured(None, f"{gate.metric} not measured in {gap} of {len(measured)} jobs", inputs)
    return Measured(statistic(have, gate.stat), f"{gate.stat} over {len(have)} jobs", inputs)
