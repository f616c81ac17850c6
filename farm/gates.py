"""Gate evaluation: turn stored results into pass / fail / missing verdicts.

Gates read only from the store, so ``farm gate RUN_ID`` reproduces exactly what the run decided. A metric
that could not be measured for a scope is ``missing``, and missing never passes.

Scopes: ``each`` gives one verdict per device of the run; ``tag:NAME`` and ``all`` pool the devices they
cover into one verdict. Job metrics are summarised over the test jobs in scope with the gate's ``stat``
(median by default, so one noisy repeat does not decide a release); device metrics (BD-rate) are summarised
over the devices in scope with the same statistic.
"""

from __future__ import annotations

import json
import operator
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from farm.config.suite import Gate
from farm.store import Store

DEVICE_METRICS = ("bd_rate.psnr_yuv", "bd_rate.vmaf")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}  # fmt: skip


@dataclass(frozen=True)
class JobView:
    device_id: str
    role: str
    sequence: str
    rate_kbps: float
    repeat: int
    status: str
    output_sha: str | None
    metrics: dict[str, float | None]
    error: str | None = None


@dataclass
class RunView:
    devices: dict[str, list[str]]  # device id -> tags (every planned device, reached or not)
    jobs: list[JobView]
    device_metrics: dict[str, dict[str, tuple[float | None, str | None]]] = field(default_factory=dict)
    status: str = "complete"  # running (never finished: nothing can pass) | complete | incomplete
    planned_test_jobs: dict[str, int] = field(default_factory=dict)  # device -> bundle jobs planned


@dataclass(frozen=True)
class Verdict:
    gate_index: int
    metric: str
    op: str
    threshold: float | str
    scope: str
    scope_key: str
    stat: str
    value: float | str | None
    verdict: str  # pass | fail | missing
    detail: str
    inputs: dict[str, Any]

    @property
    def label(self) -> str:
        thr = f"{self.threshold:g}" if isinstance(self.threshold, float | int) else self.threshold
        return f"{self.metric} {self.op} {thr} [{self.scope_key}]"

    def as_dict(self) -> dict[str, Any]:
        return {
            "gate_index": self.gate_index, "metric": self.metric, "op": self.op, "threshold": self.threshold,
            "scope": self.scope, "scope_key": self.scope_key, "stat": self.stat, "value": self.value,
            "verdict": self.verdict, "detail": self.detail, "inputs": self.inputs,
        }  # fmt: skip


def load_view(store: Store, run_id: str) -> RunView:
    run = store.run(run_id)
    plan = json.loads(run["plan_json"]) if run is not None else {}
    devices = {d: info["tags"] for d, info in plan.get("devices", {}).items()}
    devices.update({row["device_id"]: json.loads(row["tags_json"]) for row in store.devices(run_id)})
    planned = {d: int(info["test_jobs"]) for d, info in plan.get("devices", {}).items()}
    measurements = store.measurements(run_id)
    jobs = [
        JobView(
            device_id=row["device_id"],
            role=row["role"],
            sequence=row["sequence"],
            rate_kbps=row["rate_kbps"],
            repeat=row["repeat"],
            status=row["status"],
            output_sha=row["output_sha"],
            error=row["error"],
            metrics={name: m["value"] for name, m in measurements.get(int(row["id"]), {}).items()},
        )
        for row in store.jobs(run_id)
    ]
    device_metrics: dict[str, dict[str, tuple[float | None, str | None]]] = defaultdict(dict)
    for row in store.run_metrics(run_id):
        device_metrics[row["device_id"]][row["name"]] = (row["value"], row["detail"])
    return RunView(
        devices=devices, jobs=jobs, device_metrics=dict(device_metrics),
        status=run["status"] if run is not None else "running", planned_test_jobs=planned,
    )  # fmt: skip


def _stat(values: Sequence[float], stat: str) -> float:
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


def _scopes(gate: Gate, view: RunView) -> list[tuple[str, list[str]]]:
    if gate.scope == "each":
        return [(d, [d]) for d in sorted(view.devices)]
    if gate.scope == "all":
        return [("all", sorted(view.devices))]
    tag = gate.scope.removeprefix("tag:")
    return [(gate.scope, sorted(d for d, tags in view.devices.items() if tag in tags))]


