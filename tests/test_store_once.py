"""Each write stored exactly once, even when the connection to PostgreSQL is cut after the server committed.

The cut is real: a proxy between the store and a real PostgreSQL server (tests/support/pg_proxy.py) drops the
server's reply to COMMIT and the connection with it, so the server has committed and the store sees a lost
connection, reconnects and runs the write again. Without idempotency keys (schema 9) that second try stores a
second job, a second gate evaluation, ... The same writes are then checked on both backends by repeating them
with the same key by hand.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from farm.release.manifest import results_digests
from farm.store import FrameQuality, Measurement, Store, StoreError, open_store
from farm.store.postgres import KEYED_WRITES, REPEATABLE_WRITES, PostgresStore
from tests.conftest import wait_for
from tests.pg_fixtures import PgCluster
from tests.store_fixtures import JOB, start
from tests.support.pg_proxy import CommitReplyCutter

MEASUREMENTS = [Measurement(f"m{i}", float(i), "u", "c") for i in range(30)]
VERDICTS = [
    {"gate_index": i, "metric": "fps", "op": ">=", "threshold": 30, "scope": "each", "scope_key": "d", "stat": "median",
     "value": 10.0 + i, "verdict": "fail", "detail": "", "inputs": {"v": [i]}}
    for i in range(3)
]  # fmt: skip
RELEASE = {"tag": "v1", "version": "v1", "run_id": "r1", "suite_name": "s", "bundle_digest": "x", "evaluation": 1,
           "repo": "/r", "commit_sha": "c", "manifest_json": "{}", "manifest_sha256": "m"}  # fmt: skip


@pytest.fixture
def cut(pg_cluster: PgCluster) -> Iterator[tuple[PostgresStore, CommitReplyCutter, str]]:
    """A store whose connection goes through the proxy, with run r1 started; and the direct URL for checks."""
    url = pg_cluster.create_db()
    proxy = CommitReplyCutter(pg_cluster.port)
    store = PostgresStore(proxy.url(url), reconnect_s=30.0)
    try:
        start(store)
        yield store, proxy, url
    finally:
        store.close()
        proxy.close()


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url) as db:
        row = db.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def _lost_commit(store: PostgresStore, proxy: CommitReplyCutter, write: Callable[[], Any]) -> Any:
    """Run ``write`` with the reply to its COMMIT lost; check that the cut and a retry really happened."""
    before = store.reconnects
    proxy.arm()
    result = write()
    assert proxy.cuts == 1, "no COMMIT reply was cut: the test did not exercise the lost acknowledgement"
    assert store.reconnects == before + 1
    return result


def test_a_job_whose_commit_reply_is_lost_is_stored_once_with_its_measurements(cut: Any) -> None:
    store, proxy, url = cut
    job_id = _lost_commit(store, proxy, lambda: store.add_job("r1", JOB, MEASUREMENTS))
    assert _count(url, "SELECT COUNT(*) FROM jobs") == 1, "the job was stored twice"
    assert _count(url, "SELECT COUNT(*) FROM measurements") == len(MEASUREMENTS)
    assert [j["id"] for j in store.jobs("r1")] == [job_id]  # the id of the row the first try stored
    # and the store goes on (the repeat used up a sequence number: PostgreSQL ids have gaps, never doubles)
    assert store.add_job("r1", JOB | {"repeat": 1}, MEASUREMENTS) > job_id and len(store.jobs("r1")) == 2


def test_a_gate_evaluation_whose_commit_reply_is_lost_is_stored_once(cut: Any) -> None:
    store, proxy, url = cut
    assert _lost_commit(store, proxy, lambda: store.add_gate_evaluation("r1", VERDICTS)) == 1
    assert _count(url, "SELECT COUNT(DISTINCT evaluation) FROM gates") == 1, "the evaluation was stored twice"
    assert _count(url, "SELECT COUNT(*) FROM gates") == len(VERDICTS)
    assert store.add_gate_evaluation("r1", VERDICTS) == 2  # a real second evaluation is still a new one


def _late_commit(store: PostgresStore, proxy: CommitReplyCutter, url: str, write: Callable[[], Any]) -> Any:
    """Run ``write`` with its first try's COMMIT held back until the repeat is seen waiting on a row lock."""
    waited: list[bool] = []
    lock_waits = "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type='Lock' AND datname=current_database()"

    def release_once_the_repeat_waits() -> None:
        waited.append(proxy.held.wait(30) and wait_for(lambda: _count(url, lock_waits) > 0, 30))
        proxy.release()

    proxy.hold()
    releaser = threading.Thread(target=release_once_the_repeat_waits)
    releaser.start()
    try:
        result = write()
    finally:
        proxy.release()
        releaser.join(timeout=60)
    assert waited == [True], "the repeat never waited on the first try's rows"
    assert store.reconnects == 1
    return result


