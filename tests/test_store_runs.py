"""Run lifecycle in the store: controller identity, reaping runs whose controller died, reopening, attempts."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm.cli import app
from farm.store import Measurement, RunStateError, Store, open_store
from farm.store.controller import Controller, process_start
from tests.store_fixtures import JOB, ROOT, V2_SCHEMA, orphan, start


def test_start_run_records_this_process_as_controller_and_attempt_1(store_target: str) -> None:
    store = open_store(store_target)
    start(store)
    run = store.run("r1")
    assert (run["controller_host"], run["controller_pid"]) == (socket.gethostname(), os.getpid())
    assert run["controller_start"] == process_start(os.getpid()) and run["controller_start"]
    [first] = store.attempts("r1")
    assert (first.attempt, first.controller_pid, first.status, first.finished_at) == (1, os.getpid(), "running", None)
    store.finish_run("r1", "complete", {"jobs": 1})
    store.finish_run("r1", "incomplete", {"jobs": 0})  # idempotent: the first finish stands
    assert store.run("r1")["status"] == "complete"
    assert [(a.status, a.finished_at is not None) for a in store.attempts("r1")] == [("complete", True)]


def test_a_run_whose_controller_died_is_reaped_by_the_next_writer(store_target: str) -> None:
    pid = orphan(store_target, "dead")
    store = open_store(store_target)  # opening for writing reaps
    run = store.run("dead")
    assert run["status"] == "interrupted" and run["finished_at"] is not None
    why = f"controller pid {pid} on {socket.gethostname()} is gone"
    assert json.loads(run["summary_json"]) == {"interrupted": why}
    [attempt] = store.attempts("dead")
    assert (attempt.status, attempt.detail) == ("interrupted", why)
    assert store.reap_orphans() == []  # nothing left to reap


def test_live_runs_and_runs_of_other_hosts_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    orphan(path, "elsewhere")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE runs SET controller_host='another-host' WHERE id='elsewhere'")
    store = Store(path)
    start(store, "mine")
    assert store.reap_orphans() == []
    assert {r["id"]: r["status"] for r in store.runs()} == {"elsewhere": "running", "mine": "running"}


def test_a_recycled_pid_is_not_mistaken_for_the_controller(store_target: str) -> None:
    store = open_store(store_target)
    start(store)
    # same pid as a live process (this one), but another process start: the controller is gone
    store._db.execute("UPDATE runs SET controller_start='another-boot:123' WHERE id='r1'")
    assert store.reap_orphans() == ["r1"]
    assert Controller(socket.gethostname(), os.getpid(), process_start(os.getpid())).is_gone() is False


def test_a_read_only_reader_shows_dead_runs_interrupted_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    orphan(path, "dead")
    reader = Store.open_readonly(path)
    run = reader.run("dead")
    assert run["status"] == "interrupted" and "is gone" in json.loads(run["summary_json"])["interrupted"]
    assert [r["status"] for r in reader.runs()] == ["interrupted"]
    code = CliRunner().invoke(app, ["runs"], env={"FARM_STORE": str(path)}, catch_exceptions=False)
    assert code.exit_code == 0 and "interrupted" in code.output
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as db:
        assert db.execute("SELECT status FROM runs WHERE id='dead'").fetchone()[0] == "running"  # file untouched


def test_reopen_resumes_an_interrupted_run_and_counts_attempts(store_target: str) -> None:
    path = store_target
    orphan(path, "r1")
    store = open_store(path)
    store.add_job("r1", JOB, [Measurement("fps", 30.0, "fps", "steady")])
    store.add_job("r1", JOB | {"repeat": 1, "status": "failed", "error": "boom"}, [])
    assert store.completed_job_keys("r1") == {("d", "test", "s", 100.0, 0)}
    assert store.reopen_run("r1") == 2
    run = store.run("r1")
    assert (run["status"], run["finished_at"], run["controller_pid"]) == ("running", None, os.getpid())
    store.add_job("r1", JOB | {"repeat": 1}, [Measurement("fps", 31.0, "fps", "steady")])
    store.finish_run("r1", "complete", {"jobs": 3})
    assert store.run("r1")["status"] == "complete"
    assert [(a.attempt, a.status) for a in store.attempts("r1")] == [(1, "interrupted"), (2, "complete")]
    assert store.completed_job_keys("r1") == {("d", "test", "s", 100.0, 0), ("d", "test", "s", 100.0, 1)}
    res = CliRunner().invoke(app, ["report", "r1"], env={"FARM_STORE": path}, catch_exceptions=False)
    assert res.exit_code == 0 and "run r1 took 2 attempts (resumed 1x)" in res.output, res.output


@pytest.mark.parametrize("status", ["running", "complete"])
def test_reopen_refuses_a_running_or_complete_run(store_target: str, status: str) -> None:
    store = open_store(store_target)
    start(store)
    if status == "complete":
        store.finish_run("r1", "complete", {})
    with pytest.raises(RunStateError, match=f"run r1 is {status}: only an interrupted or incomplete run") as info:
        store.reopen_run("r1")
    assert info.value.exit_code == 2
    with pytest.raises(RunStateError, match="no run 'nope'"):
        store.reopen_run("nope")


def test_a_run_from_before_attempts_existed_can_be_resumed(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(V2_SCHEMA)
        db.execute("UPDATE runs SET status='incomplete' WHERE id='old'")
    store = Store(path)
    assert [(a.attempt, a.status) for a in store.attempts("old")] == [(1, "incomplete")]
    assert store.reopen_run("old") == 2
    store.finish_run("old", "complete", {})
    assert [(a.attempt, a.status) for a in store.attempts("old")] == [(1, "incomplete"), (2, "complete")]


def test_concurrent_job_writes_from_threads_all_land(store_target: str) -> None:
    store = open_store(store_target)
    start(store)

    def write(device: str) -> None:
        for repeat in range(20):
            store.add_job("r1", JOB | {"device_id": device, "repeat": repeat}, [Measurement("fps", 1.0, "fps", "c")])

    threads = [threading.Thread(target=write, args=(f"d{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.completed_job_keys("r1")) == 80 and len(store.measurements("r1")) == 80


def test_two_runs_in_two_processes_write_at_once_and_lose_nothing(store_target: str) -> None:
    """Two controllers (CI jobs on different machines, here two processes) record into one store at once."""
    code = (
        "import sys; from farm.store import Measurement, open_store; from tests.store_fixtures import JOB, start\n"
        "store = open_store(sys.argv[1]); start(store, sys.argv[2])\n"
        "for i in range(40): store.add_job(sys.argv[2], JOB | {'repeat': i}, [Measurement('fps', i, 'fps', 'c')])\n"
        "store.finish_run(sys.argv[2], 'complete', {})"
    )
    open_store(store_target).close()  # the schema exists before both start, as on a lab's server
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, store_target, run_id], env=env, cwd=ROOT) for run_id in ("a", "b")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = open_store(store_target, readonly=True)
    for run_id in ("a", "b"):
        assert store.run(run_id)["status"] == "complete"
        assert len(store.completed_job_keys(run_id)) == 40 and len(store.measurements(run_id)) == 40
