"""Step 5 and 6 on the host: score each distinct decoded output once, BD-rate per device, compare differing outputs.

Everything is read from the store, not from memory, so an interrupted run's finished jobs are scored, and a
resumed run scores only the jobs it adds while its BD-rates and comparisons cover the whole run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from farm.config.suite import Suite
from farm.errors import unnamed
from farm.fileio import write_atomic
from farm.gates.view import JobView, load_view
from farm.measures import Measurement, measurement, per_anchor, unit
from farm.media import Source, host_ffmpeg, tool_identity
from farm.quality.bdrate import BDRateError, bd_rate
from farm.quality.compare import compare_outputs
from farm.quality.score import FrameScores, QualityError, QualityScores, bits_per_pixel, score
from farm.quality.temporal import with_temporal
from farm.store import FrameQuality, Store

SCORING_VERSION = 2  # bump when scoring changes in a way that invalidates cached scores (2: per-frame, flicker)
TOLERANCE_METRICS = ("consistency.max_abs_diff", "consistency.psnr_db")  # gates that need outputs compared
MAX_DISTINCT_OUTPUTS = 16  # per bitstream: at most 120 pairs
# job measurement -> the QualityScores field that holds it
SUMMARY: Mapping[str, str] = MappingProxyType({
    "psnr_y": "psnr_y", "psnr_u": "psnr_u", "psnr_v": "psnr_v", "psnr_yuv": "psnr_yuv", "ssim": "ssim", "vmaf": "vmaf",
    "psnr_yuv.min": "psnr_yuv_min", "temporal.flicker": "flicker", "temporal.flicker_max": "flicker_max",
})  # fmt: skip
SUMMARY_FIELDS = tuple(SUMMARY.values())
ScoreKey = tuple[str, str]  # (decoded output sha, source sha)


def score_run(
    store: Store, run_id: str, suite: Suite, sources: Mapping[str, Source], decoded: Path, cache: Path
) -> None:
    """Score every job of the run that has no quality measurements yet (all of them on a first attempt)."""
    by_sha = {s.sha256: s for s in sources.values()}
    have = store.measurements(run_id)
    rows = [r for r in store.jobs(run_id) if "bpp" not in have.get(int(r["id"]), {})]
    todo = {
        (r["output_sha"], r["source_sha"]): (decoded / f"{r['output_sha']}.y4m", by_sha[r["source_sha"]].path)
        for r in rows
        if r["status"] == "ok" and r["output_sha"] and (decoded / f"{r['output_sha']}.y4m").is_file()
    }
    scored = score_outputs(todo, suite, cache)
    for (output_sha, source_sha), result in sorted(scored.items()):
        if isinstance(result, QualityScores):
            store.add_frame_quality(run_id, frame_rows(output_sha, source_sha, result.per_frame))
    for r in rows:
        store.add_measurements(int(r["id"]), quality_measurements(dict(r), by_sha[r["source_sha"]], scored))


def frame_rows(output_sha: str, source_sha: str, per_frame: tuple[FrameScores, ...]) -> list[FrameQuality]:
    """The store's per-frame rows of one scored output (what drift and flicker curves and gates read)."""
    return [FrameQuality(output_sha, source_sha, i, **asdict(f)) for i, f in enumerate(per_frame)]


def score_outputs(
    todo: Mapping[ScoreKey, tuple[Path, Path]], suite: Suite, cache: Path
) -> dict[ScoreKey, QualityScores | str]:
    """Each distinct decoded output is scored once; scores are cached on the host by digest."""
    metrics = tuple(suite.metrics)
    ffmpeg = host_ffmpeg()
    identity = [SCORING_VERSION, tool_identity(ffmpeg), metrics]

    def one(item: tuple[ScoreKey, tuple[Path, Path]]) -> tuple[ScoreKey, QualityScores | str]:
        key, (decoded, source) = item
        memo = cache / "scores" / (hashlib.sha256(json.dumps([*key, *identity]).encode()).hexdigest() + ".json")
        try:
            return key, _scores_from_json(json.loads(memo.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not cached, or a damaged cache file: score again
        try:
            result = with_temporal(score(decoded, source, ffmpeg=ffmpeg, metrics=metrics), decoded, source)
        except QualityError as exc:
            return key, str(exc)
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(memo, json.dumps(_scores_to_json(result)))
        return key, result

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, todo.items()))


def _scores_to_json(s: QualityScores) -> dict[str, Any]:
    """The cache keeps the per-frame values too: a run that reuses a score still stores its frames."""
    return {
        "frames": s.frames, **{f: getattr(s, f) for f in SUMMARY_FIELDS}, "conventions": s.conventions,
        "per_frame": [asdict(f) for f in s.per_frame],
    }  # fmt: skip


