"""Per-frame quality of a stored run for people and scripts: drift and flicker curves, and the per-frame JSON.

Why a module of its own: per-frame rows are keyed by decoded output, not by job (an output is scored once however
many jobs produced it), so both the report's curves and ``farm report --json`` first map outputs back to the jobs
that name them. A job whose output was not scored (failed decode, output not pulled) has no curve and no rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from html import escape
from typing import Any

from farm.report.svg import PALETTE, Chart, Series, render
from farm.store import FRAME_QUALITY_FIELDS, FrameQuality, Store

CURVES = (("psnr_yuv", "PSNR-YUV, dB"), ("vmaf", "VMAF"), ("flicker", "flicker, 8-bit levels"))


@dataclass(frozen=True)
class OutputJobs:
    """One scored output with its frames and every job (device, role, sequence, rate, repeat) that produced it."""

    output_sha: str
    source_sha: str
    frames: tuple[FrameQuality, ...]
    jobs: tuple[dict[str, Any], ...]

    @property
    def role(self) -> str:
        return str(self.jobs[0]["role"])

    @property
    def sequence(self) -> str:
        return str(self.jobs[0]["sequence"])

    @property
    def rate_kbps(self) -> float:
        return float(self.jobs[0]["rate_kbps"])


def outputs(store: Store, run_id: str) -> list[OutputJobs]:
    """Every scored output of the run with the successful jobs that produced it, by sequence, role and rate."""
    frames: dict[tuple[str, str], list[FrameQuality]] = defaultdict(list)
    for f in store.frame_quality(run_id):
        frames[(f.output_sha, f.source_sha)].append(f)
    jobs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in store.jobs(run_id):
        if r["status"] == "ok" and r["output_sha"]:
            jobs[(r["output_sha"], r["source_sha"])].append(
                {k: r[k] for k in ("device_id", "role", "sequence", "rate_kbps", "repeat")}
            )
    found = [OutputJobs(o, s, tuple(fs), tuple(jobs[(o, s)])) for (o, s), fs in frames.items() if jobs.get((o, s))]
    return sorted(found, key=lambda x: (x.sequence, x.role != "test", x.rate_kbps, x.output_sha))


def per_frame_json(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Per scored output: the jobs that produced it and each per-frame value as a list (null = not measured)."""
    out = []
    for o in outputs(store, run_id):
        columns = {k: [getattr(f, k) for f in o.frames] for k in FRAME_QUALITY_FIELDS}
        out.append({"output_sha": o.output_sha, "source_sha": o.source_sha, "jobs": list(o.jobs),
                    "frame": [f.frame for f in o.frames], **columns})  # fmt: skip
    return out


def _series(found: Sequence[OutputJobs], metric: str) -> list[Series]:
    """One line per output; several outputs of one role and rate (devices that differ) name their devices."""
    per_point = defaultdict(list)
    for o in found:
        per_point[(o.role, o.rate_kbps)].append(o)
    series = []
    for i, ((role, rate), group) in enumerate(sorted(per_point.items(), key=lambda kv: (kv[0][0] != "test", kv[0]))):
        for o in group:
            who = "bundle" if role == "test" else "anchor"
            devices = sorted({str(j["device_id"]) for j in o.jobs})
            name = f"{who} {rate:g}k" + (f" ({', '.join(devices)})" if len(group) > 1 else "")
            pts = [(float(f.frame), v) for f in o.frames if (v := asdict(f)[metric]) is not None]
            series.append(Series(name, pts, PALETTE[i % len(PALETTE)], dashed=role == "anchor", markers=len(pts) <= 16))
    return series


def frames_section(store: Store, run_id: str) -> str:
    """Per sequence: PSNR-YUV, VMAF and flicker over frames, one line per decoded output (bundle solid)."""
    found = outputs(store, run_id)
    out = [
        '<h2 id="frames">Per-frame quality: drift and flicker</h2><p class="note">Each decoded output scored '
        "against its source, frame by frame, as stored (outputs identical across devices and repeats are one line). "
        "Flicker of frame t = mean over luma of |(decoded t - decoded t-1) - (source t - source t-1)| in 8-bit "
        "levels; frame 0 has none. A falling PSNR or VMAF line is drift; the gate on it is psnr_yuv.min (worst "
        "frame).</p>"
    ]
    if not found:
        return out[0] + "<p>no per-frame rows stored for this run (recorded before schema 6, or nothing scored)</p>"
    for seq in sorted({o.sequence for o in found}):
        mine = [o for o in found if o.sequence == seq]
        charts = [
            Chart(f"{seq}: {label} per frame", "frame", label, _series(mine, metric), css_class=f"chart frame-{metric}",
                  legend_at="bottom")
            for metric, label in CURVES
        ]  # fmt: skip
        out.append(f'<h3>{escape(seq)}</h3><div class="charts">{"".join(render(c) for c in charts)}</div>')
    return "".join(out)
