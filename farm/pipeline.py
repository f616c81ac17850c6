"""A run from start to verdict: the design's data flow, steps 1-7, for any set of devices.

1 load and validate everything (all problems at once) -> 2 plan jobs, refuse devices the bundle cannot run on
-> 3 render and encode on the host (cached) -> 4 device sessions in parallel -> 5 score each distinct decoded
output once -> 6 BD-rate per device and gates, all from the store -> 7 the caller prints and exports.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm import __version__
from farm.bundle import Bundle, open_bundle
from farm.config.inventory import Device, Inventory, load_inventory, select
from farm.config.suite import Suite, anchor_problems, load_suite
from farm.errors import InfraError, InputError, Problem
from farm.fileio import write_atomic
from farm.gates import StoreBaselines, Verdict, evaluate, load_view
from farm.media import Bitstream, Source, encode, host_ffmpeg, render, tool_identity
from farm.quality.bdrate import BDRateError, bd_rate
from farm.quality.compare import compare_outputs
from farm.quality.score import CONVENTIONS, QualityError, QualityScores, bits_per_pixel, score
from farm.runner import DecodedCache, DeviceSession, Event, JobRecord, JobSpec, SessionReport
from farm.scheduler import dispatch
from farm.store import Measurement, Store

SCORING_VERSION = 1  # bump when scoring changes in a way that invalidates cached scores
TOLERANCE_METRICS = ("consistency.max_abs_diff", "consistency.psnr_db")  # gates that need outputs compared
MAX_DISTINCT_OUTPUTS = 16  # per bitstream: at most 120 pairs

RUN_CONVENTIONS = {
    "fps": "steady state after warm-up frames, from per-frame decode times (else device wall clock)",
    "power": "sampled on the device; W = V x A normalised per meter; missing (null) without a meter",
    "energy_per_frame_j": "(energy_j - baseline_w * t) / frames over the decode window",
    "quality": "8-bit MAX 255; PSNR-YUV (6Y+U+V)/8 per frame, mean over frames; SSIM ffmpeg; VMAF v0.6.1",
    "bd_rate": "PCHIP on (quality, ln rate), exact integration over the overlap; mean over sequences; fraction",
    "rate": "bitstream bytes x 8 / duration (actual rate, not the target)",
}


@dataclass
class Plan:
    suite: Suite
    suite_path: Path
    bundle: Bundle
    anchor: Bundle | None
    devices: list[Device]


@dataclass
class RunOutcome:
    run_id: str
    verdicts: list[Verdict]
    summary: dict[str, Any]
    reports: list[SessionReport] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.reports and not any(r.reached for r in self.reports):
            return 3
        if not self.verdicts:
            return 0
        return 0 if all(v.verdict == "pass" for v in self.verdicts) else 1


def load_plan(
    suite_path: Path, bundle_path: Path, anchor_path: Path | None, inventory_path: Path, selector: str | None,
    cache: Path,
) -> Plan:  # fmt: skip
    """Step 1 and 2: every input problem is collected before anything runs."""
    problems: list[Problem] = []

    def attempt(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except InputError as exc:
            problems.extend(exc.problems)
            return None

    suite: Suite | None = attempt(lambda: load_suite(suite_path))
    inventory: Inventory | None = attempt(lambda: load_inventory(inventory_path))
    bundle: Bundle | None = attempt(lambda: open_bundle(bundle_path, cache))
    anchor_src = anchor_path if anchor_path is not None else (suite.anchor if suite else None)
    anchor: Bundle | None = attempt(lambda: open_bundle(anchor_src, cache)) if anchor_src else None
    if problems or suite is None or inventory is None or bundle is None:
        raise InputError(problems)
    problems += anchor_problems(suite, anchor is not None)  # a BD-rate gate without an anchor costs no run
    devices = select(inventory, selector if selector is not None else suite.devices)
    for device in devices:
        for b in (bundle, anchor):
            if b is None:
                continue
            target = b.manifest.targets.get(device.target)
            if target is None:
                problems.append(
                    Problem(
                        b.source,
                        None,
                        "targets",
                        f"bundle {b.label} has no target {device.target!r} for device {device.id!r}",
                    )
                )
                continue
            missing = [r for r in target.requires if r not in device.runtime]
            if missing:
                problems.append(
                    Problem(
                        str(inventory_path),
                        None,
                        f"{device.id}.runtime",
                        f"bundle {b.label} needs {', '.join(missing)} on the device",
                    )
                )
    if problems:
        raise InputError(problems)
    if not devices:
        raise InputError("no devices selected")
    return Plan(suite, suite_path, bundle, anchor, devices)


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass
class Prepared:
    sources: dict[str, Source]
    bitstreams: dict[tuple[str, str, float], Bitstream]  # (role, sequence, rate)
    encodes: int
    reused: int


def prepare_media(plan: Plan, cache: Path, emit: Callable[[str], None]) -> Prepared:
    """Step 3: render sources and encode on the host, two encodes at a time."""
    sources = {}
    for seq in plan.suite.sequences:
        emit(f"rendering {seq.id}")
        sources[seq.id] = render(seq, cache)
    roles = [("test", plan.bundle)] + ([("anchor", plan.anchor)] if plan.anchor else [])
    tasks = [(role, b, sid, rate) for role, b in roles for sid in sources for rate in plan.suite.rates_kbps]
    emit(f"encoding {len(tasks)} bitstreams")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda t: encode(t[1], sources[t[2]], t[3], cache), tasks))
    bitstreams = {(t[0], t[2], t[3]): bs for t, bs in zip(tasks, results, strict=True)}
    reused = sum(1 for bs in results if bs.reused)
    return Prepared(sources, bitstreams, len(results) - reused, reused)


def plan_jobs(plan: Plan, media: Prepared) -> list[JobSpec]:
    """Anchor jobs once (they only feed BD-rate), then the bundle's repeats, interleaving rate points."""
    jobs: list[JobSpec] = []
    if plan.anchor is not None:
        for sid, src in media.sources.items():
            for rate in plan.suite.rates_kbps:
                jobs.append(JobSpec("anchor", plan.anchor, src, media.bitstreams[("anchor", sid, rate)], 0))
    for repeat in range(plan.suite.repeats):
        for sid, src in media.sources.items():
            for rate in plan.suite.rates_kbps:
                jobs.append(JobSpec("test", plan.bundle, src, media.bitstreams[("test", sid, rate)], repeat))
    return jobs