def _scores_from_json(d: dict[str, Any]) -> QualityScores:
    per_frame = tuple(FrameScores(**f) for f in d["per_frame"])
    if len(per_frame) != d["frames"]:
        raise ValueError("cached per-frame scores do not cover every frame")
    return QualityScores(
        frames=d["frames"], per_frame=per_frame, conventions=d["conventions"], **{f: d[f] for f in SUMMARY_FIELDS}
    )


def quality_measurements(
    row: Mapping[str, Any], src: Source, scored: Mapping[ScoreKey, QualityScores | str]
) -> list[Measurement]:
    bpp = bits_per_pixel(int(row["bitstream_bytes"]), src.width, src.height, src.frames)
    out = [measurement("bpp", bpp, "bitstream bytes x 8 / (W x H x frames)")]
    if row["status"] != "ok" or row["output_sha"] is None:
        return out
    result = scored.get((row["output_sha"], src.sha256), "decoded output is not on the host")
    for name, field in SUMMARY.items():
        if isinstance(result, str):
            out.append(measurement(name, None, "", f"not scored: {result}"))
            continue
        value = getattr(result, field)
        out.append(measurement(name, value, _convention(name, result), None if value is not None else _why(name)))
    return out


def _convention(name: str, result: QualityScores) -> str:
    conv = result.conventions
    if name.startswith("temporal."):
        return conv.get("flicker", "")
    if name == "psnr_yuv.min":
        return f"worst frame of: {conv['psnr_yuv']}" if "psnr_yuv" in conv else ""
    return conv.get(name) or conv.get(name.split("_")[0], "")


def _why(name: str) -> str:
    """Why a scored output lacks a value: flicker needs two frames; the rest were not asked for by the suite."""
    return "flicker needs two frames or more" if name.startswith("temporal.") else "not requested by the suite"


def bd_rates(
    store: Store, run_id: str, devices: list[str], anchors: Sequence[tuple[str, str]], sources: Mapping[str, Source]
) -> None:
    """BD-rate of the bundle against each anchor (name, role), per device, averaged over sequences (whole run).

    Stored as ``bd_rate[NAME].METRIC`` for every anchor, and once more as ``bd_rate.METRIC`` for the first, so
    suites, gates, exports and dashboards written for one anchor read the same rows as before.
    """
    view = load_view(store, run_id)
    for device in devices:
        jobs = [j for j in view.jobs if j.device_id == device]
        for metric in ("psnr_yuv", "vmaf"):
            name = f"bd_rate.{metric}"
            conv = f"PCHIP on ({metric}, ln kbps), exact integral over overlap, mean over sequences"
            if not anchors:
                store.add_run_metric(run_id, device, name, None, unit(name), conv, "no anchor bundle given")
                continue
            for i, (anchor, role) in enumerate(anchors):
                value, detail = device_bd_rate(against(jobs, role), metric, sources)
                for stored in (per_anchor(name, anchor), name) if i == 0 else (per_anchor(name, anchor),):
                    store.add_run_metric(run_id, device, stored, value, unit(name), f"{conv}; anchor {anchor}", detail)


def against(jobs: Sequence[JobView], role: str) -> list[JobView]:
    """The bundle's jobs and one anchor's, that anchor's role read as ``anchor`` (what BD-rate pairs up)."""
    out = [j for j in jobs if j.role == "test"]
    return out + [dataclasses.replace(j, role="anchor") for j in jobs if j.role == role]


def _kbps(job: JobView, src: Source) -> float | None:
    """The rate the encoder really hit (bpp x pixels x fps), which BD-rate integrates over, not the target."""
    bpp = job.metrics.get("bpp")
    return None if bpp is None else bpp * src.width * src.height * src.fps / 1000


@dataclass(frozen=True)
class SequenceBDRate:
    """One sequence's BD-rate as numbers, so JSON and the report need not parse the stored detail string.

    ``value`` is a fraction (-0.1 = 10 % fewer bits); without a value, ``error`` says why (missing points, or
    what :func:`bd_rate` refused). ``overlap`` is the shared quality range over the narrower curve's span.
    """

    sequence: str
    metric: str
    value: float | None
    overlap: float | None
    warnings: tuple[str, ...]
    error: str | None = None


