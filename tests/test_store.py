"""The store: WAL, NULL for missing, append-only gate evaluations."""

from __future__ import annotations

from pathlib import Path

from farm.store import Measurement, Store


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
