"""Shared store helpers for tests: a minimal run, a minimal job, and a store as an older farm wrote it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from farm.store import Store
from farm.store.postgres import is_url

JOB = {"device_id": "d", "role": "test", "sequence": "s", "rate_kbps": 100.0, "repeat": 0, "status": "ok",
       "bitstream_sha": "b", "bitstream_bytes": 10, "source_sha": "s",
       "started_at": 0.0, "finished_at": 1.0}  # fmt: skip


def start(store: Store, run_id: str = "r1", **extra: Any) -> None:
    store.start_run(
        run_id, suite_name="s", suite_digest="d", suite_json="{}", bundle_name="b", bundle_version="1",
        bundle_digest="x" * 64, host="h", farm_version="0", conventions={"fps": "steady"}, **extra,
    )  # fmt: skip


ROOT = Path(__file__).resolve().parents[1]


def orphan(target: str | Path, run_id: str) -> int:
    """Start a run from another process that then exits without finishing it (as after a SIGKILL)."""
    code = (
        "import sys; from farm.store import open_store; from tests.store_fixtures import start;"
        "start(open_store(sys.argv[1]), sys.argv[2])"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, str(target), run_id], env=env, cwd=ROOT, check=True)
    assert proc.returncode == 0
    if is_url(target):
        return _controller_pid_pg(str(target), run_id)
    db = sqlite3.connect(target)
    try:
        return int(db.execute("SELECT controller_pid FROM runs WHERE id=?", (run_id,)).fetchone()[0])
    finally:
        db.close()


def _controller_pid_pg(url: str, run_id: str) -> int:
    import psycopg

    with psycopg.connect(url) as db:
        row = db.execute("SELECT controller_pid FROM runs WHERE id=%s", (run_id,)).fetchone()
    assert row is not None
    return int(row[0])


# The schema as farm 0.1.0 wrote it (store schema 2), verbatim: a database made by it must stay readable.
V2_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    id TEXT PRIMARY KEY, suite_name TEXT NOT NULL, suite_digest TEXT NOT NULL, suite_json TEXT NOT NULL,
    bundle_name TEXT NOT NULL, bundle_version TEXT NOT NULL, bundle_digest TEXT NOT NULL,
    anchor_name TEXT, anchor_digest TEXT, started_at REAL NOT NULL, finished_at REAL, status TEXT NOT NULL,
    host TEXT NOT NULL, farm_version TEXT NOT NULL, conventions_json TEXT NOT NULL, plan_json TEXT NOT NULL,
    summary_json TEXT
);
CREATE TABLE run_devices (
    run_id TEXT NOT NULL REFERENCES runs(id), device_id TEXT NOT NULL, platform TEXT NOT NULL, target TEXT NOT NULL,
    tags_json TEXT NOT NULL, properties_json TEXT NOT NULL, status TEXT NOT NULL, error TEXT, recorded_at REAL NOT NULL
);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(id), device_id TEXT NOT NULL,
    role TEXT NOT NULL, sequence TEXT NOT NULL, rate_kbps REAL NOT NULL, repeat INTEGER NOT NULL,
    status TEXT NOT NULL, error TEXT, bitstream_sha TEXT NOT NULL, bitstream_bytes INTEGER NOT NULL,
    source_sha TEXT NOT NULL, output_sha TEXT, frames INTEGER, frame_times_json TEXT, stderr_tail TEXT,
    started_at REAL NOT NULL, finished_at REAL NOT NULL
);
CREATE INDEX jobs_run ON jobs(run_id);
CREATE TABLE measurements (
    job_id INTEGER NOT NULL REFERENCES jobs(id), name TEXT NOT NULL, value REAL, unit TEXT NOT NULL,
    convention TEXT NOT NULL, missing_reason TEXT, UNIQUE (job_id, name)
);
CREATE TABLE run_metrics (
    run_id TEXT NOT NULL REFERENCES runs(id), device_id TEXT NOT NULL, name TEXT NOT NULL, value REAL,
    unit TEXT NOT NULL, convention TEXT NOT NULL, detail TEXT, recorded_at REAL NOT NULL
);
CREATE TABLE gates (
    run_id TEXT NOT NULL REFERENCES runs(id), evaluation INTEGER NOT NULL, gate_index INTEGER NOT NULL,
    metric TEXT NOT NULL, op TEXT NOT NULL, threshold TEXT NOT NULL, scope TEXT NOT NULL, scope_key TEXT NOT NULL,
    stat TEXT NOT NULL, value TEXT, verdict TEXT NOT NULL, detail TEXT NOT NULL, inputs_json TEXT NOT NULL,
    evaluated_at REAL NOT NULL
);
INSERT INTO meta VALUES ('schema_version', '2');
INSERT INTO runs VALUES ('old', 's', 'd', '{}', 'b', '1', 'x', NULL, NULL, 1.0, 2.0, 'complete', 'h', '0.1.0',
    '{}', '{"devices": {"local": {"tags": [], "test_jobs": 1}}}', '{}');
INSERT INTO jobs VALUES (1, 'old', 'local', 'test', 'seq', 100, 0, 'ok', NULL, 'b', 10, 's', 'o', 3, '[1,2,3]',
    NULL, 1.0, 2.0);
INSERT INTO measurements VALUES (1, 'fps', 59.5, 'fps', 'steady', NULL);
INSERT INTO measurements VALUES (1, 'power_w', NULL, 'W', 'no meter', 'device has no power meter');
INSERT INTO gates VALUES ('old', 1, 0, 'fps', '>=', '30.0', 'each', 'local', 'median', '59.5', 'pass',
    'median over 1 jobs', '{"values": [59.5]}', 3.0);
"""
