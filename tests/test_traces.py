"""Per-job traces: bounding, clipping to the decode window, missing reasons, storage on both backends, copy, digest,
and the report's drawing of them (without a device: the whole run is tests/test_traces_run.py)."""

from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path
from typing import cast

import pytest

from farm.config.suite import Suite
from farm.devices.base import DecodeOutcome
from farm.power import energy
from farm.power.sampler import PowerSample
from farm.release.manifest import results_digests
from farm.report.rundata import RunData
from farm.report.traces import drawn, traces_section
from farm.session import measure
from farm.store import Store, StoreError, open_store
from farm.store.copy import copy_store
from farm.traces import MAX_POINTS, POWER, TEMP, bounded, missing, trapezoid_mean
from tests.store_fixtures import JOB, start

CTX = measure.PowerContext("sysfs test meter", None, "on the device", 1.5)


def outcome(start_s: float, end_s: float) -> DecodeOutcome:
    return DecodeOutcome(0, False, round(start_s * 1e9), round(end_s * 1e9), "a" * 64, 10, (), "")


def test_bounded_decimates_evenly_keeping_both_ends() -> None:
    pts = [(i * 0.01, float(i)) for i in range(5001)]
    trace = bounded(POWER, pts)
    assert len(trace.t_s) == MAX_POINTS and trace.samples == 5001
    assert trace.points[0] == (0.0, 0.0) and trace.points[-1] == (50.0, 5000.0)
    gaps = {round(b - a, 4) for a, b in zip(trace.t_s, trace.t_s[1:], strict=False)}
    assert gaps <= {0.02, 0.03}  # even: every 2.5th sample
    short = bounded(TEMP, pts[:10])
    assert short.points == pts[:10] and short.samples == 10
    with pytest.raises(ValueError):
        bounded(POWER, pts, limit=1)


def test_power_trace_is_the_window_and_integrates_to_the_jobs_mean() -> None:
    # a sampler that started before the window and stopped after it, at 10 Hz, with a spike inside
    samples = [PowerSample(99.95 + i * 0.1, 2.0 + (3.0 if i == 7 else 0.0) + 0.01 * i) for i in range(30)]
    out = outcome(100.02, 102.41)
    trace = measure.power_trace(out, samples, CTX, None)
    assert trace.missing_reason is None
    assert trace.t_s[0] == 0.0 and trace.t_s[-1] == pytest.approx(2.39)
    assert all(0 <= t <= 2.39 + 1e-9 for t in trace.t_s)
    assert max(trace.values) == pytest.approx(5.07)  # the spike is kept
    assert trapezoid_mean(trace) == pytest.approx(energy.mean_watts(samples, 100.02, 102.41), rel=1e-5)
    # a window shorter than one sampling period: both edges interpolated
    tiny = measure.power_trace(outcome(100.06, 100.08), samples, CTX, None)
    assert len(tiny.t_s) == 2 and trapezoid_mean(tiny) == pytest.approx(energy.mean_watts(samples, 100.06, 100.08))


def test_power_trace_missing_says_why_and_has_no_points() -> None:
    samples = [PowerSample(100 + i * 0.1, 2.0) for i in range(30)]
    no_meter = measure.PowerContext(None, "no hwmon node", "on the device", None)
    cases = {
        "no usable power meter: no hwmon node": measure.power_trace(outcome(100, 101), samples, no_meter, None),
        "battery was 'Charging'": measure.power_trace(outcome(100, 101), samples, CTX, "battery was 'Charging'"),
        "decode window was not stamped": measure.power_trace(
            DecodeOutcome(127, False, None, None, None, None, (), ""), samples, CTX, None
        ),
        "0 power sample(s) inside": measure.power_trace(outcome(200, 201), samples, CTX, None),
    }
    for why, trace in cases.items():
        assert trace.t_s == () and trace.values == () and trace.missing_reason and why in trace.missing_reason
    # the same reason as the job's mean power, whichever applies first there
    for ctx, charging in ((no_meter, "battery was 'Charging'"), (no_meter, None), (CTX, "battery was 'Full'")):
        power_w = measure.power(outcome(100, 101), 10, samples, ctx, 10.0, charging)[0]
        assert measure.power_trace(outcome(100, 101), samples, ctx, charging).missing_reason == power_w.missing_reason


def test_temp_trace_keeps_the_samples_inside_the_window() -> None:
    timed = [(99.9, 40.0), (100.1, 41.0), (100.5, 43.5), (101.2, 44.0)]
    trace = measure.temp_trace(outcome(100.0, 101.0), timed, 0, True)
    assert trace.points == [(pytest.approx(0.1), 41.0), (pytest.approx(0.5), 43.5)]
    assert "no readable thermal zone" in str(measure.temp_trace(outcome(100, 101), [], 0, False).missing_reason)
    polled = measure.temp_trace(outcome(100, 101), [], 5, True)
    assert polled.t_s == () and "without device time" in str(polled.missing_reason)


