"""SQLite result store: the single source of truth for gates, reports, exporter and releases.

WAL mode and one short transaction per result mean a crash loses nothing already measured and readers
(``farm serve``, ``farm report``) never block a running farm. Rows are only ever inserted: re-evaluating a
run's gates appends a new evaluation, so what a release was tagged on can always be reproduced.
A measurement that could not be taken is stored as NULL with its reason, never as 0.

The schema only grows: a newer farm migrates an older database in place by adding tables and nullable
columns (see ``_MIGRATIONS``), so every result already stored stays readable and nothing is rewritten. A
database written by a newer farm than this one is refused rather than misread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from farm.errors import FarmError
from farm.measures import Measurement as Measurement  # re-export: a session builds them without the store

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    suite_name TEXT NOT NULL, suite_digest TEXT NOT NULL, suite_json TEXT NOT NULL,
    bundle_name TEXT NOT NULL, bundle_version TEXT NOT NULL, bundle_digest TEXT NOT NULL,
    anchor_name TEXT, anchor_digest TEXT,
    started_at REAL NOT NULL, finished_at REAL,
    status TEXT NOT NULL,             -- running | complete | incomplete
    host TEXT NOT NULL, farm_version TEXT NOT NULL,
    conventions_json TEXT NOT NULL,
    plan_json TEXT NOT NULL,          -- devices (with tags) and planned test jobs per device
    summary_json TEXT                 -- bytes pushed, encodes reused, ... (set once at the end)
);
CREATE TABLE IF NOT EXISTS run_devices (
    run_id TEXT NOT NULL REFERENCES runs(id), device_id TEXT NOT NULL,
    platform TEXT NOT NULL, target TEXT NOT NULL, tags_json TEXT NOT NULL,
    properties_json TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id), device_id TEXT NOT NULL,
    role TEXT NOT NULL,               -- test | anchor
    sequence TEXT NOT NULL, rate_kbps REAL NOT NULL, repeat INTEGER NOT NULL,
    status TEXT NOT NULL,             -- ok | failed
    error TEXT,
    bitstream_sha TEXT NOT NULL, bitstream_bytes INTEGER NOT NULL, source_sha TEXT NOT NULL,
    output_sha TEXT, frames INTEGER,
    frame_times_json TEXT,            -- raw per-frame decode ns, for quantiles elsewhere
    stderr_tail TEXT,
    started_at REAL NOT NULL, finished_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs(run_id);
CREATE TABLE IF NOT EXISTS measurements (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    name TEXT NOT NULL, value REAL, unit TEXT NOT NULL,
    convention TEXT NOT NULL, missing_reason TEXT,
    UNIQUE (job_id, name)
);
CREATE TABLE IF NOT EXISTS run_metrics (
    run_id TEXT NOT NULL REFERENCES runs(id), device_id TEXT NOT NULL,
    name TEXT NOT NULL, value REAL, unit TEXT NOT NULL, convention TEXT NOT NULL, detail TEXT,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS gates (
    run_id TEXT NOT NULL REFERENCES runs(id), evaluation INTEGER NOT NULL,
    gate_index INTEGER NOT NULL, metric TEXT NOT NULL, op TEXT NOT NULL, threshold TEXT NOT NULL,
    scope TEXT NOT NULL, scope_key TEXT NOT NULL, stat TEXT NOT NULL,
    value TEXT, verdict TEXT NOT NULL,  -- pass | fail | missing | inconclusive
    detail TEXT NOT NULL, inputs_json TEXT NOT NULL, evaluated_at REAL NOT NULL
);
"""

# version reached -> statements that bring a database of the previous version there. Only additions: an older
# farm's rows keep every column they had, and new columns are nullable (NULL = recorded before they existed).
_MIGRATIONS: dict[int, str] = {
    3: """
ALTER TABLE gates ADD COLUMN gate_json TEXT;      -- the gate as declared (baseline, alpha, min_change, ...)
CREATE TABLE IF NOT EXISTS output_diffs (         -- decoded outputs of one bitstream that differ, compared
    run_id TEXT NOT NULL REFERENCES runs(id),
    sequence TEXT NOT NULL, rate_kbps REAL NOT NULL,
    a_sha TEXT NOT NULL, b_sha TEXT NOT NULL,     -- a_sha < b_sha
    frames INTEGER,
    max_abs_diff REAL,                            -- largest |a - b| over every sample of every plane
    psnr_min_db REAL,                             -- worst frame's PSNR-YUV of b against a (capped at 100 dB)
    detail TEXT,                                  -- why they could not be compared (then both values NULL)
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS output_diffs_run ON output_diffs(run_id);
CREATE TABLE IF NOT EXISTS releases (
    tag TEXT NOT NULL, version TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs(id), suite_name TEXT NOT NULL, bundle_digest TEXT NOT NULL,
    evaluation INTEGER NOT NULL,                  -- the gate evaluation the release was granted on
    repo TEXT NOT NULL, commit_sha TEXT NOT NULL,
    manifest_json TEXT NOT NULL, manifest_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL
);
""",
}


