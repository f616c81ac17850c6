"""Device leases across processes: one run per device, a waiter says whom it waits for, a killed holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from farm import leases
from farm.session.cancel import Cancel
from tests.conftest import wait_for

HOLD = """
import sys, time
from pathlib import Path
from farm import leases
from farm.session.cancel import Cancel
lease = leases.acquire(Path(sys.argv[1]), "board-1:/w", "board-1", "run-A", timeout_s=5, cancel=Cancel(),
                       waiting=lambda h: None)
print("held", flush=True)
time.sleep(60)
"""


def _holder(root: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_waits_says_for_whom_and_gives_up_naming_the_device(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    try:
        told: list[leases.Holder | None] = []
        t0 = time.monotonic()
        with pytest.raises(leases.LeaseTimeout) as exc:
            leases.acquire(tmp_path, "board-1:/w", "board-1", "run-B", timeout_s=1.0, cancel=Cancel(),
                           waiting=told.append)  # fmt: skip
        assert 1.0 <= time.monotonic() - t0 < 3.0
        assert len(told) == 1 and told[0] is not None and (told[0].run_id, told[0].pid) == ("run-A", proc.pid)
        assert f"board-1: held by run run-A (pid {proc.pid}" in str(exc.value) and "--lease-timeout" in str(exc.value)
        assert exc.value.exit_code == 3
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_frees_the_device_at_once(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lease = leases.acquire(tmp_path, "board-1:/w", "board-1", "run-B", timeout_s=0.5, cancel=Cancel(),
                           waiting=lambda _h: pytest.fail("nobody holds it"))  # fmt: skip
    assert lease is not None and leases.read_holder(leases.lock_path(tmp_path, "board-1:/w")) == lease.holder
    lease.release()
    assert leases.read_holder(leases.lock_path(tmp_path, "board-1:/w")) is None


def test_a_stop_ends_the_wait_and_other_devices_are_not_blocked(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    try:
        cancel = Cancel()
        other = leases.acquire(tmp_path, "board-2:/w", "board-2", "run-B", timeout_s=0.5, cancel=cancel,
                               waiting=lambda _h: pytest.fail("board-2 is free"))  # fmt: skip
        assert other is not None
        other.release()
        import threading

        threading.Timer(0.3, cancel.set).start()
        t0 = time.monotonic()
        got = leases.acquire(tmp_path, "board-1:/w", "board-1", "run-B", timeout_s=30, cancel=cancel,
                             waiting=lambda _h: None)  # fmt: skip
        assert got is None and time.monotonic() - t0 < 2.0
    finally:
        proc.kill()
        assert wait_for(lambda: proc.poll() is not None)