def test_traces_travel_in_job_done_as_plain_tuples() -> None:
    trace = bounded(POWER, [(0.0, 1.0), (0.1, 2.0)])
    assert pickle.loads(pickle.dumps(trace)) == trace
    assert all(type(v) is float for v in (*trace.t_s, *trace.values))


def test_store_round_trips_traces_with_the_job_in_one_transaction(store_target: str) -> None:
    store = open_store(store_target)
    start(store)
    power = bounded(POWER, [(i * 0.1, 2.0 + i / 7) for i in range(600)])
    temp = missing(TEMP, "no readable thermal zone")
    job_id = store.add_job("r1", JOB, [], (power, temp))
    plain = store.add_job("r1", JOB | {"repeat": 1}, [])
    got = open_store(store_target, readonly=True).traces("r1")
    assert got == {job_id: {POWER: power, TEMP: temp}} and plain not in got
    # a trace that cannot be stored takes its job with it: no job row without its traces
    with pytest.raises(StoreError):
        store.add_job("r1", JOB | {"repeat": 2}, [], (power, power))  # the same series twice
    assert [int(j["repeat"]) for j in store.jobs("r1")] == [0, 1]


def test_copy_carries_traces_and_runs_without_them_keep_their_digest(tmp_path: Path) -> None:
    source = Store(tmp_path / "a.db")
    start(source, "old")
    source.add_job("old", JOB, [])
    before = results_digests(source, "old")
    assert set(before) == {"run", "devices", "jobs", "measurements", "run_metrics", "output_diffs", "all"}
    start(source, "new")
    trace = bounded(POWER, [(0.0, 1.0), (0.5, 3.0)])
    source.add_job("new", JOB, [], (trace,))
    assert "job_traces" in results_digests(source, "new")
    dest = Store(tmp_path / "b.db")
    copy_store(source, dest)
    assert list(dest.traces("new").values()) == [{POWER: trace}]
    assert results_digests(dest, "old") == before


def test_drawn_lines_keep_a_one_sample_spike() -> None:
    pts = [(i * 0.1, 2.0) for i in range(1000)]
    pts[637] = (63.7, 9.0)
    line = drawn(pts, buckets=100)
    assert len(line) <= 200 and (63.7, 9.0) in line and line == sorted(line)
    assert drawn(pts[:50]) == pts[:50]


def test_report_of_a_run_without_traces_says_so(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    start(store)
    store.add_job("r1", JOB, [])  # as recorded before schema 8: a job without trace rows
    data = RunData("r1", cast(Suite, None), (), {})  # the section reads only the run id and the jobs
    page = traces_section(store, data, ["d"], set())
    assert "No traces are stored for this run" in page and "<svg" not in page


# The queries docs/store.md gives for a Grafana SQL panel, verbatim but for the job id parameter
GRAFANA_PG = (
    "SELECT j.started_at + t.x::float AS time, v.x::float AS watts FROM job_traces tr JOIN jobs j ON j.id = tr.job_id,"
    " json_array_elements_text(tr.t_json::json) WITH ORDINALITY t(x, i) JOIN json_array_elements_text(tr.v_json::json)"
    " WITH ORDINALITY v(x, i) USING (i) WHERE tr.series = 'power_w' AND j.id = %s ORDER BY time"
)
GRAFANA_SQLITE = (
    "SELECT j.started_at + t.value AS time, v.value AS watts FROM job_traces tr JOIN jobs j ON j.id = tr.job_id,"
    " json_each(tr.t_json) t JOIN json_each(tr.v_json) v ON v.key = t.key WHERE tr.series = 'power_w' AND j.id = ?"
    " ORDER BY time"
)


def test_the_documented_grafana_query_reads_a_trace_back(store_target: str) -> None:
    store = open_store(store_target)
    start(store)
    power = bounded(POWER, [(i * 0.1, 2.0 + i / 7) for i in range(50)])
    job_id = store.add_job("r1", JOB | {"started_at": 1000.0}, [], (power, missing(TEMP, "no zone")))
    store.add_job("r1", JOB | {"repeat": 1}, [], (bounded(POWER, [(0.0, 9.0), (1.0, 9.0)]),))
    if store_target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store_target) as pg:
            rows = pg.execute(GRAFANA_PG, (job_id,)).fetchall()
    else:
        rows = sqlite3.connect(store_target).execute(GRAFANA_SQLITE, (job_id,)).fetchall()
    assert [(pytest.approx(t), pytest.approx(w)) for t, w in rows] == [(1000.0 + t, w) for t, w in power.points]
