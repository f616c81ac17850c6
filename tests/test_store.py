"""The store: WAL, NULL for missing, append-only gate evaluations."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from farm.errors import FarmError
from farm.store import SCHEMA_VERSION, Measurement, Store


def _run(store: Store, run_id: str = "r1") -> None:
    store.start_run(
        run_id, suite_name="s", suite_digest="d", suite_json="{}", bundle_name="b", bundle_version="1",
        bundle_digest="x" * 64, host="h", farm_version="0", conventions={"fps": "steady"},
    )  # fmt: skip


def test_missing_is_null_with_a_reason(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    _run(store)
    job = {"device_id": "d", "role": "test", "sequence": "s", "rate_kbps": 100, "repeat": 0, "status": "ok",
           "bitstream_sha": "b", "bitstream_bytes": 10, "source_sha": "s", "started_at": 0,
           "finished_at": 1}  # fmt: skip
    job_id = store.add_job("r1", job, [Measurement("power_w", None, "W", "no meter", "device has no power meter")])
    rows = store.measurements("r1")[job_id]
    assert rows["power_w"]["value"] is None and rows["power_w"]["missing_reason"] == "device has no power meter"
    mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_gate_evaluations_are_appended_never_rewritten(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    _run(store)
    verdict = {"gate_index": 0, "metric": "fps", "op": ">=", "threshold": 30, "scope": "each", "scope_key": "d",
               "stat": "median", "value": 10.0, "verdict": "fail", "detail": "", "inputs": {}}  # fmt: skip
    assert store.add_gate_evaluation("r1", [verdict]) == 1
    assert store.add_gate_evaluation("r1", [verdict | {"verdict": "pass", "value": 40.0}]) == 2
    assert [r["verdict"] for r in store.gate_verdicts("r1", 1)] == ["fail"]
    assert [r["verdict"] for r in store.gate_verdicts("r1")] == ["pass"]


def test_data_survives_reopening_and_prefix_lookup(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    _run(store, "20260101-000000-abcdef")
    store.close()
    again = Store(tmp_path / "r.db")
    assert again.resolve_run_id("20260101") == "20260101-000000-abcdef"
    assert again.resolve_run_id("nope") is None


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


def test_a_schema_2_database_is_migrated_in_place_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(V2_SCHEMA)
    store = Store(path)
    assert store._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    ms = store.measurements("old")[1]
    assert ms["fps"]["value"] == 59.5 and ms["power_w"]["value"] is None
    assert ms["power_w"]["missing_reason"] == "device has no power meter"
    [old] = [dict(r) for r in store.gate_verdicts("old")]
    assert (old["verdict"], old["value"], json.loads(old["inputs_json"]), old["gate_json"]) == (
        "pass", "59.5", {"values": [59.5]}, None,
    )  # fmt: skip
    # the new parts work on the migrated file, and a second open changes nothing
    verdict = {"gate_index": 0, "metric": "fps", "op": ">=", "threshold": 30.0, "scope": "each", "scope_key": "local",
               "stat": "median", "value": 59.5, "verdict": "pass", "detail": "", "inputs": {},
               "gate": {"metric": "fps"}}  # fmt: skip
    assert store.add_gate_evaluation("old", [verdict]) == 2
    store.add_output_diff("old", "seq", 100, "b" * 64, "a" * 64, 3, 2.0, 80.0, None)
    assert store.output_diffs("old")[0]["a_sha"] == "a" * 64
    store.close()
    again = Store(path)
    assert [r["gate_json"] for r in again.gate_verdicts("old", 1)] == [None]
    assert [r["gate_json"] for r in again.gate_verdicts("old")] == ['{"metric": "fps"}']
    assert len(again.jobs("old")) == 1


def test_a_database_from_a_newer_farm_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "r.db").close()
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(FarmError, match="schema 99, newer than this farm"):
        Store(tmp_path / "r.db")


def test_last_release_is_the_newest_of_the_suite_other_than_the_run_itself(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    for run_id in ("r1", "r2", "r3"):
        _run(store, run_id)

    def release(tag: str, run_id: str, suite: str = "s") -> None:
        store.add_release(tag=tag, version=tag, run_id=run_id, suite_name=suite, bundle_digest="x", evaluation=1,
                          repo="/r", commit_sha="c", manifest_json="{}", manifest_sha256="m")  # fmt: skip

    assert store.last_release("s") is None
    release("v1", "r1")
    release("v2", "r2")
    release("other", "r3", suite="t")
    assert store.last_release("s")["tag"] == "v2"
    assert store.last_release("s", exclude_run="r2")["tag"] == "v1"
    assert [r["run_id"] for r in store.releases("v1")] == ["r1"]