def execute(
    plan: Plan, *, store: Store, state_dir: Path, emit: Event, log: Callable[[str], None] = lambda _: None,
) -> RunOutcome:  # fmt: skip
    cache = state_dir / "cache"
    media = prepare_media(plan, cache, log)
    jobs = plan_jobs(plan, media)
    run_id = _new_run_id()
    suite_bytes = plan.suite_path.read_bytes()
    store.start_run(
        run_id,
        suite_name=plan.suite.name, suite_digest=hashlib.sha256(suite_bytes).hexdigest(),
        suite_json=plan.suite.model_dump_json(), bundle_name=plan.bundle.manifest.name,
        bundle_version=plan.bundle.manifest.version, bundle_digest=plan.bundle.digest,
        anchor_name=plan.anchor.label if plan.anchor else None,
        anchor_digest=plan.anchor.digest if plan.anchor else None,
        host=socket.gethostname(), farm_version=__version__,
        conventions={**RUN_CONVENTIONS, **{k: json.dumps(v) for k, v in CONVENTIONS.items()}},
        plan={"devices": {d.id: {"tags": list(d.tags), "test_jobs": sum(1 for j in jobs if j.role == "test")}
                          for d in plan.devices},
              # where the bundle was, so a release can re-check it without being told again
              "bundle_source": os.path.abspath(plan.bundle.source or plan.bundle.root)},
    )  # fmt: skip
    log(f"run {run_id}: {len(jobs)} jobs on {len(plan.devices)} device(s)")
    try:
        return _complete(plan, run_id, jobs, media, store=store, state_dir=state_dir, emit=emit, log=log)
    except BaseException as exc:
        # whatever happened (a bug, Ctrl-C, a full disk), the run must not stay 'running' forever
        store.finish_run(run_id, "incomplete", {"error": f"{type(exc).__name__}: {exc}"})
        raise


