"""What the exporter reads from the store: the latest finished results per key, kept up to date incrementally.

Why incremental: the store only grows (runs are never rewritten), and a scrape must stay fast with hundreds of
devices and months of history. So the reader remembers what it has seen: ``PRAGMA data_version`` tells in one
cheap statement whether anything was committed since the last scrape; new jobs are read past a job-id
watermark (ids are assigned inside the store's serialised write transactions, so they only grow); a finished
run is folded into the per-key results once. A scrape of an unchanged store reads nothing else.

Why only finished runs feed the gauges: quality scores arrive after all decodes, so a running run's keys
would flicker between partial values. Counters do count running runs' jobs as they land: that is what rate()
is for. Why a read-only connection of its own: a scrape can never write the store, and it never waits on the
lock that ``farm run``'s device threads share.

A key's results come from the most recently *started* finished run that decoded it. If that run's jobs for the
key all failed, the key has no values (they are absent in Prometheus), rather than showing an older run's.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from farm.measures import BD_RATE, ENERGY_TOTAL, MEASURES, Export, aggregate, exported_as, split_anchor
from farm.metrics.names import QUANTILES

T = TypeVar("T")

ResultKey = tuple[str, str, str, str, str, str]
"""(device, suite, bundle, role, sequence, rate_kbps): the values of names.RESULT_LABELS."""

# job measurements the exporter shows as result gauges, and how: every exported gauge of a measurement row
RESULT_GAUGES: dict[str, Export] = {
    m.name: m.export
    for m in MEASURES.values()
    if m.stored == "measurement" and m.export is not None and m.export.family.kind == "gauge"
}
MEASUREMENTS = tuple(RESULT_GAUGES)
ENERGY = next(m.name for m in exported_as(ENERGY_TOTAL))  # the job measurement the energy counter sums
BD_RATES = {m.name: m.export.label or "" for m in exported_as(BD_RATE) if m.export is not None}  # name -> quality
# complexity metric name -> its family (one family per figure, labels device/suite/bundle)
COMPLEXITY = {m.name: m.export.family for m in MEASURES.values() if m.name.startswith("complexity.") and m.export}


@dataclass(frozen=True)
class FrameTimes:
    """Pooled steady-state frame decode times of one key: quantiles at names.QUANTILES, in seconds."""

    quantiles: tuple[float, ...]
    count: int
    total_s: float


@dataclass(frozen=True)
class KeyResult:
    """One key's values from one finished run; only measured values are present in ``values``."""

    run_id: str
    started_at: float
    values: dict[str, float]
    frames: FrameTimes | None


@dataclass
class KeyTotals:
    """Counter values of one key over every stored job. ``energy_j`` stays None until a job measured energy."""

    frames: int = 0
    energy_j: float | None = None


@dataclass(frozen=True)
class GateRow:
    suite: str
    bundle: str
    gate: str
    scope: str
    verdict: str
    value: float | None


@dataclass
class RunLevel:
    """Everything per run rather than per job: small, so it is recomputed whenever runs or gates change."""

    durations: dict[tuple[str, str], float] = field(default_factory=dict)  # (suite, bundle) -> seconds
    last_run: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (device, suite, bundle) -> finished
    bd_rates: dict[tuple[str, str, str, str, str], float] = field(default_factory=dict)  # + (anchor, quality)
    # (metric name, device, suite, bundle) -> value: the decoder's complexity on the device's target
    complexity: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    gates: list[GateRow] = field(default_factory=list)


@dataclass(frozen=True)
class Changes:
    """Which parts of the index a refresh changed, so the collector rebuilds only those families."""

    results: bool = False
    counters: bool = False
    runs: bool = False

    @property
    def any(self) -> bool:
        return self.results or self.counters or self.runs


@dataclass(frozen=True)
class _Run:
    id: str
    suite: str
    bundle: str
    anchor: str | None
    started_at: float
    finished_at: float | None


