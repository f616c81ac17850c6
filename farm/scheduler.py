"""Dispatch device sessions in parallel. One thread per device: sessions spend their time waiting on devices.

A session never raises (it records its failure), so one dead device cannot stop the others; the scheduler
only has to start them all and collect their reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from farm.runner import DeviceSession, SessionReport


def dispatch(sessions: Sequence[DeviceSession]) -> list[SessionReport]:
    if not sessions:
        return []
    with ThreadPoolExecutor(max_workers=len(sessions), thread_name_prefix="device") as pool:
        return list(pool.map(lambda s: s.run(), sessions))
