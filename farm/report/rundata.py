"""A stored run's jobs with what the HTML report and ``farm compare`` draw from: actual rates, frame times, order.

Why not :func:`farm.gates.load_view` alone: gates need only the measurements, while pictures need the per-frame
decode times (``jobs.frame_times_json``), the bitstream size (the rate the encoder actually hit) and when each
job ran. The same supersede rule applies (a resumed run's later row of a job wins), so the report draws the
jobs the gates judged.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from statistics import fmean

from farm.config.suite import Suite
from farm.quality.bdrate import BDRate, BDRateError, bd_rate
from farm.store import Store

QUALITY_METRICS = ("psnr_yuv", "vmaf")  # the curves the report draws and compare integrates (as BD-rate does)


@dataclass(frozen=True)
class Job:
    device_id: str
    role: str  # test | anchor
    sequence: str
    rate_kbps: float  # the target rate
    repeat: int
    status: str
    started_at: float
    frames: int | None
    bitstream_bytes: int
    frame_times_ns: tuple[int, ...]
    output_sha: str | None
    metrics: dict[str, float | None]
    error: str | None
    job_id: int = 0  # the store's row id (what per-job tables such as job_traces key by)


@dataclass(frozen=True)
class RDPoint:
    """One rate point of one curve: the mean over repeats of the actual rate and of a quality metric."""

    rate: float  # kbps when the sequence's frame rate is known, else bpp (see RunData.rate_unit)
    quality: float
    target_kbps: float


@dataclass(frozen=True)
class RunData:
    run_id: str
    suite: Suite
    jobs: tuple[Job, ...]
    seq_fps: dict[str, float]  # sequences whose frame rate the suite states (generated ones)

    def rate_unit(self, sequence: str) -> str:
        return "kbps" if sequence in self.seq_fps else "bpp"

    def actual_rate(self, job: Job) -> float | None:
        """kbps the encoder hit (bytes x 8 / duration), or bpp for a sequence whose frame rate is unknown here."""
        fps = self.seq_fps.get(job.sequence)
        if fps is None:
            return job.metrics.get("bpp")
        if not job.frames:
            return None
        return job.bitstream_bytes * 8 / 1000 / (job.frames / fps)

    def curve(self, device: str, role: str, sequence: str, metric: str) -> list[RDPoint]:
        """Means over successful repeats per target rate; a rate point lacking a value is left out."""
        by_rate: dict[float, list[tuple[float, float]]] = defaultdict(list)
        for j in self.jobs:
            if (j.device_id, j.role, j.sequence, j.status) != (device, role, sequence, "ok"):
                continue
            rate, quality = self.actual_rate(j), j.metrics.get(metric)
            if rate is not None and quality is not None:
                by_rate[j.rate_kbps].append((rate, quality))
        return [
            RDPoint(fmean(r for r, _ in pts), fmean(q for _, q in pts), target)
            for target, pts in sorted(by_rate.items())
        ]

    def keys(self, role: str | None = None) -> list[tuple[str, str]]:
        """(device, sequence) pairs in a stable order."""
        return sorted({(j.device_id, j.sequence) for j in self.jobs if role is None or j.role == role})


def _job(r: sqlite3.Row, metrics: dict[str, float | None]) -> Job:
    times = json.loads(r["frame_times_json"]) if r["frame_times_json"] else []
    return Job(
        r["device_id"], r["role"], r["sequence"], float(r["rate_kbps"]), int(r["repeat"]), r["status"],
        float(r["started_at"]), r["frames"], int(r["bitstream_bytes"]), tuple(int(t) for t in times),
        r["output_sha"], metrics, r["error"], int(r["id"]),
    )  # fmt: skip


def load(store: Store, run_id: str) -> RunData:
    run = store.run(run_id)
    if run is None:
        raise LookupError(f"no run {run_id} in {store.where}")
    suite = Suite.model_validate_json(run["suite_json"])
    measurements = store.measurements(run_id)
    latest: dict[tuple[str, str, str, float, int], Job] = {}
    for row in store.jobs(run_id):  # id order: a resumed run's later row of a job supersedes the earlier one
        metrics = {name: m["value"] for name, m in measurements.get(int(row["id"]), {}).items()}
        job = _job(row, metrics)
        latest[(job.device_id, job.role, job.sequence, job.rate_kbps, job.repeat)] = job
    fps = {s.id: float(s.generate.fps) for s in suite.sequences if s.generate is not None}
    return RunData(run_id, suite, tuple(sorted(latest.values(), key=lambda j: j.started_at)), fps)


def curve_bd_rate(anchor: list[RDPoint], test: list[RDPoint]) -> BDRate | str:
    """BD-rate of ``test`` against ``anchor`` with its overlap and warnings, or why there is none."""
    try:
        return bd_rate([(p.rate, p.quality) for p in anchor], [(p.rate, p.quality) for p in test])
    except BDRateError as exc:
        return str(exc)


def bd_text(result: BDRate | str) -> str:
    """BD-rate in % (always % for people), with its overlap, or the reason it could not be computed."""
    if isinstance(result, str):
        return f"not computed: {result}"
    warn = " — WARNING: " + "; ".join(result.warnings) if result.warnings else ""
    return f"{result.value * 100:+.2f}% (overlap {result.overlap:.0%}){warn}"