def _complete(
    plan: Plan, run_id: str, jobs: list[JobSpec], media: Prepared, *, store: Store, state_dir: Path, emit: Event,
    log: Callable[[str], None],
) -> RunOutcome:  # fmt: skip
    cache = state_dir / "cache"
    decoded = DecodedCache(cache / "decoded")
    sessions = [
        DeviceSession(d, plan.suite, jobs, run_id=run_id, store=store, state_dir=state_dir, decoded=decoded,
                      emit=emit)
        for d in plan.devices
    ]  # fmt: skip
    reports = dispatch(sessions)
    if not any(r.reached for r in reports):
        details = "; ".join(f"{r.device_id}: {r.error}" for r in reports)
        raise InfraError(f"run {run_id}: no device could run: {details}")
    log("scoring decoded outputs")
    records = [rec for r in reports for rec in r.records]
    scored = score_outputs(records, plan.suite, cache)
    for rec in records:
        store.add_measurements(rec.job_id, quality_measurements(rec, scored))
    bd_rates(store, run_id, plan, records, scored)
    if any(g.metric in TOLERANCE_METRICS for g in plan.suite.gates):
        compare_differing_outputs(store, run_id, records, log)
    summary = {
        "encodes": media.encodes,
        "encodes_reused": media.reused,
        "pushed_bytes": sum(r.pushed_bytes for r in reports),
        "pushed_files": sum(r.pushed_files for r in reports),
        "staged_files_reused": sum(r.reused_files for r in reports),
        "pulled_bytes": decoded.pulled_bytes,
        "pulls": decoded.pulls,
        "devices_failed": {r.device_id: r.error for r in reports if r.error},
    }
    # the run is finished before its gates are evaluated: gates refuse runs still marked running
    store.finish_run(run_id, "complete" if all(r.error is None for r in reports) else "incomplete", summary)
    verdicts = evaluate(plan.suite.gates, load_view(store, run_id), StoreBaselines(store))
    store.add_gate_evaluation(run_id, [v.as_dict() for v in verdicts])
    return RunOutcome(run_id, verdicts, summary, reports)


def compare_differing_outputs(
    store: Store, run_id: str, records: list[JobRecord], log: Callable[[str], None] = lambda _: None
) -> None:
    """Step 5b: when decodes of one bitstream differ, measure by how much (for consistency tolerances).

    Bit-exact decoders produce one digest per bitstream and cost nothing here. Each pair of different digests
    is compared once, from the decoded files the run pulled to the host. A bitstream with more than
    MAX_DISTINCT_OUTPUTS different outputs is not compared pairwise (its tolerance gates are then missing):
    such a decoder is not a float path that rounds differently, and the pairs would grow quadratically.
    """
    outputs: dict[tuple[str, float], dict[str, Path]] = defaultdict(dict)
    for rec in records:
        if rec.spec.role == "test" and rec.status == "ok" and rec.output_sha and rec.local_output is not None:
            outputs[(rec.spec.source.sequence_id, rec.spec.bitstream.rate_kbps)][rec.output_sha] = rec.local_output
    for (seq, rate), files in sorted(outputs.items()):
        if len(files) > MAX_DISTINCT_OUTPUTS:
            log(f"{seq}@{rate:g}kbps: {len(files)} different outputs, not compared pairwise")
    tasks = [
        (seq, rate, a, b, files[a], files[b])
        for (seq, rate), files in sorted(outputs.items())
        if len(files) <= MAX_DISTINCT_OUTPUTS
        for a, b in itertools.combinations(sorted(files), 2)
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda t: compare_outputs(t[4], t[5]), tasks))
    for (seq, rate, a, b, _, _), c in zip(tasks, results, strict=True):
        store.add_output_diff(run_id, seq, rate, a, b, c.frames, c.max_abs_diff, c.psnr_min_db, c.detail)


ScoreKey = tuple[str, str]  # (decoded output sha, source sha)


def score_outputs(records: list[JobRecord], suite: Suite, cache: Path) -> dict[ScoreKey, QualityScores | str]:
    """Step 5: each distinct decoded output is scored once; scores are cached on the host by digest."""
    todo: dict[ScoreKey, tuple[Path, Path]] = {}
    for rec in records:
        if rec.status == "ok" and rec.output_sha and rec.local_output is not None:
            todo.setdefault((rec.output_sha, rec.spec.source.sha256), (rec.local_output, rec.spec.source.path))
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
            result = score(decoded, source, ffmpeg=ffmpeg, metrics=metrics)
        except QualityError as exc:
            return key, str(exc)
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(memo, json.dumps(_scores_to_json(result)))
        return key, result

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, todo.items()))