_SQLITE = {
    "version": "PRAGMA data_version",  # changes whenever another connection commits
    "gates_top": "SELECT COALESCE(MAX(rowid), 0) FROM gates",
    "new_runs": "SELECT rowid, id, suite_name, bundle_name, anchor_name, started_at, finished_at FROM runs"
    " WHERE rowid > ? {where} ORDER BY rowid",
    # SQLite returns the other columns of the row that holds MAX(): the latest run per group
    "last_run": "SELECT d.device_id, r.suite_name, r.bundle_name, r.finished_at, MAX(r.started_at) FROM run_devices d"
    " JOIN runs r ON r.id = d.run_id WHERE r.finished_at IS NOT NULL {only}"
    " GROUP BY d.device_id, r.suite_name, r.bundle_name",
    "bd_rates": "SELECT m.device_id, r.suite_name, r.bundle_name, r.anchor_name, m.name, m.value, MAX(r.started_at)"
    " FROM run_metrics m JOIN runs r ON r.id = m.run_id WHERE r.finished_at IS NOT NULL"
    " AND (m.name IN ({names}){extra}) {only} GROUP BY m.device_id, r.suite_name, r.bundle_name, m.name",
}
_POSTGRES = {
    # what grows or ends: the store is insert-only but for a run's end (finished_at) and its reopening
    "version": "SELECT (SELECT COALESCE(MAX(id), 0) FROM jobs), (SELECT COUNT(*) FROM runs),"
    " (SELECT COUNT(finished_at) FROM runs), (SELECT COUNT(*) FROM gates), (SELECT COUNT(*) FROM run_metrics)",
    "gates_top": "SELECT COUNT(*) FROM gates",  # insert-only: the count only grows
    # no rowid: every run row is read again on a change (one small row per run), watermark 0 kept
    "new_runs": "SELECT 0, id, suite_name, bundle_name, anchor_name, started_at, finished_at FROM runs"
    " WHERE ? = 0 {where} ORDER BY started_at",
    "last_run": "SELECT DISTINCT ON (d.device_id, r.suite_name, r.bundle_name) d.device_id, r.suite_name,"
    " r.bundle_name, r.finished_at, r.started_at FROM run_devices d JOIN runs r ON r.id = d.run_id"
    " WHERE r.finished_at IS NOT NULL {only} ORDER BY d.device_id, r.suite_name, r.bundle_name, r.started_at DESC",
    "bd_rates": "SELECT DISTINCT ON (m.device_id, r.suite_name, r.bundle_name, m.name) m.device_id, r.suite_name,"
    " r.bundle_name, r.anchor_name, m.name, m.value, r.started_at FROM run_metrics m JOIN runs r ON r.id = m.run_id"
    " WHERE r.finished_at IS NOT NULL AND (m.name IN ({names}){extra}) {only}"
    " ORDER BY m.device_id, r.suite_name, r.bundle_name, m.name, r.started_at DESC",
}


def open_readonly(path: Path | str) -> sqlite3.Connection:
    """A read-only connection: the exporter can never change the store, whatever a query does.

    A ``postgresql://`` store is read through farm.store.postgres's adapter, which speaks enough of
    sqlite3.Connection for the statements here (the dialect's own are in ``_POSTGRES``).
    """
    if str(path).startswith(("postgresql://", "postgres://")):
        from farm.store.postgres import connect_readonly

        return connect_readonly(str(path))
    path = Path(path)
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False, timeout=30)
    db.execute("PRAGMA query_only=ON")
    return db


def bundle_name(label: str | None) -> str | None:
    """The anchor is stored as ``name@version``; versions are never labels (see names.py)."""
    return label.split("@", 1)[0] if label else None


def rate_label(rate_kbps: float) -> str:
    return f"{rate_kbps:g}"


