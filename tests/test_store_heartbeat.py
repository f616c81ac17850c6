"""Runs whose controller on another host died: heartbeats in the store (schema 7), judged in the store's clock.

"Another host" is simulated honestly by the recorded identity: the host is part of it, so a run whose
controller_host names another machine is judged only by its heartbeat, whatever its pid.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm.cli import app
from farm.errors import InputError
from farm.heartbeat import Heartbeat, period_s
from farm.release.manifest import results_digests
from farm.store import Store, open_store
from farm.store.controller import HEARTBEAT_S, STALE_AFTER_S
from farm.store.postgres import is_url
from tests.conftest import ROOT, wait_for
from tests.store_fixtures import start
from tests.support.runs import suite, variant

OTHER = "host-b"


def _elsewhere(store: Store, run_id: str, silent_s: float | None) -> None:
    """Hand ``run_id`` to a controller on another host, silent for ``silent_s`` (None: an older farm's run)."""
    store._db.execute("UPDATE runs SET controller_host=? WHERE id=?", (OTHER, run_id))
    if silent_s is None:
        store._db.execute("UPDATE runs SET heartbeat_at=NULL WHERE id=?", (run_id,))
    else:  # moved back from the beat the store itself wrote at start: the store's clock, as a real one would be
        store._db.execute("UPDATE runs SET heartbeat_at=heartbeat_at - ? WHERE id=?", (silent_s, run_id))


def _three_runs(target: str) -> None:
    store = open_store(target)
    for run_id, silent in (("stale", STALE_AFTER_S + 100), ("fresh", 5.0), ("older-farm", None)):
        start(store, run_id)
        _elsewhere(store, run_id, silent)
    store.close()


def _raw_status(target: str, run_id: str) -> str:
    """The status as stored, read past any store object (and its read-only shadowing)."""
    if is_url(target):
        import psycopg

        with psycopg.connect(target) as db:
            row = db.execute("SELECT status FROM runs WHERE id=%s", (run_id,)).fetchone()
    else:
        with sqlite3.connect(f"{Path(target).as_uri()}?mode=ro", uri=True) as db:
            row = db.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()
    assert row is not None
    return str(row[0])


WHY = re.compile(rf"controller pid {os.getpid()} on {OTHER} sent no heartbeat for 4\d\d s")


def test_only_a_silent_run_of_another_host_is_reaped_with_its_reason(store_target: str) -> None:
    _three_runs(store_target)
    store = open_store(store_target)  # a writable open reaps
    run = store.run("stale")
    assert run["status"] == "interrupted" and run["finished_at"] is not None
    why = json.loads(run["summary_json"])["interrupted"]
    assert WHY.fullmatch(why), why
    [attempt] = store.attempts("stale")
    assert (attempt.status, attempt.detail) == ("interrupted", why)
    # a beat 5 s ago is alive; no heartbeat at all (a farm older than schema 7) cannot be judged from here
    assert {r["id"]: r["status"] for r in store.runs()} == {
        "stale": "interrupted", "fresh": "running", "older-farm": "running",
    }  # fmt: skip
    assert store.reap_orphans() == []
    env = {"FARM_STORE": store_target}
    runs = CliRunner().invoke(app, ["runs", "--json", "-"], env=env, catch_exceptions=False)
    assert runs.exit_code == 0, runs.output
    listed = {r["id"]: (r["status"], r["why"]) for r in json.loads(runs.stdout)["runs"]}
    assert listed == {"stale": ("interrupted", why), "fresh": ("running", None), "older-farm": ("running", None)}
    report = CliRunner().invoke(app, ["report", "stale"], env=env, catch_exceptions=False)
    assert report.exit_code == 0 and f"run stale is interrupted: {why}" in report.output, report.output


def test_silence_is_measured_in_the_stores_clock_not_the_readers(
    store_target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader whose own clock runs an hour ahead still sees a 5-second-old beat as 5 seconds old."""
    _three_runs(store_target)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    store = open_store(store_target)
    assert {r["id"]: r["status"] for r in store.runs()} == {
        "stale": "interrupted", "fresh": "running", "older-farm": "running",
    }  # fmt: skip


def test_a_beat_between_the_read_and_the_reap_keeps_the_run(store_target: str) -> None:
    """The reaping UPDATE checks the silence again, so a controller that just came back is not reaped."""
    store = open_store(store_target)
    start(store, "back")
    _elsewhere(store, "back", STALE_AFTER_S + 100)
    store._db.execute("UPDATE runs SET heartbeat_at=heartbeat_at + ? WHERE id='back'", (STALE_AFTER_S + 90,))
    from farm.store.controller import Controller

    controller = Controller(OTHER, os.getpid(), store.run("back")["controller_start"])
    assert store._mark_interrupted("back", controller, time.time(), "{}", "silent") is False
    assert store.run("back")["status"] == "running"


def test_a_read_only_open_shows_the_silent_run_interrupted_without_writing(store_target: str) -> None:
    _three_runs(store_target)
    reader = open_store(store_target, readonly=True)
    run = reader.run("stale")
    assert run["status"] == "interrupted" and WHY.fullmatch(json.loads(run["summary_json"])["interrupted"])
    assert {r["id"]: r["status"] for r in reader.runs()} == {
        "stale": "interrupted", "fresh": "running", "older-farm": "running",
    }  # fmt: skip
    res = CliRunner().invoke(app, ["report", "stale"], env={"FARM_STORE": store_target}, catch_exceptions=False)
    assert res.exit_code == 0 and "run stale is interrupted: controller pid" in res.output, res.output
    assert _raw_status(store_target, "stale") == "running"  # nothing written


def test_a_live_runs_heartbeat_advances_and_stops_once_it_finished(store_target: str) -> None:
    store = open_store(store_target)
    start(store)
    first = store.run("r1")["heartbeat_at"]
    assert first is not None  # starting a run beats at once
    with Heartbeat(store, "r1", period=0.05) as beat:
        assert wait_for(lambda: beat.beats >= 3 and store.run("r1")["heartbeat_at"] > first, 30)
        store.finish_run("r1", "complete", {})
        last = store.run("r1")["heartbeat_at"]
        assert wait_for(lambda: not beat._thread.is_alive(), 30)  # the beat found the run finished: it stops
    assert store.heartbeat("r1") is False and store.run("r1")["heartbeat_at"] == last


def test_resuming_beats_at_once_and_another_process_cannot_beat_for_the_run(store_target: str) -> None:
    store = open_store(store_target)
    start(store)
    store.finish_run("r1", "interrupted", {})
    store._db.execute("UPDATE runs SET heartbeat_at=NULL WHERE id='r1'")
    store.reopen_run("r1")
    assert store.run("r1")["heartbeat_at"] is not None
    _elsewhere(store, "r1", 0.0)  # now another host's run: this process's beat must not keep it alive
    assert store.heartbeat("r1") is False


def test_a_controller_taken_for_dead_is_told_why_and_stops_beating(store_target: str) -> None:
    store = open_store(store_target)
    start(store)
    told: list[str] = []
    with Heartbeat(store, "r1", period=0.05, on_reaped=told.append) as beat:
        assert wait_for(lambda: beat.beats >= 1, 30)
        store.finish_run("r1", "interrupted", {"interrupted": "controller pid 1 on here sent no heartbeat for 999 s"})
        assert wait_for(lambda: bool(told), 30)
    assert told == ["controller pid 1 on here sent no heartbeat for 999 s"]


def test_a_run_resumed_elsewhere_is_told_but_this_process_finishing_it_is_not(store_target: str) -> None:
    store = open_store(store_target)
    for run_id in ("taken", "mine"):
        start(store, run_id)
    told: dict[str, list[str]] = {"taken": [], "mine": []}
    beats = [Heartbeat(store, run_id, period=0.05, on_reaped=told[run_id].append) for run_id in told]
    with beats[0], beats[1]:
        assert wait_for(lambda: min(b.beats for b in beats) >= 1, 30)
        store._db.execute("UPDATE runs SET controller_host=?, controller_pid=7 WHERE id='taken'", (OTHER,))
        store.finish_run("mine", "interrupted", {"error": "KeyboardInterrupt: "})  # this process's own Ctrl-C
        assert wait_for(lambda: not any(b._thread.is_alive() for b in beats), 30)
    assert told == {"taken": [f"resumed meanwhile by controller pid 7 on {OTHER}"], "mine": []}


def test_the_period_comes_from_the_environment_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert period_s() == HEARTBEAT_S and STALE_AFTER_S == 10 * HEARTBEAT_S
    monkeypatch.setenv("FARM_HEARTBEAT_S", "0.2")
    assert period_s() == 0.2
    for bad in ("0", "-1", "soon", str(HEARTBEAT_S * 2)):
        monkeypatch.setenv("FARM_HEARTBEAT_S", bad)
        with pytest.raises(InputError, match="FARM_HEARTBEAT_S") as info:
            period_s()
        assert info.value.exit_code == 2


def test_the_heartbeat_is_not_part_of_a_runs_release_digest(store_target: str) -> None:
    store = open_store(store_target)
    start(store)
    store.finish_run("r1", "complete", {})
    before = results_digests(store, "r1")
    store._db.execute("UPDATE runs SET heartbeat_at=NULL WHERE id='r1'")  # as a run stored before schema 7
    assert results_digests(store, "r1") == before


def _stored_run(store: Path) -> sqlite3.Row | None:
    if not store.exists():
        return None
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM runs").fetchone()  # type: ignore[no-any-return]
    except sqlite3.OperationalError:
        return None  # not created yet
    finally:
        db.close()


def _slow_run(tmp_path: Path, store: Path, sleep_s: float) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a real `farm run` on the local device whose decodes each wait ``sleep_s`` first,
    beating every 0.2 s."""
    slow = variant(tmp_path, "slow", ["sh", "-c", f'sleep {sleep_s}; exec "$@"', "slow"])
    env = {**os.environ, "FARM_STORE": str(store), "FARM_HEARTBEAT_S": "0.2", "PYTHONPATH": str(ROOT)}
    gates = '  - {metric: failures, op: "==", value: 0, scope: all}'
    argv = [sys.executable, "-m", "farm", "run", suite(tmp_path, gates), "--bundle", str(slow),
            "--inventory", str(ROOT / "devices.yaml")]  # fmt: skip
    return argv, env


@pytest.mark.slow
def test_a_farm_runs_heartbeat_advances_while_it_runs_and_not_after_it_finished(tmp_path: Path) -> None:
    """The real controller (`farm run` on the local device, decodes slowed down) beats from its own thread."""
    store = tmp_path / "state" / "results.db"
    argv, env = _slow_run(tmp_path, store, 0.3)
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: set[float] = set()

    def beating() -> bool:
        run = _stored_run(store)
        if run is not None and run["status"] == "running" and run["heartbeat_at"] is not None:
            seen.add(float(run["heartbeat_at"]))
        return len(seen) >= 3 or proc.poll() is not None

    try:
        assert wait_for(beating, 180) and len(seen) >= 3, f"heartbeats seen while running: {sorted(seen)}"
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    run = _stored_run(store)
    assert run is not None and run["status"] == "complete"
    # no beat after the finish (the same host's clock writes both here; julianday truncates to the millisecond)
    assert max(seen) <= run["heartbeat_at"] <= run["finished_at"] + 0.001


@pytest.mark.slow
def test_a_farm_run_taken_for_dead_by_another_host_stops_and_can_be_resumed(tmp_path: Path) -> None:
    """The store as another host's reaper leaves it, mid-run: the live controller notices at its next beat."""
    store = tmp_path / "state" / "results.db"
    argv, env = _slow_run(tmp_path, store, 0.5)
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    why = f"controller pid {proc.pid} on {os.uname().nodename} sent no heartbeat for 312 s"
    try:
        assert wait_for(lambda: (run := _stored_run(store)) is not None and run["status"] == "running", 180)
        with sqlite3.connect(store, timeout=30) as db:  # one transaction, as reap_orphans writes it
            db.execute(
                "UPDATE runs SET status='interrupted', finished_at=?, summary_json=? WHERE status='running'",
                (time.time(), json.dumps({"interrupted": why})),
            )
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out
    assert f"is no longer this controller's in the store ({why}): stopping" in out, out
    run = _stored_run(store)
    assert run is not None and (run["status"], json.loads(run["summary_json"])) == ("interrupted", {"interrupted": why})
    resumed = subprocess.run([*argv, "--resume", run["id"]], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    again = _stored_run(store)
    assert again is not None and again["status"] == "complete"