def evaluate(gates: Sequence[Gate], view: RunView) -> list[Verdict]:
    verdicts: list[Verdict] = []
    for index, gate in enumerate(gates):
        for key, devices in _scopes(gate, view):
            value, detail, inputs = _measure(gate, view, devices)
            if view.status == "running":
                # the farm died mid-run: whatever was measured is partial and must not pass a gate
                value, detail = None, f"run did not finish (status running); partial: {detail}"
            verdict = "missing" if value is None else "pass" if _OPS[gate.op](value, gate.value) else "fail"
            verdicts.append(
                Verdict(index, gate.metric, gate.op, gate.value, gate.scope, key, gate.stat, value, verdict,
                        detail, inputs)
            )  # fmt: skip
    return verdicts


def _measure(gate: Gate, view: RunView, devices: list[str]) -> tuple[float | str | None, str, dict[str, Any]]:
    if not devices:
        return None, f"no device in scope {gate.scope}", {"devices": []}
    jobs = [j for j in view.jobs if j.device_id in devices and j.role == "test"]
    if gate.metric == "failures":
        failed = [j for j in jobs if j.status != "ok"]
        planned = sum(view.planned_test_jobs.get(d, 0) for d in devices)
        ok = len(jobs) - len(failed)
        unrecorded = max(planned - len(jobs), 0)
        if not jobs and not planned:
            return None, "no jobs ran", {"devices": devices}
        count = len(failed) + unrecorded
        reasons = sorted({f"{j.device_id}: {j.error}" for j in failed})[:5]
        detail = f"{count} of {max(planned, len(jobs))} jobs failed" + (f" ({'; '.join(reasons)})" if reasons else "")
        if unrecorded:
            detail += f"; {unrecorded} planned jobs have no result"
        counts = {"devices": devices, "jobs": len(jobs), "ok": ok, "failed": len(failed), "unrecorded": unrecorded}
        return float(count), detail, counts
    if gate.metric == "consistency":
        return _consistency(jobs, devices)
    if gate.metric in DEVICE_METRICS:
        values: list[float] = []
        missing: list[str] = []
        for device in devices:
            value, why = view.device_metrics.get(device, {}).get(gate.metric, (None, "not computed"))
            if value is None:
                missing.append(f"{device}: {why}")
            else:
                values.append(value)
        inputs: dict[str, Any] = {"devices": devices, "values": values}
        if missing:
            return None, "; ".join(missing), inputs
        return _stat(values, gate.stat), f"{gate.stat} of {len(values)} device value(s)", inputs
    succeeded = [j for j in jobs if j.status == "ok"]
    if not succeeded:
        return None, "no successful job in scope", {"devices": devices}
    measured = [j.metrics.get(gate.metric) for j in succeeded]
    have = [v for v in measured if v is not None]
    job_inputs: dict[str, Any] = {"devices": devices, "values": have, "jobs": len(succeeded)}
    if len(have) < len(measured):
        gap = len(measured) - len(have)
        return None, f"{gate.metric} not measured in {gap} of {len(measured)} jobs", job_inputs
    return _stat(have, gate.stat), f"{gate.stat} over {len(have)} jobs", job_inputs


def _consistency(jobs: list[JobView], devices: list[str]) -> tuple[str | None, str, dict[str, Any]]:
    """Compare every successful decode of each bitstream (repeats and devices) by output digest."""
    decodes: dict[tuple[str, float], list[tuple[str, str]]] = defaultdict(list)
    for j in jobs:
        if j.status == "ok" and j.output_sha:
            decodes[(j.sequence, j.rate_kbps)].append((j.device_id, j.output_sha))
    compared = {k: v for k, v in decodes.items() if len(v) >= 2}
    single = sorted(f"{seq}@{rate:g}kbps" for (seq, rate), v in decodes.items() if len(v) < 2)
    inputs: dict[str, Any] = {"devices": devices, "compared": len(compared), "decoded_once": single}
    if not compared:
        return None, "no bitstream was decoded successfully twice: nothing to compare", inputs
    mismatches = []
    for (seq, rate), pairs in sorted(compared.items()):
        by_digest: dict[str, list[str]] = defaultdict(list)
        for device, sha in pairs:
            by_digest[sha].append(device)
        if len(by_digest) > 1:
            groups = " vs ".join(f"{sha[:12]} on {','.join(sorted(devs))}" for sha, devs in by_digest.items())
            mismatches.append(f"{seq}@{rate:g}kbps: {groups}")
    inputs["mismatches"] = mismatches
    if mismatches:
        return "mismatch", "; ".join(mismatches[:5]), inputs
    total = sum(len(v) for v in compared.values())
    detail = f"{len(compared)} bitstreams decoded identically across {total} decodes"
    if single:
        # a bitstream decoded only once proves nothing: the verdict cannot cover it
        return None, detail + f"; not compared (decoded once): {', '.join(single[:5])}", inputs
    return "bitexact", detail, inputs
