"""Per-rate-point rows and per-sequence BD-rates: the run's numbers at the grain scripts and plots need.

The results table averages over rate points to stay readable; an RD curve, a spreadsheet or a regression
script needs every point, so these rows keep them apart (summarised over repeats only, by each metric's
declared aggregation) and carry every per-job metric the store holds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from farm.gates import load_view
from farm.gates.view import JobView
from farm.measures import MEASURES, aggregate, per_anchor
from farm.quality.y4m import QualityError, read_y4m_info
from farm.report.anchors import run_anchors
from farm.scoring import against, sequence_bd_rates
from farm.store import Store

KEYS = ("device", "role", "sequence", "rate_kbps", "actual_kbps", "jobs", "failed")
"""The leading fields of a rate-point row; the metric fields follow in farm/measures.py order."""


def job_metric_names() -> tuple[str, ...]:
    """Every metric stored per job, in the order people read them (timing, power, state, quality)."""
    return tuple(m.name for m in MEASURES.values() if m.level == "job" and m.stored == "measurement")


def _frame_rates(store: Store, run_id: str) -> dict[str, float]:
    """Sequence -> frames per second, which turns bpp into the rate the encoder really hit.

    Generated sequences declare it in the suite; a Y4M sequence's header says it, when the file is still there.
    """
    run = store.run(run_id)
    fps: dict[str, float] = {}
    for seq in json.loads(run["suite_json"]).get("sequences", []) if run else []:
        if seq.get("generate"):
            fps[seq["id"]] = float(seq["generate"].get("fps", 30))
        elif seq.get("path"):
            try:
                fps[seq["id"]] = read_y4m_info(Path(seq["path"])).fps
            except (OSError, ValueError, QualityError):
                continue  # moved or unreadable: actual_kbps is then null, never guessed
    return fps


def _pixels(store: Store, run_id: str) -> dict[str, float]:
    """Sequence -> pixels per frame, from the bitstream sizes and bpp the store holds (no source needed)."""
    frames = {int(r["id"]): (r["sequence"], int(r["bitstream_bytes"])) for r in store.jobs(run_id)}
    pixels: dict[str, float] = {}
    for job_id, values in store.measurements(run_id).items():
        row = values.get("bpp")
        bpp = row["value"] if row is not None else None
        seq, size = frames.get(job_id, ("", 0))
        if bpp and seq not in pixels:
            pixels[seq] = size * 8 / bpp  # = W x H x frames
    return pixels


def rate_point_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    """One row per device x bundle role x sequence x target rate, metrics summarised over repeats.

    ``actual_kbps`` is bpp x W x H x fps / 1000 (None when the sequence's fps is unknown); missing values are
    None, never 0.
    """
    view = load_view(store, run_id)
    fps = _frame_rates(store, run_id)
    groups: dict[tuple[str, str, str, float], list[JobView]] = defaultdict(list)
    for job in view.jobs:
        groups[(job.device_id, job.role, job.sequence, job.rate_kbps)].append(job)
    frames = _pixels_per_frame(store, run_id)
    rows = []
    for (device, role, seq, rate), jobs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "test",
                                                                                   kv[0][2], kv[0][3])):  # fmt: skip
        ok = [j for j in jobs if j.status == "ok"]
        metrics = {name: aggregate(name, [j.metrics.get(name) for j in ok]) for name in job_metric_names()}
        bpp = metrics.get("bpp")
        actual = None
        if bpp is not None and seq in fps and seq in frames:
            actual = bpp * frames[seq] * fps[seq] / 1000
        rows.append({"device": device, "role": role, "sequence": seq, "rate_kbps": rate, "actual_kbps": actual,
                     "jobs": len(jobs), "failed": len(jobs) - len(ok), **metrics})  # fmt: skip
    return rows


def _pixels_per_frame(store: Store, run_id: str) -> dict[str, float]:
    """Sequence -> W x H (pixels per frame): bits per pixel times this times fps is bits per second."""
    counts = {r["sequence"]: int(r["frames"]) for r in store.jobs(run_id) if r["status"] == "ok" and r["frames"]}
    return {seq: total / counts[seq] for seq, total in _pixels(store, run_id).items() if counts.get(seq)}


def sequence_bd_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Per device x quality metric x sequence, the BD-rate as a number with its overlap and warnings.

    Recomputed from the stored points with bpp as the rate (the scale cancels, so the values equal the ones
    scoring stored); a run without an anchor has none.
    """
    anchors = run_anchors(store.run(run_id))
    if not anchors:
        return []
    view = load_view(store, run_id)
    rows: list[dict[str, Any]] = []
    for device in sorted({j.device_id for j in view.jobs}):
        jobs = [j for j in view.jobs if j.device_id == device]
        for anchor in anchors:
            for metric in ("psnr_yuv", "vmaf"):
                for one in sequence_bd_rates(against(jobs, anchor.role), metric, lambda job: job.metrics.get("bpp")):
                    rows.append({"device": device, "anchor": anchor.name, **asdict(one),
                                 "warnings": list(one.warnings)})  # fmt: skip
    return rows


def bd_warnings(store: Store, run_id: str) -> dict[str, list[str]]:
    """Device -> the BD-rate caveats (a small quality overlap) people must see next to a passing verdict."""
    found: dict[str, list[str]] = defaultdict(list)
    anchors = run_anchors(store.run(run_id))
    for row in sequence_bd_rows(store, run_id):
        base = f"bd_rate.{row['metric']}"
        first = anchors[0].name == row["anchor"]
        # the default anchor's caveats under both of its spellings, so a gate on either shows them
        names = ([base] if first else []) + ([per_anchor(base, row["anchor"])] if len(anchors) > 1 else [])
        for text in row["warnings"]:
            found[row["device"]].extend(f"{name} {row['sequence']}: {text}" for name in names)
    return dict(found)