_SUMMARY_FIELDS = ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "ssim", "vmaf")


def _scores_to_json(s: QualityScores) -> dict[str, Any]:
    return {"frames": s.frames, **{f: getattr(s, f) for f in _SUMMARY_FIELDS}, "conventions": s.conventions}


def _scores_from_json(d: dict[str, Any]) -> QualityScores:
    return QualityScores(
        frames=d["frames"], per_frame=(), conventions=d["conventions"], **{f: d[f] for f in _SUMMARY_FIELDS}
    )


def quality_measurements(rec: JobRecord, scored: dict[ScoreKey, QualityScores | str]) -> list[Measurement]:
    src = rec.spec.source
    bpp = bits_per_pixel(rec.spec.bitstream.size, src.width, src.height, src.frames)
    out = [Measurement("bpp", bpp, "bit/pixel", "bitstream bytes x 8 / (W x H x frames)")]
    if rec.status != "ok" or rec.output_sha is None:
        return out
    result = scored.get((rec.output_sha, src.sha256), "output was not scored")
    units = {"ssim": "", "vmaf": ""}
    for name in _SUMMARY_FIELDS:
        if isinstance(result, str):
            out.append(Measurement(name, None, units.get(name, "dB"), "", f"not scored: {result}"))
            continue
        value = getattr(result, name)
        conv = result.conventions.get(name) or result.conventions.get(name.split("_")[0], "")
        out.append(
            Measurement(name, value, units.get(name, "dB"), str(conv), None if value is not None else "not requested")
        )
    return out


def bd_rates(
    store: Store,
    run_id: str,
    plan: Plan,
    records: list[JobRecord],
    scored: dict[ScoreKey, QualityScores | str],
) -> None:
    """BD-rate of the bundle against the anchor, per device, averaged over sequences."""
    for device in plan.devices:
        for metric in ("psnr_yuv", "vmaf"):
            name = f"bd_rate.{metric}"
            conv = f"PCHIP on ({metric}, ln kbps), exact integral over overlap, mean over sequences"
            if plan.anchor is None:
                store.add_run_metric(run_id, device.id, name, None, "ratio", conv, "no anchor bundle given")
                continue
            value, detail = _device_bd_rate(device.id, metric, records, scored)
            store.add_run_metric(run_id, device.id, name, value, "ratio", conv, detail)


def _device_bd_rate(
    device_id: str, metric: str, records: list[JobRecord], scored: dict[ScoreKey, QualityScores | str]
) -> tuple[float | None, str]:
    curves: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    rates: dict[tuple[str, str, float], float] = {}
    expected: dict[tuple[str, str], set[float]] = defaultdict(set)
    for rec in records:
        if rec.device_id != device_id:
            continue
        key = (rec.spec.role, rec.spec.source.sequence_id)
        rate = rec.spec.bitstream.rate_kbps
        expected[key].add(rate)
        rates[(*key, rate)] = rec.spec.bitstream.actual_kbps(rec.spec.source)
        result = scored.get((rec.output_sha or "", rec.spec.source.sha256))
        if rec.status == "ok" and isinstance(result, QualityScores) and getattr(result, metric) is not None:
            curves[key][rate].append(getattr(result, metric))
    values: list[float] = []
    notes: list[str] = []
    sequences = sorted({seq for _, seq in expected})
    for seq in sequences:
        pts: dict[str, list[tuple[float, float]]] = {}
        for role in ("anchor", "test"):
            have = curves.get((role, seq), {})
            missing = sorted(expected[(role, seq)] - set(have))
            if missing:
                return None, f"{seq}: no {metric} for {role} at {', '.join(f'{r:g}' for r in missing)} kbps"
            pts[role] = [(rates[(role, seq, r)], sum(q) / len(q)) for r, q in sorted(have.items())]
        try:
            bd = bd_rate(pts["anchor"], pts["test"])
        except BDRateError as exc:
            return None, f"{seq}: {exc}"
        values.append(bd.value)
        notes.append(f"{seq} {bd.value * 100:+.2f}%" + (f" ({'; '.join(bd.warnings)})" if bd.warnings else ""))
    if not values:
        return None, "no sequences"
    return sum(values) / len(values), ", ".join(notes)