def test_a_repeat_waits_for_a_first_try_still_committing_and_then_stores_nothing(cut: Any) -> None:
    """The first try's COMMIT reaches the server only once the repeat is already inserting: the unique index makes
    the repeat wait for it and then insert nothing, where a look-up before the insert would have seen no row."""
    store, proxy, url = cut
    job_id = _late_commit(store, proxy, url, lambda: store.add_job("r1", JOB, MEASUREMENTS))
    assert [j["id"] for j in store.jobs("r1")] == [job_id]
    assert _count(url, "SELECT COUNT(*) FROM measurements") == len(MEASUREMENTS)


def test_a_resume_whose_first_try_commits_late_is_one_attempt(cut: Any) -> None:
    """The repeat read the run as interrupted, then finds the attempt taken: by its own first try, by its key."""
    store, proxy, url = cut
    store.finish_run("r1", "interrupted", {})
    assert _late_commit(store, proxy, url, lambda: store.reopen_run("r1")) == 2
    assert [a.attempt for a in store.attempts("r1")] == [1, 2] and store.run("r1")["status"] == "running"


# every other write the retry may repeat: how to make it, and how many rows it must leave in which table
WRITES: dict[str, tuple[Callable[[Store], Any], str, int]] = {
    "start_run": (lambda s: start(s, "r2"), "SELECT COUNT(*) FROM run_attempts WHERE run_id='r2'", 1),
    "add_device": (
        lambda s: s.add_device("r1", "d", "linux", "x86_64", [], {}, "ok", None), "SELECT COUNT(*) FROM run_devices", 1
    ),
    "add_run_metric": (
        lambda s: s.add_run_metric("r1", "d", "bd_rate.psnr_yuv", -3.0, "%", "pchip", None),
        "SELECT COUNT(*) FROM run_metrics", 1,
    ),
    "add_output_diff": (
        lambda s: s.add_output_diff("r1", "s", 100.0, "a" * 64, "b" * 64, 3, 2.0, 80.0, None),
        "SELECT COUNT(*) FROM output_diffs", 1,
    ),
    "add_release": (lambda s: s.add_release(**RELEASE), "SELECT COUNT(*) FROM releases", 1),
    "add_frame_quality": (
        lambda s: s.add_frame_quality("r1", [FrameQuality("o", "s", t, 40.0) for t in range(5)]),
        "SELECT COUNT(*) FROM frame_quality", 5,
    ),
    "finish_run": (
        lambda s: s.finish_run("r1", "interrupted", {}), "SELECT COUNT(*) FROM run_attempts WHERE finished_at > 0", 1
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(WRITES))
def test_every_write_the_retry_repeats_is_stored_once_when_its_commit_reply_is_lost(cut: Any, name: str) -> None:
    store, proxy, url = cut
    write, count, want = WRITES[name]
    _lost_commit(store, proxy, lambda: write(store))
    assert _count(url, count) == want


def test_measurements_added_to_a_job_whose_commit_reply_is_lost_are_stored_once(cut: Any) -> None:
    """Found again by their natural key (job, name): without it the repeat would fail on the UNIQUE constraint."""
    store, proxy, url = cut
    job_id = store.add_job("r1", JOB, [])
    _lost_commit(store, proxy, lambda: store.add_measurements(job_id, MEASUREMENTS))
    assert _count(url, "SELECT COUNT(*) FROM measurements") == len(MEASUREMENTS)


def test_a_resume_whose_commit_reply_is_lost_is_one_attempt(cut: Any) -> None:
    """Run again, a reopen would find the run running and refuse it: the key finds the attempt it made."""
    store, proxy, _ = cut
    store.finish_run("r1", "interrupted", {})
    assert _lost_commit(store, proxy, lambda: store.reopen_run("r1")) == 2
    assert [a.attempt for a in store.attempts("r1")] == [1, 2] and store.run("r1")["status"] == "running"


def test_a_write_repeated_with_its_key_returns_the_first_result_on_both_backends(store_target: str) -> None:
    """The SQL of the repeat, the same on SQLite and PostgreSQL: a second call with the same key stores nothing."""
    store = open_store(store_target)
    start(store, write_key="run")
    start(store, write_key="run")
    job = store.add_job("r1", JOB, MEASUREMENTS, write_key="job")
    assert store.add_job("r1", JOB, MEASUREMENTS, write_key="job") == job
    assert store.add_gate_evaluation("r1", VERDICTS, write_key="gates") == 1
    assert store.add_gate_evaluation("r1", VERDICTS, write_key="gates") == 1
    for _ in range(2):
        store.add_device("r1", "d", "linux", "x86_64", [], {}, "ok", None, write_key="dev")
        store.add_run_metric("r1", "d", "bd", -3.0, "%", "pchip", None, write_key="metric")
        store.add_output_diff("r1", "s", 100.0, "a" * 64, "b" * 64, 3, 2.0, 80.0, None, write_key="diff")
        store.add_release(**RELEASE, write_key="release")
        store.add_measurements(job, [Measurement("psnr_yuv", 40.0, "dB", "c")])
    store.finish_run("r1", "interrupted", {})
    assert store.reopen_run("r1", write_key="resume") == store.reopen_run("r1", write_key="resume") == 2
    assert len(store.jobs("r1")) == 1 and len(store.measurements("r1")[job]) == 31
    assert len(store.gate_verdicts("r1")) == 3 and len(store.devices("r1")) == len(store.run_metrics("r1")) == 1
    assert len(store.output_diffs("r1")) == len(store.releases()) == 1 and len(store.attempts("r1")) == 2
    # without a key, or with another one, a write is a new row, as a resumed run's re-run job must be
    assert store.add_job("r1", JOB, MEASUREMENTS) != store.add_job("r1", JOB, MEASUREMENTS, write_key="job2")
    assert len(store.jobs("r1")) == 3


def test_what_a_repeat_cannot_be_is_still_refused(store_target: str) -> None:
    """A run id taken by another write, or a measurement stored with another value, is an error, not a no-op."""
    store = open_store(store_target)
    start(store, write_key="first")
    with pytest.raises(StoreError, match="already holds a run r1"):
        start(store, write_key="second")
    job = store.add_job("r1", JOB, [Measurement("fps", 30.0, "fps", "c")])
    with pytest.raises(StoreError, match="already has a measurement 'fps' of another value"):
        store.add_measurements(job, [Measurement("fps", 31.0, "fps", "c")])
    assert store.measurements("r1")[job]["fps"]["value"] == 30.0


def test_write_keys_are_not_results_so_release_digests_do_not_see_them(store_target: str) -> None:
    """A release tagged before schema 9 (rows without keys) verifies after the migration, and a keyed one too."""
    store = open_store(store_target)
    start(store, write_key="run")
    job = store.add_job("r1", JOB, MEASUREMENTS, write_key="job")
    store.add_device("r1", "d", "linux", "x86_64", [], {}, "ok", None, write_key="dev")
    store.add_run_metric("r1", "d", "bd", -3.0, "%", "pchip", None, write_key="metric")
    store.add_output_diff("r1", "s", 100.0, "a" * 64, "b" * 64, 3, 2.0, 80.0, None, write_key="diff")
    keyed = results_digests(store, "r1")
    with store._tx() as db:  # as the rows of a farm older than schema 9 read once migrated: no key
        for table in ("jobs", "run_devices", "run_metrics", "output_diffs", "run_attempts"):
            db.execute(f"UPDATE {table} SET write_key=NULL")
    assert results_digests(store, "r1") == keyed
    with store._tx() as db:  # while a change to a result is seen
        db.execute("UPDATE jobs SET frames=3 WHERE id=?", (job,))
    assert results_digests(store, "r1")["jobs"] != keyed["jobs"]


READS = {
    "run", "runs", "devices", "jobs", "measurements", "run_metrics", "gate_verdicts", "output_diffs", "frame_quality",
    "last_release", "releases", "resolve_run_id", "attempts", "completed_job_keys", "traces",
}  # fmt: skip


def test_every_method_the_store_retries_is_a_read_or_a_write_that_is_stored_once() -> None:
    """A write added to the retried methods without a key or a natural key would be stored twice: name it here."""
    retried = {n for n, f in vars(PostgresStore).items() if getattr(f, "__qualname__", "").startswith("_retrying.")}
    assert retried - READS - KEYED_WRITES - REPEATABLE_WRITES == set()
    assert retried >= KEYED_WRITES | REPEATABLE_WRITES and not READS & (KEYED_WRITES | REPEATABLE_WRITES)
    assert all("write_key" in inspect.signature(getattr(Store, n)).parameters for n in KEYED_WRITES)