def _statements(script: str) -> list[str]:
    """Split a DDL script into statements (executescript would commit the migration's transaction early)."""
    out: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    if pending.strip():
        out.append(pending.strip())
    return out


def default_store_path() -> Path:
    return Path(os.environ.get("FARM_STORE", ".farm/results.db"))


class Store:
    """Thread-safe: device sessions write from their own threads through one serialised connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def _migrate(self) -> None:
        """Create a new database at the current schema, or bring an older one up to it, in one transaction.

        Concurrent farms opening the same file serialise on the write lock; the second finds nothing to do.
        """
        with self._tx() as db:
            for statement in _statements(_SCHEMA):
                db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row is not None else 2  # _SCHEMA above is version 2
            if version > SCHEMA_VERSION:
                raise FarmError(
                    f"{self.path} has store schema {version}, newer than this farm's ({SCHEMA_VERSION}): "
                    "upgrade the farm"
                )
            for target in sorted(t for t in _MIGRATIONS if t > version):
                for statement in _statements(_MIGRATIONS[target]):
                    db.execute(statement)
                version = target
            db.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(version),),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- writes ---------------------------------------------------------------------------------------
    def start_run(self, run_id: str, **fields: Any) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs(id, suite_name, suite_digest, suite_json, bundle_name, bundle_version,"
                " bundle_digest, anchor_name, anchor_digest, started_at, status, host, farm_version,"
                " conventions_json, plan_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id, fields["suite_name"], fields["suite_digest"], fields["suite_json"],
                    fields["bundle_name"], fields["bundle_version"], fields["bundle_digest"],
                    fields.get("anchor_name"), fields.get("anchor_digest"), time.time(), "running",
                    fields["host"], fields["farm_version"], json.dumps(fields["conventions"], sort_keys=True),
                    json.dumps(fields.get("plan", {}), sort_keys=True),
                ),
            )  # fmt: skip

    def finish_run(self, run_id: str, status: str, summary: Mapping[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE runs SET finished_at=?, status=?, summary_json=? WHERE id=? AND finished_at IS NULL",
                (time.time(), status, json.dumps(summary, sort_keys=True), run_id),
            )

    def add_device(
        self, run_id: str, device_id: str, platform: str, target: str, tags: list[str],
        properties: Mapping[str, Any], status: str, error: str | None,
    ) -> None:  # fmt: skip
        with self._tx() as db:
            db.execute(
                "INSERT INTO run_devices VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, device_id, platform, target, json.dumps(tags), json.dumps(properties, sort_keys=True),
                 status, error, time.time()),
            )  # fmt: skip

    def add_job(self, run_id: str, job: Mapping[str, Any], measurements: list[Measurement]) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO jobs(run_id, device_id, role, sequence, rate_kbps, repeat, status, error,"
                " bitstream_sha, bitstream_bytes, source_sha, output_sha, frames, frame_times_json,"
                " stderr_tail, started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id, job["device_id"], job["role"], job["sequence"], job["rate_kbps"], job["repeat"],
                    job["status"], job.get("error"), job["bitstream_sha"], job["bitstream_bytes"],
                    job["source_sha"], job.get("output_sha"), job.get("frames"),
                    json.dumps(list(job["frame_times_ns"])) if job.get("frame_times_ns") else None,
                    job.get("stderr_tail"), job["started_at"], job["finished_at"],
                ),
            )  # fmt: skip
            job_id = int(cur.lastrowid or 0)
            self._insert_measurements(db, job_id, measurements)
        return job_id

    def add_measurements(self, job_id: int, measurements: list[Measurement]) -> None:
        with self._tx() as db:
            self._insert_measurements(db, job_id, measurements)

    @staticmethod
    def _insert_measurements(db: sqlite3.Connection, job_id: int, ms: list[Measurement]) -> None:
        db.executemany(
            "INSERT INTO measurements VALUES (?,?,?,?,?,?)",
            [(job_id, m.name, m.value, m.unit, m.convention, m.missing_reason) for m in ms],
        )

    def add_run_metric(
        self, run_id: str, device_id: str, name: str, value: float | None, unit: str, convention: str,
        detail: str | None,
    ) -> None:  # fmt: skip
        with self._tx() as db:
            db.execute(
                "INSERT INTO run_metrics VALUES (?,?,?,?,?,?,?,?)",
                (run_id, device_id, name, value, unit, convention, detail, time.time()),
            )

    def add_gate_evaluation(self, run_id: str, verdicts: list[Mapping[str, Any]]) -> int:
        with self._tx() as db:
            row = db.execute("SELECT COALESCE(MAX(evaluation), 0) FROM gates WHERE run_id=?", (run_id,)).fetchone()
            evaluation = int(row[0]) + 1
            now = time.time()
            db.executemany(
                "INSERT INTO gates(run_id, evaluation, gate_index, metric, op, threshold, scope, scope_key, stat,"
                " value, verdict, detail, inputs_json, evaluated_at, gate_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (run_id, evaluation, v["gate_index"], v["metric"], v["op"], str(v["threshold"]), v["scope"],
                     v["scope_key"], v["stat"], None if v["value"] is None else str(v["value"]), v["verdict"],
                     v["detail"], json.dumps(v["inputs"], sort_keys=True, default=str), now,
                     json.dumps(v["gate"], sort_keys=True) if v.get("gate") else None)
                    for v in verdicts
                ],
            )  # fmt: skip
        return evaluation

    def add_output_diff(
        self, run_id: str, sequence: str, rate_kbps: float, a_sha: str, b_sha: str, frames: int | None,
        max_abs_diff: float | None, psnr_min_db: float | None, detail: str | None,
    ) -> None:  # fmt: skip
        """One comparison of two different decoded outputs of the same bitstream (stored with a_sha < b_sha)."""
        a_sha, b_sha = sorted((a_sha, b_sha))
        with self._tx() as db:
            db.execute(
                "INSERT INTO output_diffs VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_id, sequence, rate_kbps, a_sha, b_sha, frames, max_abs_diff, psnr_min_db, detail, time.time()),
            )

    def add_release(
        self, *, tag: str, version: str, run_id: str, suite_name: str, bundle_digest: str, evaluation: int,
        repo: str, commit_sha: str, manifest_json: str, manifest_sha256: str,
    ) -> None:  # fmt: skip
        with self._tx() as db:
            db.execute(
                "INSERT INTO releases VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (tag, version, run_id, suite_name, bundle_digest, evaluation, repo, commit_sha, manifest_json,
                 manifest_sha256, time.time()),
            )  # fmt: skip

    # -- reads ----------------------------------------------------------------------------------------
    def run(self, run_id: str) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()  # type: ignore[no-any-return]

    def runs(self, limit: int = 50) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute("SELECT * FROM runs ORDER BY started_at DESC LIMIT ?", (limit,)))

    def devices(self, run_id: str) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute("SELECT * FROM run_devices WHERE run_id=? ORDER BY device_id", (run_id,)))

    def jobs(self, run_id: str) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute("SELECT * FROM jobs WHERE run_id=? ORDER BY id", (run_id,)))

    def measurements(self, run_id: str) -> dict[int, dict[str, sqlite3.Row]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT m.* FROM measurements m JOIN jobs j ON j.id = m.job_id WHERE j.run_id=?", (run_id,)
            )
            out: dict[int, dict[str, sqlite3.Row]] = {}
            for row in rows:
                out.setdefault(int(row["job_id"]), {})[row["name"]] = row
            return out

    def run_metrics(self, run_id: str) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute("SELECT * FROM run_metrics WHERE run_id=? ORDER BY rowid", (run_id,)))

    def gate_verdicts(self, run_id: str, evaluation: int | None = None) -> list[sqlite3.Row]:
        with self._lock:
            if evaluation is None:
                row = self._db.execute("SELECT MAX(evaluation) FROM gates WHERE run_id=?", (run_id,)).fetchone()
                evaluation = row[0]
            if evaluation is None:
                return []
            return list(
                self._db.execute(
                    "SELECT * FROM gates WHERE run_id=? AND evaluation=? ORDER BY gate_index, scope_key",
                    (run_id, evaluation),
                )
            )

    def output_diffs(self, run_id: str) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute("SELECT * FROM output_diffs WHERE run_id=? ORDER BY rowid", (run_id,)))

    def last_release(self, suite_name: str, exclude_run: str | None = None) -> sqlite3.Row | None:
        """The newest release of a suite (the default baseline of statistical gates)."""
        with self._lock:
            return self._db.execute(  # type: ignore[no-any-return]
                "SELECT * FROM releases WHERE suite_name=? AND run_id IS NOT ? ORDER BY created_at DESC, rowid DESC"
                " LIMIT 1",
                (suite_name, exclude_run),
            ).fetchone()

    def releases(self, tag: str | None = None) -> list[sqlite3.Row]:
        with self._lock:
            if tag is None:
                return list(self._db.execute("SELECT * FROM releases ORDER BY created_at DESC, rowid DESC"))
            return list(
                self._db.execute("SELECT * FROM releases WHERE tag=? ORDER BY created_at DESC, rowid DESC", (tag,))
            )

    def resolve_run_id(self, prefix: str) -> str | None:
        """Accept a unique prefix of a run id, as git does for commits."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM runs WHERE id LIKE ? LIMIT 2", (prefix + "%",)).fetchall()
        return str(rows[0][0]) if len(rows) == 1 else None
