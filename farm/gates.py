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
    devices: dict[str, list[str]]  # device id -> tags
    jobs: list[JobView]
    device_metrics: dict[str, dict[str, tuple[float | None, str | None]]] = field(default_factory=dict)


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
    devices = {row["device_id"]: json.loads(row["tags_json"]) for row in store.devices(run_id)}
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
    return RunView(devices=devices, jobs=jobs, device_metrics=dict(device_metrics))


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
        if not jobs:
            return None, "no jobs ran", {"devices": devices}
        reasons = sorted({f"{j.device_id}: {j.error}" for j in failed})[:5]
        detail = f"{len(failed)} of {len(jobs)} jobs failed" + (f" ({'; '.join(reasons)})" if reasons else "")
        return float(len(failed)), detail, {"devices": devices, "jobs": len(jobs), "failed": len(failed)}
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
    ok = [j for j in jobs if j.status == "ok"]
    if not ok:
        return None, "no successful job in scope", {"devices": devices}
    values = [j.metrics.get(gate.metric) for j in ok]  # type: ignore[misc]
    have = [v for v in values if v is not None]
    inputs = {"devices": devices, "values": have, "jobs": len(ok)}
    if len(have) < len(values):
        return None, f"{gate.metric} not measured in {len(values) - len(have)} of {len(values)} jobs", inputs
    return _stat(have, gate.stat), f"{gate.stat} over {len(have)} jobs", inputs


def _consistency(jobs: list[JobView], devices: list[str]) -> tuple[str | None, str, dict[str, Any]]:
    outputs: dict[tuple[str, float], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for j in jobs:
        if j.status == "ok" and j.output_sha:
            outputs[(j.sequence, j.rate_kbps)][j.output_sha].add(j.device_id)
    compared = {k: v for k, v in outputs.items() if sum(len(d) for d in v.values()) >= 1}
    decodes = sum(1 for j in jobs if j.status == "ok" and j.output_sha)
    if decodes < 2 or all(len([j for j in jobs if (j.sequence, j.rate_kbps) == k]) < 2 for k in compared):
        return None, "fewer than two decodes of any bitstream: nothing to compare", {"devices": devices}
    mismatches = []
    for (seq, rate), by_digest in sorted(compared.items()):
        if len(by_digest) > 1:
            groups = " vs ".join(f"{sha[:12]} on {','.join(sorted(devs))}" for sha, devs in by_digest.items())
            mismatches.append(f"{seq}@{rate:g}kbps: {groups}")
    inputs = {"devices": devices, "bitstreams": len(compared), "mismatches": mismatches}
    if mismatches:
        return "mismatch", "; ".join(mismatches[:5]), inputs
    return "bitexact", f"{len(compared)} bitstreams decoded identically across {decodes} decodes", inputs
