"""Store failures on real media: a full tmpfs, a read-only bind mount, a folder we cannot write, corrupted files.

Mounting needs root (CI runs as root); without it those tests are skipped with the reason, never faked.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm.cli import app
from farm.store import Measurement, NewerStoreError, Store, StoreError
from tests.store_fixtures import JOB, V2_SCHEMA, orphan, start


def farm(store: Path, *args: str) -> tuple[int, str]:
    """The real CLI in-process; catch_exceptions=False so a traceback fails the test instead of being hidden."""
    res = CliRunner().invoke(app, list(args), env={"FARM_STORE": str(store)}, catch_exceptions=False)
    return res.exit_code, res.output


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def mount_or_skip(*argv: str) -> None:
    try:
        sh("mount", *argv)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount here (needs root): {exc}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem, so SQLite meets a genuine ENOSPC."""
    where = tmp_path / "small"
    where.mkdir()
    mount_or_skip("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where))
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def ro_view(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(writable folder, the same folder through a read-only bind mount)."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    mount_or_skip("--bind", str(src), str(ro))
    try:
        sh("mount", "-o", "remount,ro,bind", str(ro))
        yield src, ro
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28  # ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_is_a_store_error_and_keeps_the_store_consistent(small_disk: Path) -> None:
    path = small_disk / "r.db"
    store = Store(path)
    start(store)
    store.add_job("r1", JOB, [Measurement("fps", 30.0, "fps", "steady")])
    filler = fill(small_disk)
    big = [Measurement(f"m{i}", 1.0, "u", "c" * 100) for i in range(500)]
    with pytest.raises(StoreError) as info:
        store.add_job("r1", JOB | {"repeat": 1, "stderr_tail": "x" * 200_000}, big)
    assert info.value.exit_code == 3 and info.value.path == str(path)
    assert "is full while recording a job" in str(info.value) and "Free space" in str(info.value)
    # neither the job row nor any of its measurements was kept
    assert [j["repeat"] for j in store.jobs("r1")] == [0]
    assert list(store.measurements("r1")) == [store.jobs("r1")[0]["id"]]
    with pytest.raises(StoreError, match="full while finishing a run"):
        store.finish_run("r1", "complete", {})
    with pytest.raises(StoreError, match="full while opening it"):
        Store(small_disk / "new.db")
    assert [r["id"] for r in Store(path).runs()] == ["r1"]  # an up-to-date store opens on a full disk
    filler.unlink()
    store.add_job("r1", JOB | {"repeat": 1}, [Measurement("fps", 31.0, "fps", "steady")])
    store.finish_run("r1", "complete", {})
    assert len(store.jobs("r1")) == 2 and store.run("r1")["status"] == "complete"


def test_a_full_disk_fails_farm_runs_with_exit_3_and_no_traceback(small_disk: Path) -> None:
    store = Store(small_disk / "r.db")
    start(store)
    store.add_job("r1", JOB, [Measurement("fps", 30.0, "fps", "steady")])
    store.finish_run("r1", "complete", {})
    store.close()
    fill(small_disk)
    code, output = farm(small_disk / "r.db", "gate", "r1")  # gate records a new evaluation
    assert code == 3 and "is full while" in output, output
    assert "Traceback" not in output


def test_a_read_only_mount_refuses_writing_and_still_serves_runs_and_report(ro_view: tuple[Path, Path]) -> None:
    src, ro = ro_view
    store = Store(src / "r.db")
    start(store)
    store.add_job("r1", JOB, [Measurement("fps", 30.0, "fps", "steady")])
    store.finish_run("r1", "complete", {})
    store.close()
    assert not (src / "r.db-wal").exists()  # closed cleanly: only immutable=1 can open it on a read-only mount
    with pytest.raises(StoreError, match="cannot be written") as info:
        Store(ro / "r.db")
    assert info.value.exit_code == 3 and str(ro / "r.db") in str(info.value)
    reader = Store.open_readonly(ro / "r.db")
    assert [r["status"] for r in reader.runs()] == ["complete"]
    with pytest.raises(StoreError, match="opened read-only"):
        reader.finish_run("r1", "incomplete", {})
    code, output = farm(ro / "r.db", "runs")
    assert code == 0 and "r1" in output and "complete" in output, output
    code, output = farm(ro / "r.db", "report", "r1")
    assert code == 0 and "gates of run r1" in output, output
    code, output = farm(ro / "r.db", "gate", "r1")
    assert code == 3 and "read-only" in output and "Traceback" not in output, output


def test_a_read_only_mount_with_a_live_writer_shows_what_it_committed(ro_view: tuple[Path, Path]) -> None:
    src, ro = ro_view
    writer = Store(src / "r.db")
    start(writer, "r1")
    start(writer, "r2")  # still only in the -wal: mode=ro must see it, immutable=1 would not
    assert (src / "r.db-wal").exists()
    assert sorted(r["id"] for r in Store.open_readonly(ro / "r.db").runs()) == ["r1", "r2"]
    writer.close()


def test_a_read_only_mount_shows_a_dead_controllers_run_interrupted(ro_view: tuple[Path, Path]) -> None:
    src, ro = ro_view
    orphan(src / "r.db", "dead")
    assert not (src / "r.db-wal").exists()  # immutable=1, where BEGIN would fail: reaping must not need it
    reader = Store.open_readonly(ro / "r.db")
    assert [(r["id"], r["status"]) for r in reader.runs()] == [("dead", "interrupted")]
    assert Store(src / "r.db").run("dead")["status"] == "interrupted"  # a writer then records it for real


def test_an_older_store_on_a_read_only_mount_is_read_through_a_copy_in_memory(ro_view: tuple[Path, Path]) -> None:
    src, ro = ro_view
    with sqlite3.connect(src / "old.db") as db:
        db.executescript(V2_SCHEMA)
    reader = Store.open_readonly(ro / "old.db")
    assert [r["id"] for r in reader.runs()] == ["old"]
    assert reader.output_diffs("old") == [] and reader.attempts("old")[0].attempt == 1
    with sqlite3.connect(f"{(src / 'old.db').as_uri()}?mode=ro", uri=True) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"  # untouched


def test_a_folder_the_user_cannot_write_is_read_only_for_that_user() -> None:
    """As root nothing is unwritable, so the check runs in a forked child that drops to nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    folder = Path(tempfile.mkdtemp(prefix="farm-ro-"))
    try:
        store = Store(folder / "r.db")
        start(store)
        store.close()
        folder.chmod(0o755)
        (folder / "r.db").chmod(0o644)
        result = _as_nobody(folder / "r.db")
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)
    assert result.get("runs") == ["r1"], result
    assert result["write_exit"] == 3 and "cannot be written" in result["write_error"], result


def _as_nobody(path: Path) -> dict[str, object]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and never returns
        out: dict[str, object] = {}
        try:
            os.setgid(65534)
            os.setuid(65534)
            out["runs"] = [r["id"] for r in Store.open_readonly(path).runs()]
            try:
                Store(path)
            except StoreError as exc:
                out["write_exit"], out["write_error"] = exc.exit_code, str(exc)
        except BaseException as exc:
            out["crash"] = repr(exc)
        os.write(write_end, json.dumps(out).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupted_store_is_a_clear_error_on_every_command(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "r.db"
    store = Store(path)
    for i in range(20):
        start(store, f"r{i}")
    store.close()
    if damage == "garbage":
        path.write_bytes(b"not a database " * 1000)
    else:
        os.truncate(path, path.stat().st_size // 2)
    for readonly in (False, True):
        with pytest.raises(StoreError, match="is corrupted or is not a farm store") as info:
            Store(path, readonly=readonly).runs()
        assert info.value.exit_code == 3 and str(path) in str(info.value)
    for args in (["runs"], ["report", "r1"], ["gate", "r1"]):
        code, output = farm(path, *args)
        assert code == 3 and "corrupted" in output and "Traceback" not in output, (args, output)


def test_a_store_from_a_newer_farm_asks_for_an_upgrade_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    for readonly in (False, True):
        with pytest.raises(NewerStoreError) as info:
            Store(path, readonly=readonly)
        assert info.value.exit_code == 2 and "Upgrade the farm" in str(info.value)
    code, output = farm(path, "runs")
    assert code == 2 and "newer than this farm" in output and "Traceback" not in output, output


def test_reading_a_store_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "none" / "r.db"
    assert Store.open_readonly(path).runs() == []
    code, output = farm(path, "report", "r1")
    assert code == 2 and f"no results store at {path}" in output  # said so, rather than "no run matches"
    assert not path.parent.exists()


def test_a_store_that_fills_up_mid_run_stops_it_cleans_the_device_and_keeps_what_was_measured(
    small_disk: Path, tmp_path: Path
) -> None:
    """The recorder meets a full disk on the second job: devices are still cleaned, the jobs are kept aside."""
    from farm.pipeline import RunOptions, StoreFailed, execute
    from farm.plan import load_plan
    from farm.session.cancel import Cancel
    from farm.session.events import Event, JobDone
    from tests.conftest import ROOT
    from tests.support.runs import suite

    state = tmp_path / "state"
    gates = '  - {metric: failures, op: "==", value: 0, scope: all}'
    plan = load_plan(Path(suite(tmp_path, gates)), ROOT / "examples/bundles/av1-svt", None, ROOT / "devices.yaml", None,
                     state / "cache")  # fmt: skip
    store = Store(small_disk / "r.db")
    filled: list[Path] = []

    def fill_after_first_job(event: Event) -> None:
        if isinstance(event, JobDone) and not filled:
            filled.append(fill(small_disk))

    with pytest.raises(StoreFailed) as exc:
        execute(plan, store, RunOptions(state, Cancel(), [fill_after_first_job]))
    message = str(exc.value)
    assert "r.db" in message and "measured job(s) could not be stored" in message and exc.value.exit_code == 3
    kept = next(state.glob("unstored/farm-unstored-*.jsonl"))
    lines = [json.loads(line) for line in kept.read_text().splitlines()]
    assert lines and all(r["status"] == "ok" and r["measurements"] for r in lines)  # measured, not lost
    workdir = state / "device" / "local" / "jobs"
    assert not workdir.exists() or not any(workdir.iterdir())  # the device was cleaned all the same