def sequence_bd_rates(
    jobs: list[JobView], metric: str, rate_of: Callable[[JobView], float | None]
) -> list[SequenceBDRate]:
    """Per sequence, the bundle against the anchor on ``metric``; ``rate_of`` gives a job's real rate.

    Any rate proportional to kbps works (the report passes bpp): the source's pixels x fps scale both curves
    alike and cancel in the ratio, and the overlap is measured on the quality axis.
    """
    curves: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    rates: dict[tuple[str, str, float], float] = {}
    expected: dict[tuple[str, str], set[float]] = defaultdict(set)
    for job in jobs:
        key = (job.role, job.sequence)
        expected[key].add(job.rate_kbps)
        if (rate := rate_of(job)) is not None:
            rates[(*key, job.rate_kbps)] = rate
        value = job.metrics.get(metric)
        if job.status == "ok" and value is not None:
            curves[key][job.rate_kbps].append(value)
    results = []
    for seq in sorted({seq for _, seq in expected}):
        results.append(_one_sequence(seq, metric, curves, rates, expected))
    return results


def _one_sequence(
    seq: str,
    metric: str,
    curves: Mapping[tuple[str, str], Mapping[float, list[float]]],
    rates: Mapping[tuple[str, str, float], float],
    expected: Mapping[tuple[str, str], set[float]],
) -> SequenceBDRate:
    pts: dict[str, list[tuple[float, float]]] = {}
    for role in ("anchor", "test"):
        have = curves.get((role, seq), {})
        missing = sorted(expected.get((role, seq), set()) - set(have))
        if missing:
            why = f"no {metric} for {role} at {', '.join(f'{r:g}' for r in missing)} kbps"
            return SequenceBDRate(seq, metric, None, None, (), why)
        pts[role] = [(rates[(role, seq, r)], sum(q) / len(q)) for r, q in sorted(have.items())]
    try:
        bd = bd_rate(pts["anchor"], pts["test"])
    except BDRateError as exc:
        return SequenceBDRate(seq, metric, None, None, (), str(exc))
    return SequenceBDRate(seq, metric, bd.value, bd.overlap, bd.warnings)


def device_bd_rate(jobs: list[JobView], metric: str, sources: Mapping[str, Source]) -> tuple[float | None, str]:
    """The device's BD-rate (mean over sequences) and the detail string the store keeps beside it.

    A device where nothing decoded says so, with its first error: "no psnr_yuv for anchor at 60, 120 kbps"
    would send the reader looking for a scoring problem when the device was unreachable.
    """
    if jobs and not any(j.status == "ok" for j in jobs):
        first = next((unnamed(j.device_id, j.error) for j in jobs if j.error), "no reason recorded")
        return None, f"no job succeeded on the device ({first})"
    per_sequence = sequence_bd_rates(jobs, metric, lambda job: _kbps(job, sources[job.sequence]))
    for one in per_sequence:
        if one.value is None:
            return None, f"{one.sequence}: {one.error}"
    if not per_sequence:
        return None, "no sequences"
    notes = [
        f"{b.sequence} {(b.value or 0) * 100:+.2f}%" + (f" ({'; '.join(b.warnings)})" if b.warnings else "")
        for b in per_sequence
    ]
    return sum(b.value or 0 for b in per_sequence) / len(per_sequence), ", ".join(notes)


def compare_differing_outputs(
    store: Store, run_id: str, decoded: Path, log: Callable[[str], None] = lambda _: None
) -> None:
    """When decodes of one bitstream differ, measure by how much (for consistency tolerances).

    Bit-exact decoders produce one digest per bitstream and cost nothing here. Each pair of different digests
    is compared once, from the decoded files pulled to the host. A bitstream with more than MAX_DISTINCT_OUTPUTS
    different outputs is not compared pairwise (its tolerance gates are then missing): such a decoder is not a
    float path that rounds differently, and the pairs would grow quadratically. Pairs already stored (by an
    earlier attempt of a resumed run) are not compared again.
    """
    outputs: dict[tuple[str, float], dict[str, Path]] = defaultdict(dict)
    for job in load_view(store, run_id).jobs:
        local = decoded / f"{job.output_sha}.y4m"
        if job.role == "test" and job.status == "ok" and job.output_sha and local.is_file():
            outputs[(job.sequence, job.rate_kbps)][job.output_sha] = local
    known = {(r["a_sha"], r["b_sha"]) for r in store.output_diffs(run_id)}
    for (seq, rate), files in sorted(outputs.items()):
        if len(files) > MAX_DISTINCT_OUTPUTS:
            log(f"{seq}@{rate:g}kbps: {len(files)} different outputs, not compared pairwise")
    tasks = [
        (seq, rate, a, b, files[a], files[b])
        for (seq, rate), files in sorted(outputs.items())
        if len(files) <= MAX_DISTINCT_OUTPUTS
        for a, b in itertools.combinations(sorted(files), 2)
        if (a, b) not in known
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda t: compare_outputs(t[4], t[5]), tasks))
    for (seq, rate, a, b, _, _), c in zip(tasks, results, strict=True):
        store.add_output_diff(run_id, seq, rate, a, b, c.frames, c.max_abs_diff, c.psnr_min_db, c.detail)
