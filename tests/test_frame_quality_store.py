"""Per-frame quality rows (schema 6 ``frame_quality``) on both backends: typed rows in and out, once per output."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from farm.release.manifest import results_digests
from farm.report.frames import frames_section, per_frame_json
from farm.store import SCHEMA_VERSION, FrameQuality, Store, open_store
from farm.store.copy import copy_store
from farm.store.schema import MIGRATIONS
from tests.store_fixtures import JOB, V2_SCHEMA, start


def frames(output: str, n: int, source: str = "src") -> list[FrameQuality]:
    return [
        FrameQuality(output, source, t, 40.0 + t, 45.5, 46.25, (6 * (40.0 + t) + 45.5 + 46.25) / 8, 0.9, None,
                     None if t == 0 else 0.5 * t)
        for t in range(n)
    ]  # fmt: skip


def test_rows_round_trip_typed_with_nulls_and_each_output_once_per_run(store_target: str) -> None:
    store = open_store(store_target)
    start(store)
    start(store, "other")
    written = frames("out-a", 5) + frames("out-b", 3)
    assert store.add_frame_quality("r1", written) == 8
    assert store.frame_quality("r1") == written  # vmaf not requested: None; frame 0 has no flicker: None
    assert store.add_frame_quality("r1", frames("out-a", 5) + frames("out-c", 2)) == 2  # a resume adds only out-c
    assert [f.output_sha for f in store.frame_quality("r1")].count("out-a") == 5
    assert store.add_frame_quality("other", frames("out-a", 5)) == 5  # another run keeps its own rows
    assert store.frame_quality("missing-run") == []
    read = open_store(store_target, readonly=True)
    assert read.frame_quality("other") == frames("out-a", 5)


def test_a_schema_2_store_gains_the_anchors_column_and_the_frame_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(V2_SCHEMA)
    store = Store(path)
    columns = {row[1] for row in store._db.execute("PRAGMA table_info(runs)")}
    assert max(MIGRATIONS) == SCHEMA_VERSION and "anchors_json" in columns
    assert store.add_frame_quality("old", frames("out-a", 3)) == 3
    assert store.frame_quality("old") == frames("out-a", 3)


def test_copy_carries_frames_into_the_digest_and_older_runs_keep_theirs(tmp_path: Path) -> None:
    source = Store(tmp_path / "a.db")
    start(source, "old")  # a run without per-frame rows (as before schema 6): its digest does not change
    before = results_digests(source, "old")
    assert "frame_quality" not in before
    start(source, "new")
    source.add_frame_quality("new", frames("out", 4))
    assert "frame_quality" in results_digests(source, "new")
    dest = Store(tmp_path / "b.db")
    copied = {c.run_id: c.rows for c in copy_store(source, dest)}
    assert copied["new"] == copied["old"] + 4
    assert dest.frame_quality("new") == frames("out", 4)
    assert results_digests(dest, "old") == before


def test_report_maps_rows_back_to_their_jobs_and_says_when_a_run_has_none(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    start(store)
    assert per_frame_json(store, "r1") == []
    assert "no per-frame rows stored" in frames_section(store, "r1")
    for repeat in (0, 1):  # two repeats decoded the same output: one set of rows, two jobs
        store.add_job("r1", JOB | {"repeat": repeat, "output_sha": "out-a", "source_sha": "src"}, [])
    store.add_job("r1", JOB | {"repeat": 2, "status": "failed", "output_sha": None, "source_sha": "src"}, [])
    store.add_frame_quality("r1", frames("out-a", 3))
    (doc,) = per_frame_json(store, "r1")
    assert [j["repeat"] for j in doc["jobs"]] == [0, 1] and doc["frame"] == [0, 1, 2]
    assert doc["flicker"] == [None, 0.5, 1.0] and doc["vmaf"] == [None] * 3
    html = frames_section(store, "r1")
    assert html.count('<svg class="chart frame-') == 3 and 'data-name="bundle 100k"' in html
