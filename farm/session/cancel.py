"""A run's stop request, shared by the signal handler, the executor and every session of the run.

Setting it is safe from a signal handler: callbacks (closing tethers, which talks to devices) run on a thread of
their own, never inside the handler, so a stop never waits on a lock the interrupted code holds.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Cancel:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next = 0
        self.reason = ""

    def set(self, reason: str = "interrupted") -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks = list(self._callbacks.values())
        threading.Thread(target=_call_all, args=(callbacks,), name="cancel", daemon=True).start()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking at once when the run is stopped (True then)."""
        return self._event.wait(max(0.0, timeout))

    @contextmanager
    def on_cancel(self, fn: Callable[[], None]) -> Iterator[None]:
        """Call ``fn`` (once, on another thread) if the run is stopped while this block runs."""
        with self._lock:
            key = self._next
            self._next += 1
            self._callbacks[key] = fn
            already = self._event.is_set()
        if already:
            threading.Thread(target=_call_all, args=([fn],), daemon=True).start()
        try:
            yield
        finally:
            with self._lock:
                self._callbacks.pop(key, None)


def _call_all(callbacks: list[Callable[[], None]]) -> None:
    for fn in callbacks:
        # a device that cannot be told to stop is cleaned by its own watchdog once this process is gone
        with contextlib.suppress(Exception):
            fn()
