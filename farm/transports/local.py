"""The machine the farm runs on, reached through the same protocol as a remote device.

Commands run in their own session (process group), so a timeout kills the decoder and everything it started,
just as ``timeout -k`` and ``setsid`` do on a remote board.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from farm.errors import CommandFailed
from farm.transports.base import Background, Completed, TransportError


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class LocalTransport:
    description = "local"

    def __init__(self) -> None:
        self._spawned: dict[int, subprocess.Popen[bytes]] = {}

    def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None) -> Completed:
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
        return Completed(
            argv=tuple(argv),
            exit_status=None if timed_out else proc.returncode,
            stdout=out,
            stderr=err,
            timed_out=timed_out,
            seconds=time.monotonic() - start,
        )

    def spawn(self, argv: Sequence[str]) -> Background:
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

    def push(self, local: Path, remote: str) -> int:
        return self._copy(local, Path(remote))

    def pull(self, remote: str, local: Path) -> int:
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
