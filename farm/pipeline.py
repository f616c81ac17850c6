"""A run from start to verdict: the design's data flow, steps 1-7, for any set of devices.

1-2 load and plan (farm.plan) -> 3 render and encode on the host -> 4 device sessions through an executor, each
job written by the recorder as it arrives -> 5-6 scoring, BD-rate and gates from the store (farm.scoring) ->
7 the caller prints and exports. A stopped run is kept: its finished jobs are scored and gated, it is marked
``interrupted``, and ``--resume`` later runs only the jobs it lacks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from farm import __version__
from farm.adaptive import more_repeats
from farm.artifacts import DecodedCache
from farm.errors import FarmError, InfraError, InputError, Stopped
from farm.executors.base import Executor
from farm.executors.threads import ThreadExecutor
from farm.gates import StoreBaselines, Verdict, evaluate, load_view, passing
from farm.heartbeat import Heartbeat, period_s
from farm.lanes.clock import LaneListener
from farm.lanes.run import Host, RunLanes, observer, run_pipelined
from farm.lanes.scoring import ScoringLane
from farm.plan import (
    STOPPED_WHILE_ENCODING,
    Media,
    Plan,
    artifacts,
    plan_jobs,
    prepare_media,
    render_sources,
    session_specs,
)
from farm.quality.score import CONVENTIONS
from farm.recorder import Recorder, Subscriber
from farm.scoring import TOLERANCE_METRICS, bd_rates, compare_differing_outputs, score_run
from farm.session.cancel import Cancel
from farm.session.events import DeviceDone, Event, JobDone
from farm.session.spec import JobKey, JobSpec, SessionSpec
from farm.store import Store

EXIT_INTERRUPTED = 130
ExecutorFactory = Callable[[Callable[[str], Path], DecodedCache, float], Executor]
"""(artifact by digest, decoded-output cache, lease timeout) -> the executor that runs the sessions."""

RUN_CONVENTIONS = {
    "fps": "steady state after warm-up frames, from per-frame decode times (else device wall clock)",
    "power": "sampled on the device; W = V x A normalised per meter; missing (null) without a meter",
    "energy_per_frame_j": "(energy_j - baseline_w * t) / frames over the decode window",
    "quality": "8-bit MAX 255; PSNR-YUV (6Y+U+V)/8 per frame, mean over frames; SSIM ffmpeg; VMAF v0.6.1",
    "bd_rate": "PCHIP on (quality, ln rate), exact integration over the overlap; mean over sequences; fraction",
    "rate": "bitstream bytes x 8 / duration (actual rate, not the target)",
}


@dataclass
class RunOutcome:
    run_id: str
    status: str  # complete | incomplete | interrupted
    verdicts: list[Verdict]
    summary: dict[str, Any]
    devices: list[DeviceDone]

    @property
    def exit_code(self) -> int:
        if self.status == "interrupted":
            return EXIT_INTERRUPTED
        if self.devices and not any(d.reached for d in self.devices):
            return 3
        if not self.verdicts:
            return 0
        return 0 if all(passing(v.verdict) for v in self.verdicts) else 1


@dataclass(frozen=True)
class RunOptions:
    state_dir: Path
    cancel: Cancel
    subscribers: Sequence[Subscriber] = ()
    log: Callable[[str], None] = lambda _: None
    resume: str | None = None
    lease_timeout_s: float = 600.0
    executor: ExecutorFactory | None = None
    """Where sessions run (the cluster's agents, farm.executors.dask); default: threads on this host."""
    pipelined: bool = True
    """Encode, decode and score side by side (threads on this host only; ``farm run --serial`` turns it off)."""
    lanes: LaneListener = lambda _: None
    """Told (from any thread) when a lane (encode, devices, scoring) moves: the live view's lane lines."""

    @property
    def pipelining(self) -> bool:
        """The cluster's executor is not pipelined: its sessions are submitted once every encode is done."""
        return self.pipelined and self.executor is None


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _suite_digest(plan: Plan) -> str:
    return hashlib.sha256(plan.suite_path.read_bytes()).hexdigest()


def _start(plan: Plan, store: Store, jobs: list[JobSpec]) -> str:
    run_id = _new_run_id()
    store.start_run(
        run_id,
        suite_name=plan.suite.name, suite_digest=_suite_digest(plan), suite_json=plan.suite.model_dump_json(),
        bundle_name=plan.bundle.manifest.name, bundle_version=plan.bundle.manifest.version,
        bundle_digest=plan.bundle.digest, anchor_name=plan.anchor.label if plan.anchor else None,
        anchor_digest=plan.anchor.digest if plan.anchor else None, anchors=_anchors_json(plan),
        host=socket.gethostname(),
        farm_version=__version__, conventions={**RUN_CONVENTIONS, **{k: json.dumps(v) for k, v in CONVENTIONS.items()}},
        plan={"devices": {d.id: {"tags": list(d.tags), "test_jobs": sum(1 for j in jobs if j.key.role == "test")}
                          for d in plan.devices},
              # where the bundle was, so a release can re-check it without being told again
              "bundle_source": os.path.abspath(plan.bundle.source or plan.bundle.root)},
    )  # fmt: skip
    return run_id


def _anchors_json(plan: Plan) -> list[dict[str, str]]:
    return [{"name": a.name, "role": a.role, "label": a.bundle.label, "digest": a.bundle.digest} for a in plan.anchors]


def _same_anchors(plan: Plan, row: Any) -> bool:
    """A run stored before several anchors existed (no anchors_json) had at most one, named after its bundle."""
    if row["anchors_json"] is None:
        return [a.bundle.digest for a in plan.anchors] == ([row["anchor_digest"]] if row["anchor_digest"] else [])
    stored = [(a["name"], a["digest"]) for a in json.loads(row["anchors_json"])]
    return stored == [(a.name, a.bundle.digest) for a in plan.anchors]


def _resumable(plan: Plan, store: Store, run_id: str) -> set[tuple[str, JobKey]]:
    """Refuse a resume whose bundle, anchor, suite or devices differ from the run's; return the jobs it has."""
    row = store.run(run_id)
    if row is None:
        raise InputError(f"no run {run_id} in {store.where}")
    planned = set(json.loads(row["plan_json"]).get("devices", {}))
    changed = [
        what
        for what, same in (
            ("bundle", row["bundle_digest"] == plan.bundle.digest),
            ("anchors", _same_anchors(plan, row)),
            ("suite", row["suite_digest"] == _suite_digest(plan)),
            ("devices", planned == {d.id for d in plan.devices}),
        )
        if not same
    ]
    if changed:
        raise InputError(f"cannot resume run {run_id}: its {', '.join(changed)} changed (run it anew instead)")
    return {(d, JobKey(role, seq, rate, rep)) for d, role, seq, rate, rep in store.completed_job_keys(run_id)}


def _media(plan: Plan, opts: RunOptions, lanes: RunLanes) -> Media:
    """Render and encode; a stop meanwhile (which also kills the encoders: they share the terminal) ends here.

    A pipelined run only renders here: its encodes run beside the sessions (farm.lanes.run).
    """
    stopped = Stopped(STOPPED_WHILE_ENCODING)
    try:
        with lanes.encode.busy():
            if opts.pipelining:
                return Media(render_sources(plan, opts.state_dir / "cache", opts.log, opts.cancel), {}, 0, 0)
            media = prepare_media(plan, opts.state_dir / "cache", opts.log, opts.cancel)
    except FarmError:
        if opts.cancel.is_set():
            raise stopped from None
        raise
    if opts.cancel.is_set():
        raise stopped
    lanes.encode.add(done=len(media.bitstreams), total=len(media.bitstreams))
    return media


def execute(plan: Plan, store: Store, opts: RunOptions) -> RunOutcome:
    """Run (or resume) ``plan`` and gate it. The run is never left ``running``, whatever happens."""
    beat_s = period_s()  # a bad FARM_HEARTBEAT_S is refused before anything is recorded
    lanes = RunLanes(opts.lanes)
    media = _media(plan, opts, lanes)
    jobs = plan_jobs(plan, media)
    done: set[tuple[str, JobKey]] = set()
    if opts.resume is not None:
        done = _resumable(plan, store, opts.resume)
        run_id = opts.resume
        attempt = store.reopen_run(run_id)
        opts.log(f"resuming run {run_id} (attempt {attempt}): {len(done)} jobs already done")
    else:
        run_id = _start(plan, store, jobs)
    with Heartbeat(store, run_id, beat_s, on_reaped=lambda why: _taken_for_dead(opts, run_id, why)):
        try:
            outcome = _run(plan, store, opts, run_id, media, jobs, done, lanes)

            # adaptive baseline gates still undecided: their next look's repeats run as a resume of this run would
            # (each look with lanes of its own: its encodes are cache hits, its lane times its own)
            def rerun(more: list[JobSpec], have: set[tuple[str, JobKey]]) -> RunOutcome:
                return _run(plan, store, opts, run_id, media, more, have, RunLanes(opts.lanes))

            return more_repeats(outcome, jobs, [d.id for d in plan.devices], store, run_id, rerun, opts.log)
        except BaseException as exc:
            # whatever happened (a bug, a full disk), the run must not stay 'running' forever
            status = "interrupted" if opts.cancel.is_set() or isinstance(exc, KeyboardInterrupt) else "incomplete"
            # if the store is what failed, the next command that opens it marks the run interrupted
            with contextlib.suppress(FarmError):
                store.finish_run(run_id, status, {"error": f"{type(exc).__name__}: {exc}"})
            raise


def _taken_for_dead(opts: RunOptions, run_id: str, why: str) -> None:
    """Another host reaped this live run (the store was out of reach past the heartbeat limit): stop, so what
    is stored stays consistent with its status, and the run can be resumed."""
    opts.log(f"run {run_id} is no longer this controller's in the store ({why}): stopping")
    opts.cancel.set(f"run {run_id} was taken for dead by another host")


def _run(
    plan: Plan, store: Store, opts: RunOptions, run_id: str, media: Media, jobs: list[JobSpec],
    done: set[tuple[str, JobKey]], lanes: RunLanes,
) -> RunOutcome:  # fmt: skip
    cache = opts.state_dir / "cache"
    decoded = DecodedCache(cache / "decoded")
    specs = session_specs(plan, jobs, run_id, done)
    opts.log(f"run {run_id}: {sum(len(s.jobs) for s in specs)} jobs on {len(specs)} device(s)")
    recorder = Recorder(store, run_id, {d.id: d for d in plan.devices}, opts.subscribers,
                        on_store_error=lambda: opts.cancel.set("the store failed"))  # fmt: skip
    lanes.sessions(specs, opts.lanes)
    scorer = ScoringLane(plan.suite, media.sources, decoded, cache, lanes.scoring, opts.cancel, opts.pipelining)
    if opts.pipelining:
        host = Host(opts.state_dir, cache, decoded, opts.lease_timeout_s)
        results, media = run_pipelined(plan, media, specs, recorder, opts.cancel, host, lanes, scorer)
    else:
        results = _sessions(plan, opts, media, specs, decoded, observer(recorder, lanes, scorer, None))
    if recorder.error is not None:
        raise StoreFailed(recorder, run_id, opts.state_dir)
    unavailable = [d for d in results if d.status == "unavailable"]
    if specs and not opts.cancel.is_set() and not any(d.reached for d in results):
        details = "; ".join(f"{d.device_id}: {d.error}" for d in results)
        raise InfraError(f"run {run_id}: no device could run: {details}")
    _score(plan, store, opts, run_id, media, decoded, lanes, scorer)
    status = _status(opts.cancel, results)
    summary = {**_summary(media, decoded, results), "lanes": lanes.summary(opts.pipelining)}
    opts.log(lanes.describe())
    # the run is finished before its gates are evaluated: gates refuse runs still marked running
    store.finish_run(run_id, status, summary)
    verdicts = evaluate(plan.suite.gates, load_view(store, run_id), StoreBaselines(store))
    store.add_gate_evaluation(run_id, [v.as_dict() for v in verdicts])
    if unavailable and status != "interrupted":
        raise InfraError("; ".join(d.error or "" for d in unavailable))  # exit 3, naming each device
    return RunOutcome(run_id, status, verdicts, summary, results)


def _sessions(
    plan: Plan, opts: RunOptions, media: Media, specs: list[SessionSpec], decoded: DecodedCache,
    on_event: Callable[[Event], None],
) -> list[DeviceDone]:  # fmt: skip
    """Serial sessions (every bitstream encoded already), on the given executor or this host's threads."""
    local = artifacts(plan, media).__getitem__
    executor: Executor = (
        opts.executor(local, decoded, opts.lease_timeout_s) if opts.executor is not None
        else ThreadExecutor(opts.state_dir, local, decoded, opts.lease_timeout_s)
    )  # fmt: skip
    return executor.run(specs, on_event, opts.cancel)


def _score(
    plan: Plan, store: Store, opts: RunOptions, run_id: str, media: Media, decoded: DecodedCache,
    lanes: RunLanes, scorer: ScoringLane,
) -> None:  # fmt: skip
    """Score what the scoring lane has not (all of it in a serial run), then BD-rate, complexity, comparisons."""
    cache = opts.state_dir / "cache"
    opts.log("scoring decoded outputs")
    with lanes.scoring.busy():
        score_run(store, run_id, plan.suite, media.sources, decoded.root, cache)
    scorer.finished()
    bd_rates(store, run_id, [d.id for d in plan.devices], [(a.name, a.role) for a in plan.anchors], media.sources)
    from farm.complexity.record import record_complexity  # onnx and numpy: not before the first device command

    record_complexity(store, run_id, plan.bundle, plan.devices, _frame_sizes(media))
    if any(g.metric in TOLERANCE_METRICS for g in plan.suite.gates):
        compare_differing_outputs(store, run_id, decoded.root, opts.log)


def _frame_sizes(media: Media) -> list[tuple[int, int]]:
    return sorted({(src.width, src.height) for src in media.sources.values()})


def _status(cancel: Cancel, results: list[DeviceDone]) -> str:
    if cancel.is_set() or any(d.status == "interrupted" for d in results):
        return "interrupted"
    return "complete" if all(d.status == "ok" for d in results) else "incomplete"


def _summary(media: Media, decoded: DecodedCache, results: list[DeviceDone]) -> dict[str, Any]:
    return {
        "encodes": media.encodes,
        "encodes_reused": media.reused,
        "pushed_bytes": sum(d.counters.pushed_bytes for d in results),
        "pushed_files": sum(d.counters.pushed_files for d in results),
        "staged_files_reused": sum(d.counters.reused_files for d in results),
        "pulled_bytes": decoded.pulled_bytes,
        "pulls": decoded.pulls,
        "devices_failed": {d.device_id: d.error for d in results if d.status in ("failed", "unavailable")},
        "devices_interrupted": sorted(d.device_id for d in results if d.status == "interrupted"),
    }


class StoreFailed(InfraError):
    """The store failed mid-run: devices were stopped and cleaned; what could not be written was kept aside."""

    def __init__(self, recorder: Recorder, run_id: str, state_dir: Path) -> None:
        jobs = [e for e in recorder.unstored if isinstance(e, JobDone)]
        kept = keep_unstored(jobs, run_id, state_dir)
        lines = [f"{recorder.error}", f"run {run_id} was stopped; {len(jobs)} measured job(s) could not be stored"]
        lines.append(f"  they are kept in {kept}" if kept else "  and could not be kept anywhere on this host:")
        lines += [] if kept else [json.dumps(_job_json(e)) for e in jobs]
        super().__init__("\n".join(lines))


def _job_json(event: JobDone) -> dict[str, Any]:
    return asdict(event)


def keep_unstored(jobs: list[JobDone], run_id: str, state_dir: Path) -> Path | None:
    """Write measured jobs the store refused as JSON lines, beside the store or else in the temp folder."""
    if not jobs:
        return None
    text = "".join(json.dumps(_job_json(e)) + "\n" for e in jobs)
    for folder in (state_dir / "unstored", Path(tempfile.gettempdir())):
        path = folder / f"farm-unstored-{run_id}.jsonl"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return path
        except OSError:
            continue
    return None