class ResultIndex:
    """The store as the exporter sees it. Not thread-safe: the collector serialises ``refresh`` calls.

    ``run_id`` restricts the index to that one run (``farm run --pushgateway`` pushes just its run); counters
    are then not kept, because a run's own totals pushed as a counter would restart at every push.
    """

    def __init__(self, db: sqlite3.Connection, *, run_id: str | None = None) -> None:
        self._db = db
        self._only = run_id
        self._data_version: tuple[object, ...] | None = None
        # PostgreSQL (a lab's store, through farm.store.postgres's adapter) lacks rowid, data_version and the bare
        # columns of SQLite's GROUP BY ... MAX(); those few statements are spelled for it here
        self._sql = _SQLITE if isinstance(db, sqlite3.Connection) else _POSTGRES
        self._runs: dict[str, _Run] = {}
        self._runs_rowid = 0
        self._folded: set[str] = set()  # finished runs already folded into results
        self._job_watermark = 0
        self._gates_rowid = -1
        self.results: dict[ResultKey, KeyResult] = {}
        self.totals: dict[ResultKey, KeyTotals] = {}
        self.run_level = RunLevel()

    @property
    def keeps_counters(self) -> bool:
        return self._only is None

    def refresh(self) -> Changes:
        version = tuple(self._db.execute(self._sql["version"]).fetchone())
        if version == self._data_version:
            return Changes()
        self._data_version = version
        # jobs first, runs second: a run's row is inserted before any of its jobs, so every job up to this id
        # belongs to a run the runs read below will know
        top_job = int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()[0])
        self._load_runs()
        counters = self._count_new_jobs(top_job) if self.keeps_counters else False
        newly_finished = [
            r for r in self._runs.values() if r.finished_at is not None and r.id not in self._folded
        ]  # fmt: skip
        results = False
        # newest first: on a cold start with a long history, older runs then only fill keys nobody newer has
        for run in sorted(newly_finished, key=lambda r: r.started_at, reverse=True):
            results |= self._fold(run)
            self._folded.add(run.id)
        gates_rowid = int(self._db.execute(self._sql["gates_top"]).fetchone()[0])
        runs_changed = bool(newly_finished) or gates_rowid != self._gates_rowid
        if runs_changed:
            self._gates_rowid = gates_rowid
            self.run_level = self._load_run_level()
        return Changes(results=results, counters=counters, runs=runs_changed)

    # -- runs -----------------------------------------------------------------------------------------
    def _load_runs(self) -> None:
        """New runs by rowid (rows are inserted once), and the finish time of runs that were still running."""
        where, args = ("AND id=?", (self._only,)) if self._only else ("", ())
        for row in self._db.execute(self._sql["new_runs"].format(where=where), (self._runs_rowid, *args)):
            self._runs_rowid = max(self._runs_rowid, int(row[0]))
            self._runs[row[1]] = _Run(row[1], row[2], row[3], bundle_name(row[4]), float(row[5]), row[6])
        running = [r.id for r in self._runs.values() if r.finished_at is None]
        for chunk in _chunks(running, 500):
            marks = ",".join("?" * len(chunk))
            for run_id, finished in self._db.execute(
                f"SELECT id, finished_at FROM runs WHERE finished_at IS NOT NULL AND id IN ({marks})", chunk
            ):
                old = self._runs[run_id]
                self._runs[run_id] = _Run(old.id, old.suite, old.bundle, old.anchor, old.started_at, float(finished))

    # -- counters -------------------------------------------------------------------------------------
    def _count_new_jobs(self, top: int) -> bool:
        if top <= self._job_watermark:
            return False
        rows = self._db.execute(
            "SELECT j.run_id, j.device_id, j.role, j.sequence, j.rate_kbps, j.frames, m.value FROM jobs j"
            " LEFT JOIN measurements m ON m.job_id = j.id AND m.name = ?"
            " WHERE j.id > ? AND j.id <= ? AND j.status = 'ok'",
            (ENERGY, self._job_watermark, top),
        )
        changed = False
        for run_id, device, role, sequence, rate, frames, energy in rows:
            run = self._runs[run_id]
            key = (device, run.suite, run.bundle, role, sequence, rate_label(rate))
            totals = self.totals.setdefault(key, KeyTotals())
            if frames is not None:
                totals.frames += int(frames)
                changed = True
            if energy is not None:
                totals.energy_j = (totals.energy_j or 0.0) + float(energy)
                changed = True
        self._job_watermark = top
        return changed

    # -- per-key results of one finished run ----------------------------------------------------------
    def _fold(self, run: _Run) -> bool:
        """Replace the results of every key this run decoded, unless a later-started run already has them."""
        keyed: dict[ResultKey, list[tuple[int, str]]] = defaultdict(list)
        for job_id, device, role, sequence, rate, status in self._db.execute(
            "SELECT id, device_id, role, sequence, rate_kbps, status FROM jobs WHERE run_id=?", (run.id,)
        ):
            key = (device, run.suite, run.bundle, role, sequence, rate_label(rate))
            held = self.results.get(key)
            if held is None or held.started_at < run.started_at:
                keyed[key].append((int(job_id), status))
        if not keyed:
            return False
        ok_ids = [job_id for jobs in keyed.values() for job_id, status in jobs if status == "ok"]
        values = self._measurements(ok_ids)
        times = self._frame_times(ok_ids)
        warmup = self._warmup(run.id)
        for key, jobs in keyed.items():
            ok = [job_id for job_id, status in jobs if status == "ok"]
            self.results[key] = KeyResult(
                run.id, run.started_at, _medians(ok, values), _pooled_frames(ok, times, warmup)
            )
        return True

    def _measurements(self, job_ids: list[int]) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = defaultdict(dict)
        names = ",".join(f"'{n}'" for n in MEASUREMENTS)
        for chunk in _chunks(job_ids, 500):
            marks = ",".join("?" * len(chunk))
            for job_id, name, value in self._db.execute(
                f"SELECT job_id, name, value FROM measurements WHERE job_id IN ({marks}) AND name IN ({names})"
                " AND value IS NOT NULL",
                chunk,
            ):
                out[int(job_id)][name] = float(value)
        return out

    def _frame_times(self, job_ids: list[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for chunk in _chunks(job_ids, 500):
            marks = ",".join("?" * len(chunk))
            for job_id, text in self._db.execute(
                f"SELECT id, frame_times_json FROM jobs WHERE id IN ({marks}) AND frame_times_json IS NOT NULL", chunk
            ):
                out[int(job_id)] = json.loads(text)
        return out

    def _warmup(self, run_id: str) -> int:
        row = self._db.execute("SELECT suite_json FROM runs WHERE id=?", (run_id,)).fetchone()
        try:
            return int(json.loads(row[0]).get("warmup_frames", 0))
        except (TypeError, ValueError, AttributeError):
            return 0

    # -- run level ------------------------------------------------------------------------------------
    def _load_run_level(self) -> RunLevel:
        level = RunLevel()
        latest: dict[tuple[str, str], _Run] = {}
        for run in self._runs.values():
            if run.finished_at is None:
                continue
            held = latest.get((run.suite, run.bundle))
            if held is None or held.started_at < run.started_at:
                latest[(run.suite, run.bundle)] = run
        for (suite, bundle), run in latest.items():
            assert run.finished_at is not None
            level.durations[(suite, bundle)] = max(0.0, run.finished_at - run.started_at)
            level.gates.extend(self._gates(run))
        only, args = ("AND r.id=?", (self._only,)) if self._only else ("", ())
        # SQLite returns the other columns of the row that holds MAX(): the latest run per group
        for device, suite, bundle, finished, _ in self._db.execute(self._sql["last_run"].format(only=only), args):
            level.last_run[(device, suite, bundle)] = float(finished)
        level.bd_rates = self._bd_rates(only, args)
        for device, suite, bundle, _, name, value, _ in self._latest_run_metrics(tuple(COMPLEXITY), "", only, args):
            if value is not None:
                level.complexity[(str(name), device, suite, bundle)] = float(value)
        return level

    def _latest_run_metrics(self, names: tuple[str, ...], extra: str, only: str, args: tuple[str, ...]) -> list[Any]:
        sql = self._sql["bd_rates"].format(names=",".join("?" * len(names)), extra=extra, only=only)
        return list(self._db.execute(sql, (*names, *args)))

    def _bd_rates(self, only: str, args: tuple[str, ...]) -> dict[tuple[str, str, str, str, str], float]:
        """Per anchor: ``bd_rate[NAME].METRIC`` rows under anchor=NAME. A run stored before several anchors has
        only ``bd_rate.METRIC``, exported under its anchor bundle's name (which is also the name a single
        ``--anchor PATH`` gets), unless a newer run of the key has per-anchor rows."""
        named: dict[tuple[str, str, str, str, str], tuple[float, float]] = {}
        plain: dict[tuple[str, str, str, str, str], tuple[float, float]] = {}
        newest: dict[tuple[str, str, str], float] = {}
        rows = self._latest_run_metrics(tuple(BD_RATES), " OR m.name LIKE 'bd_rate[%'", only, args)
        for device, suite, bundle, anchor_label, name, value, started in rows:
            base, anchor = split_anchor(str(name))
            if value is None or base not in BD_RATES:
                continue
            if anchor is not None:
                named[(device, suite, bundle, anchor, BD_RATES[base])] = (float(value), float(started))
                key = (device, suite, bundle)
                newest[key] = max(newest.get(key, 0.0), float(started))
            elif anchor_label:
                plain[(device, suite, bundle, bundle_name(anchor_label) or "", BD_RATES[base])] = (
                    float(value), float(started))  # fmt: skip
        out = {k: v for k, (v, _) in named.items()}
        for k, (v, started) in plain.items():
            if started > newest.get(k[:3], 0.0) and k not in out:
                out[k] = v
        return out

    def _gates(self, run: _Run) -> Iterable[GateRow]:
        rows = self._db.execute(
            "SELECT gate_index, metric, op, threshold, scope_key, stat, value, verdict FROM gates"
            " WHERE run_id=? AND evaluation=(SELECT MAX(evaluation) FROM gates WHERE run_id=?)"
            " ORDER BY gate_index, scope_key",
            (run.id, run.id),
        ).fetchall()
        labels = [_gate_label(metric, op, threshold, stat) for _, metric, op, threshold, _, stat, _, _ in rows]
        indices: dict[str, set[int]] = defaultdict(set)
        for (index, *_), label in zip(rows, labels, strict=True):
            indices[label].add(int(index))
        for (index, _, _, _, scope, _, value, verdict), label in zip(rows, labels, strict=True):
            if len(indices[label]) > 1:  # two identical gates in one suite: keep their series apart
                label = f"{label} #{index}"
            yield GateRow(run.suite, run.bundle, label, scope, verdict, _number(value))


def _gate_label(metric: str, op: str, threshold: str, stat: str) -> str:
    """How people write the gate (``fps.p50 >= 30``); the statistic only when it is not the default median."""
    try:
        shown = f"{float(threshold):g}"
    except ValueError:
        shown = threshold
    return f"{metric} {op} {shown}" + (f" ({stat})" if stat != "median" else "")


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None  # e.g. consistency's "bitexact": not a number, so no farm_gate_value


def _medians(ok: list[int], values: dict[int, dict[str, float]]) -> dict[str, float]:
    """Each metric's declared summary (median) over the key's successful repeats, only where every one of them
    measured it (as farm report)."""
    out: dict[str, float] = {}
    if not ok:
        return out
    for name in MEASUREMENTS:
        summary = aggregate(name, [values.get(j, {}).get(name) for j in ok])
        if summary is not None:
            out[name] = summary
    return out


def _pooled_frames(ok: list[int], times: dict[int, list[int]], warmup: int) -> FrameTimes | None:
    """Quantiles of the steady frames of every successful repeat together; missing if any repeat lacks them."""
    steady: list[int] = []
    for job_id in ok:
        frames = times.get(job_id, [])[warmup:]
        if not frames:
            return None
        steady.extend(frames)
    if not steady:
        return None
    arr = np.asarray(steady, dtype=np.float64) / 1e9
    quantiles = tuple(float(q) for q in np.percentile(arr, [q * 100 for q in QUANTILES]))
    return FrameTimes(quantiles, int(arr.size), float(arr.sum()))


def _chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
