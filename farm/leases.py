"""Device leases on one host: a device is used by one run at a time, across every farm process on the host.

An OS lock (``flock``) per device under the state dir: the kernel releases it when its holder dies, even by
SIGKILL, so a crashed run can never keep a device for ever. The lock file names its holder (run, pid, since), so
a run that waits can say what it waits for. Keyed by what reaches the physical device and its workdir, not by
the inventory id, so two inventories naming one board still share its lease.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from farm.errors import InfraError
from farm.session.cancel import Cancel

POLL_S = 0.25


@dataclass(frozen=True)
class Holder:
    device_id: str
    run_id: str
    pid: int
    host: str
    since: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"held by run {self.run_id} (pid {self.pid} on {self.host}) since {when}"


class LeaseTimeout(InfraError):
    """The device stayed leased to another run for longer than this run would wait."""


class Lease:
    """A held device lease; ``release`` (or leaving the ``with`` block) gives it back."""

    def __init__(self, fd: int, holder: Holder) -> None:
        self._fd: int | None = fd
        self.holder = holder

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # a released lease names no holder
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def lock_path(root: Path, key: str) -> Path:
    return root / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock"


def read_holder(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None  # free, or being written this instant


def acquire(
    root: Path, key: str, device_id: str, run_id: str, *, timeout_s: float, cancel: Cancel,
    waiting: Callable[[Holder | None], None],
) -> Lease | None:  # fmt: skip
    """Lease the device, waiting up to ``timeout_s``; None if the run was stopped while waiting.

    ``waiting`` is told once per holder seen, so the user learns who has the device without a flood of lines.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = lock_path(root, key)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + timeout_s
    told: Holder | None = None
    first = True
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = read_holder(path)
            if first or (holder is not None and holder != told):
                waiting(holder)
                told, first = holder, False
            if time.monotonic() >= deadline:
                os.close(fd)
                what = told.describe() if told else "held by another run"
                raise LeaseTimeout(f"{device_id}: {what}; gave up after {timeout_s:g}s (--lease-timeout)") from None
            if cancel.wait(min(POLL_S, deadline - time.monotonic())):
                os.close(fd)
                return None
    holder = Holder(device_id, run_id, os.getpid(), socket.gethostname(), time.time())
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(asdict(holder)).encode(), 0)
    return Lease(fd, holder)
