"""The store: WAL, NULL for missing, append-only gate evaluations."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from farm.errors import FarmError
from farm.store import SCHEMA_VERSION, Measurement, Store, open_store
from farm.store.postgres import is_url
from farm.store.schema import MIGRATIONS, SCHEMA, postgres_ddl, statements
from tests.store_fixtures import V2_SCHEMA


def _run(store: Store, run_id: str = "r1") -> None:
    store.start_run(
        run_id, suite_name="s", suite_digest="d", suite_json="{}", bundle_name="b", bundle_version="1",
        bundle_digest="x" * 64, host="h", farm_version="0", conventions={"fps": "steady"},
    )  # fmt: skip


def test_missing_is_null_with_a_reason(store_target: str) -> None:
    store = open_store(store_target)
    _run(store)
    job = {"device_id": "d", "role": "test", "sequence": "s", "rate_kbps": 100, "repeat": 0, "status": "ok",
           "bitstream_sha": "b", "bitstream_bytes": 10, "source_sha": "s", "started_at": 0,
           "finished_at": 1}  # fmt: skip
    job_id = store.add_job("r1", job, [Measurement("power_w", None, "W", "no meter", "device has no power meter")])
    rows = store.measurements("r1")[job_id]
    assert rows["power_w"]["value"] is None and rows["power_w"]["missing_reason"] == "device has no power meter"
    if not store_target.startswith("postgresql://"):
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_gate_evaluations_are_appended_never_rewritten(store_target: str) -> None:
    store = open_store(store_target)
    _run(store)
    verdict = {"gate_index": 0, "metric": "fps", "op": ">=", "threshold": 30, "scope": "each", "scope_key": "d",
               "stat": "median", "value": 10.0, "verdict": "fail", "detail": "", "inputs": {}}  # fmt: skip
    assert store.add_gate_evaluation("r1", [verdict]) == 1
    assert store.add_gate_evaluation("r1", [verdict | {"verdict": "pass", "value": 40.0}]) == 2
    assert [r["verdict"] for r in store.gate_verdicts("r1", 1)] == ["fail"]
    assert [r["verdict"] for r in store.gate_verdicts("r1")] == ["pass"]


def test_data_survives_reopening_and_prefix_lookup(store_target: str) -> None:
    store = open_store(store_target)
    _run(store, "20260101-000000-abcdef")
    store.close()
    again = open_store(store_target)
    assert again.resolve_run_id("20260101") == "20260101-000000-abcdef"
    assert again.resolve_run_id("nope") is None


def test_a_schema_2_database_is_migrated_in_place_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(V2_SCHEMA)
    store = Store(path)
    assert store._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert store.run("old")["heartbeat_at"] is None  # schema 7: NULL for a run an older farm wrote
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


@pytest.mark.parametrize("readonly", [False, True])
def test_a_database_from_a_newer_farm_is_refused(store_target: str, readonly: bool) -> None:
    store = open_store(store_target)
    store._db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    store.close()
    with pytest.raises(FarmError, match="schema 99, newer than this farm") as info:
        open_store(store_target, readonly=readonly)
    assert info.value.exit_code == 2


def test_last_release_is_the_newest_of_the_suite_other_than_the_run_itself(store_target: str) -> None:
    store = open_store(store_target)
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


def _schema_6_store(target: str) -> None:
    """A store as a farm of schema 6 left it: a finished run, and one still running under another host."""
    ddl = [*statements(SCHEMA), *(st for v in range(3, 7) for st in statements(MIGRATIONS[v]))]
    rows = [
        "INSERT INTO meta VALUES ('schema_version', '6')",
        "INSERT INTO runs(id, suite_name, suite_digest, suite_json, bundle_name, bundle_version, bundle_digest,"
        " started_at, finished_at, status, host, farm_version, conventions_json, plan_json, summary_json,"
        " controller_host, controller_pid, controller_start) VALUES"
        " ('done', 's', 'd', '{}', 'b', '1', 'x', 1.0, 2.0, 'complete', 'h', '0.6', '{}', '{}', '{}', 'h', 7, 'b:1'),"
        " ('away', 's', 'd', '{}', 'b', '1', 'x', 1.0, NULL, 'running', 'h', '0.6', '{}', '{}', NULL, 'host-b', 7,"
        " 'b:1')",
    ]
    if is_url(target):
        import psycopg

        with psycopg.connect(target, autocommit=True) as db:
            for statement in [*map(postgres_ddl, ddl), *rows]:
                db.execute(statement)
        return
    with sqlite3.connect(target) as db:
        for statement in [*ddl, *rows]:
            db.execute(statement)


def _raw_runs(target: str) -> dict[str, dict[str, object]]:
    """Every run row as stored, read past the store (which would upgrade an older one in memory)."""
    if is_url(target):
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(target, row_factory=dict_row) as pg:
            return {str(r["id"]): dict(r) for r in pg.execute("SELECT * FROM runs")}
    with sqlite3.connect(target) as db:
        db.row_factory = sqlite3.Row
        return {str(r["id"]): dict(r) for r in db.execute("SELECT * FROM runs")}


def test_a_schema_6_store_gains_heartbeats_and_keeps_its_runs(store_target: str) -> None:
    _schema_6_store(store_target)
    before = _raw_runs(store_target)
    store = open_store(store_target, migrate=True)  # a lab's store: as `farm store migrate` does
    assert store._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    after = _raw_runs(store_target)
    assert {k: (r["status"], r.pop("heartbeat_at")) for k, r in after.items()} == {
        "done": ("complete", None), "away": ("running", None),  # another host's, without a heartbeat: kept
    }  # fmt: skip
    assert after == before  # every column it had is as it was
    assert store.reap_orphans() == []
