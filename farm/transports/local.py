"""The machine the farm runs on, reached through the same protocol as a remote device.

Commands run in their own session (process group), so a timeout kills the decoder and everything it started,
just as ``timeout -k`` and ``setsid`` do on a remote board.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from farm.errors import CommandFailed
from farm.transports.base import Background, Completed, TransportError, logged


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class LocalHeld:
    """A held command on this machine: its stdin is a pipe only this process writes to.

    When this process dies, even by SIGKILL, the kernel closes the pipe and the command reads end of input.
    """

    def __init__(self, proc: subprocess.Popen[bytes], first_line: str) -> None:
        self.proc = proc
        self.first_line = first_line
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        with self._lock:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)  # reaped, so nothing on the device mistakes a zombie for a live holder


class LocalTransport:
    description = "local"

    def __init__(self) -> None:
        self.opened = 0
        """Processes started and files copied (the local count of a link's round trips)."""
        self._spawned: dict[int, subprocess.Popen[bytes]] = {}

    def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None) -> Completed:
        self.opened += 1
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise TransportError(f"local: cannot start {argv[0]!r}: {exc}") from exc
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, err = proc.communicate()
            timed_out = True
        # the command's own children may still hold the group; a finished command leaves nothing behind
        _kill_group(proc.pid)
        done = Completed(
            argv=tuple(argv),
            exit_status=None if timed_out else proc.returncode,
            stdout=out,
            stderr=err,
            timed_out=timed_out,
            seconds=time.monotonic() - start,
        )
        return logged(self.description, done)

    def spawn(self, argv: Sequence[str]) -> Background:
        self.opened += 1
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise TransportError(f"local: cannot start {argv[0]!r}: {exc}") from exc
        self._spawned[proc.pid] = proc
        return Background(argv=tuple(argv), handle=proc.pid)

    def kill(self, proc: Background) -> None:
        _kill_group(proc.handle)
        child = self._spawned.pop(proc.handle, None)
        if child is not None:
            child.wait()

    def hold(self, argv: Sequence[str], *, timeout: float) -> LocalHeld:
        self.opened += 1
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise TransportError(f"local: cannot start {argv[0]!r}: {exc}") from exc
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        if not line.endswith(b"\n"):
            _kill_group(proc.pid)
            _, err = proc.communicate()
            raise CommandFailed("local", f"holding {argv[0]!r}", proc.returncode, err.decode(errors="replace")[-400:])
        assert proc.stderr is not None
        proc.stderr.close()  # a held command says nothing more; an unread pipe must not block it
        return LocalHeld(proc, line.decode(errors="replace").strip())

    def push(self, local: Path, remote: str) -> int:
        self.opened += 1
        return self._copy(local, Path(remote))

    def pull(self, remote: str, local: Path) -> int:
        self.opened += 1
        return self._copy(Path(remote), local)

    @staticmethod
    def _copy(src: Path, dst: Path) -> int:
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        except OSError as exc:  # there is no link to lose here: a failed copy is the command failing
            raise CommandFailed("local", f"copy {src} -> {dst}", exc.errno, exc.strerror or str(exc)) from exc
        return dst.stat().st_size

    def close(self) -> None:
        for pid in list(self._spawned):
            self.kill(Background(argv=(), handle=pid))
