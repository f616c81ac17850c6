"""Ctrl-C and SIGTERM stop a run cooperatively; a second one exits at once.

The first signal only sets the run's ``Cancel`` (devices are then told to stop and cleaned, finished jobs are
scored and kept, exit 130). A second signal means the user will not wait: the process exits immediately, and the
devices' watchdogs clean up after it (their tether to this process is gone).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from farm.session.cancel import Cancel

EXIT_INTERRUPTED = 130


@contextmanager
def stop_on_signals(
    cancel: Cancel, say: str = "stopping: killing decoders and cleaning devices (again to quit now)"
) -> Iterator[None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if cancel.is_set():
            os.write(2, f"\n{name} again: exiting now; devices clean themselves up\n".encode())
            os._exit(EXIT_INTERRUPTED)
        os.write(2, f"\n{name}: {say}\n".encode())
        cancel.set(f"interrupted by {name}")

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may take signals; the caller's own handling applies
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        sys.stderr.flush()
