"""Stopping, killing, resuming and sharing real runs on virtual SSH boards (real sshd), through the real CLI.

Bounds asserted here: after SIGINT/SIGTERM the controller exits 130 within STOP_BOUND_S; after a SIGKILL of the
controller the boards hold no farm process and no run folder within CLEAN_BOUND_S (the tether's watchdog polls
once a second).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from farm.bundle import write_sums
from farm.sim.sshboard import SshBoard
from farm.store import Store
from tests.conftest import EXAMPLES, ROOT, alive, wait_for, write
from tests.sim_fixtures import BoardFactory
from tests.support.runs import TINY_SUITE, variant

pytestmark = pytest.mark.slow

STOP_BOUND_S = 10.0
CLEAN_BOUND_S = 5.0
GATES = """  - {metric: fps, op: ">=", value: 1}
  - {metric: failures, op: "==", value: 0, scope: all}"""


def _suite(tmp_path: Path) -> str:
    return str(write(tmp_path / "stop.yaml", TINY_SUITE.format(gates=GATES)))


def _start(tmp_path: Path, inv: Path, bundle: Path, *extra: str, store: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "FARM_STORE": str(store or tmp_path / "state" / "results.db"), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "farm", "run", _suite(tmp_path), "--bundle", str(bundle), "--inventory", str(inv)]
    return subprocess.Popen([*argv, *extra], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _jobs(store: Path, run_id: str | None = None) -> list[sqlite3.Row]:
    if not store.exists():
        return []
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        where, args = ("WHERE run_id = ?", (run_id,)) if run_id else ("", ())
        return list(db.execute(f"SELECT * FROM jobs {where} ORDER BY id", args))
    except sqlite3.OperationalError:
        return []  # not created yet
    finally:
        db.close()


def _run_row(store: Path) -> sqlite3.Row:
    db = sqlite3.connect(store)
    db.row_factory = sqlite3.Row
    row = db.execute("SELECT * FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
    db.close()
    return row


def _clean(board: SshBoard) -> bool:
    jobs = board.workdir / "jobs"
    return not alive(str(board.workdir)) and (not jobs.exists() or not any(jobs.iterdir()))


def _boards(ssh_board: BoardFactory, tmp_path: Path) -> tuple[list[SshBoard], Path]:
    boards = [ssh_board("stop-1"), ssh_board("stop-2")]
    return boards, ssh_board.inventory(tmp_path / "devices.yaml")


def test_sigint_mid_decode_stops_cleans_keeps_and_resume_completes(ssh_board: BoardFactory, tmp_path: Path) -> None:
    boards, inv = _boards(ssh_board, tmp_path)
    slow = variant(tmp_path, "slow", ["sh", "-c", 'sleep 0.6; exec "$@"', "slow"])
    store = tmp_path / "state" / "results.db"
    proc = _start(tmp_path, inv, slow)
    assert wait_for(lambda: len(_jobs(store)) >= 3, 120), proc.communicate()[0] if proc.poll() is not None else ""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == 130, out
    assert took < STOP_BOUND_S, f"took {took:.1f}s to stop"
    assert "--resume" in out
    for board in boards:
        assert wait_for(lambda b=board: _clean(b), 2), (
            alive(str(board.workdir)),
            list((board.workdir / "jobs").iterdir()),
        )
    run = _run_row(store)
    kept = _jobs(store, run["id"])
    assert run["status"] == "interrupted" and 3 <= len(kept) < 16 and all(j["status"] == "ok" for j in kept)
    db = sqlite3.connect(store)
    scored = db.execute("SELECT COUNT(*) FROM measurements WHERE name = 'psnr_yuv' AND value IS NOT NULL").fetchone()
    assert scored[0] == len(kept)  # every finished job was scored
    repo = _git_repo(tmp_path / "codec")
    resume = _start(tmp_path, inv, slow, "--resume", run["id"], "--release", "v9.9.9", "--repo", str(repo))
    out, _ = resume.communicate(timeout=240)
    assert resume.returncode == 0, out
    after = _jobs(store, run["id"])
    assert len(after) == 16 and [j["id"] for j in after[: len(kept)]] == [j["id"] for j in kept]
    assert _run_row(store)["status"] == "complete"
    # per-frame quality: every decoded output's frames once, though the run was scored in two attempts
    db = sqlite3.connect(store)
    counts = db.execute("SELECT output_sha, source_sha, frame, COUNT(*) FROM frame_quality WHERE run_id=?"
                        " GROUP BY output_sha, source_sha, frame", (run["id"],)).fetchall()  # fmt: skip
    assert counts and all(n == 1 for *_, n in counts)
    assert {(r[0], r[1]) for r in counts} == {(j["output_sha"], j["source_sha"]) for j in after}
    tag = subprocess.run(["git", "-C", str(repo), "cat-file", "-p", "v9.9.9"], capture_output=True, text=True)
    assert '"resumed"' in tag.stdout and '"attempt": 2' in tag.stdout, tag.stdout  # the release says so


def _git_repo(path: Path) -> Path:
    path.mkdir()
    for argv in (["init", "-q"], ["config", "user.name", "t"], ["config", "user.email", "t@example.invalid"],
                 ["commit", "-q", "--allow-empty", "-m", "codec"]):  # fmt: skip
        subprocess.run(["git", "-C", str(path), *argv], check=True)
    return path


def test_sigkill_of_the_controller_leaves_boards_clean_and_the_run_interrupted(
    ssh_board: BoardFactory, tmp_path: Path
) -> None:
    boards, inv = _boards(ssh_board, tmp_path)
    hang = variant(tmp_path, "hang", ["sh", "-c", 'sleep 300; exec "$@"', "hang"])
    store = tmp_path / "state" / "results.db"
    proc = _start(tmp_path, inv, hang)
    assert wait_for(lambda: all(alive(f"{b.workdir}/jobs") for b in boards), 120)  # both boards mid-decode
    proc.kill()
    proc.wait()
    t0 = time.monotonic()
    for board in boards:
        assert wait_for(lambda b=board: _clean(b), CLEAN_BOUND_S), alive(str(board.workdir))
    took = time.monotonic() - t0
    env = {**os.environ, "FARM_STORE": str(store), "PYTHONPATH": str(ROOT)}
    runs = subprocess.run([sys.executable, "-m", "farm", "runs"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert runs.returncode == 0, runs.stderr
    run_id = _run_row(store)["id"]
    line = next(ln for ln in runs.stdout.splitlines() if run_id in ln)
    assert "interrupted" in line, (runs.stdout, f"boards clean after {took:.1f}s")  # shown, without writing
    Store(store).close()  # what every writer (the next farm run) does first: it records the reaping
    assert _run_row(store)["status"] == "interrupted"


def test_two_runs_on_one_board_take_turns(ssh_board: BoardFactory, tmp_path: Path) -> None:
    board = ssh_board("shared")
    inv = ssh_board.inventory(tmp_path / "devices.yaml")
    slow = variant(tmp_path, "slow", ["sh", "-c", 'sleep 1; exec "$@"', "slow"])
    store = tmp_path / "state" / "results.db"
    first = _start(tmp_path, inv, slow)
    assert wait_for(lambda: len(_jobs(store)) >= 1, 120)
    second = _start(tmp_path, inv, slow)
    out2, _ = second.communicate(timeout=300)
    out1, _ = first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, out1 + out2
    assert "waiting for shared, held by run" in out2
    windows = sorted((j["started_at"], j["finished_at"], j["run_id"]) for j in _jobs(store))
    assert len(windows) == 16 and len({w[2] for w in windows}) == 2
    for (_, end, run_a), (start, _, run_b) in itertools.pairwise(windows):
        assert start >= end or run_a == run_b, "decode windows of two runs overlap on one board"
    assert wait_for(lambda: _clean(board), CLEAN_BOUND_S)  # a run's watchdog may outlive it by a second


def test_ctrl_c_while_encoding_exits_130_and_starts_no_run(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the whole process group, the encoders too: that is a stop, not a bad bundle."""
    bundle = tmp_path / "slow-encoder"
    shutil.copytree(EXAMPLES / "av1-svt", bundle)
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    manifest["encoder"]["argv"] = ["sh", "-c", 'sleep 37.25; exec "$@"', "enc", *manifest["encoder"]["argv"]]
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(manifest))
    write_sums(bundle)
    store = tmp_path / "state" / "results.db"
    env = {**os.environ, "FARM_STORE": str(store), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "farm", "run", _suite(tmp_path), "--bundle", str(bundle), "--inventory",
         str(ROOT / "devices.yaml")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: bool(alive("sleep 37.25")), 60)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # a test that starts a farm stops it, whatever failed
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out
    assert time.monotonic() - t0 < STOP_BOUND_S and "stopped while encoding" in out
    assert not _jobs(store) and not alive("sleep 37.25")
