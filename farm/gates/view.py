"""What gates see of a run: the store's rows, read once into plain values.

Gates read only from the store (never from a live session), so ``farm gate RUN_ID`` and ``farm release``
reproduce exactly what the run decided.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from farm.emulation import emulated_devices
from farm.store import Store


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


@dataclass(frozen=True)
class OutputDiff:
    """Two different decoded outputs of one bitstream, compared sample by sample on the host."""

    frames: int | None
    max_abs_diff: float | None
    psnr_min_db: float | None
    detail: str | None = None  # why they could not be compared (then both numbers are None)


@dataclass
class RunView:
    devices: dict[str, list[str]]  # device id -> tags (every planned device, reached or not)
    jobs: list[JobView]
    device_metrics: dict[str, dict[str, tuple[float | None, str | None]]] = field(default_factory=dict)
    status: str = "complete"  # complete | incomplete | running or interrupted (partial: nothing can pass)
    planned_test_jobs: dict[str, int] = field(default_factory=dict)  # device -> bundle jobs planned
    diffs: dict[tuple[str, str], OutputDiff] = field(default_factory=dict)  # (a_sha, b_sha), a_sha < b_sha
    run_id: str = ""
    suite_name: str = ""
    emulated: frozenset[str] = frozenset()  # devices whose stored properties say their CPU was emulated

    def diff(self, a: str, b: str) -> OutputDiff | None:
        return self.diffs.get((min(a, b), max(a, b)))


def load_view(store: Store, run_id: str) -> RunView:
    """The run as gates see it. A job run again by a resumed run counts once: its latest row supersedes."""
    run = store.run(run_id)
    plan = json.loads(run["plan_json"]) if run is not None else {}
    devices = {d: info["tags"] for d, info in plan.get("devices", {}).items()}
    rows = store.devices(run_id)
    devices.update({row["device_id"]: json.loads(row["tags_json"]) for row in rows})
    planned = {d: int(info["test_jobs"]) for d, info in plan.get("devices", {}).items()}
    measurements = store.measurements(run_id)
    latest: dict[tuple[str, str, str, float, int], JobView] = {}
    for row in store.jobs(run_id):  # in id order: a resumed run's later attempt supersedes an earlier row
        job = JobView(
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
        latest[(job.device_id, job.role, job.sequence, job.rate_kbps, job.repeat)] = job
    jobs = list(latest.values())
    device_metrics: dict[str, dict[str, tuple[float | None, str | None]]] = defaultdict(dict)
    for row in store.run_metrics(run_id):
        device_metrics[row["device_id"]][row["name"]] = (row["value"], row["detail"])
    diffs = {
        (row["a_sha"], row["b_sha"]): OutputDiff(row["frames"], row["max_abs_diff"], row["psnr_min_db"], row["detail"])
        for row in store.output_diffs(run_id)
    }
    return RunView(
        devices=devices, jobs=jobs, device_metrics=dict(device_metrics),
        status=run["status"] if run is not None else "running", planned_test_jobs=planned, diffs=diffs,
        run_id=run_id, suite_name=run["suite_name"] if run is not None else "",
        emulated=frozenset(emulated_devices(rows)),
    )  # fmt: skip
