"""The encode lane: a pipelined run's bitstreams encoded in the background, in the order devices need them.

Two encodes at a time, as ``prepare_media`` (a third would only share the same two cores). Each bitstream is a
future keyed by what the job names before it exists (role, sequence, rate), since its digest is only known once
encoded. A session blocks on one only when it reaches the job that decodes it, and a stop wakes it. The first
encode that fails stops the run (the sessions through the run's cancel) and is raised by ``finish`` with the
message a serial run gives; encodes killed by a stop are not failures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from farm.errors import Stopped
from farm.lanes.clock import Lane
from farm.media import Bitstream, Source
from farm.plan import EncodeTask, Media, Plan, bitstream_ref, encode_one, encode_tasks, media_of
from farm.session.cancel import Cancel
from farm.session.spec import JobSpec

BitstreamKey = tuple[str, str, float]  # (role, sequence, rate)


class EncodeLane:
    def __init__(
        self, plan: Plan, sources: dict[str, Source], cache: Path, cancel: Cancel, lane: Lane,
        waited: Callable[[str, float], None],
    ) -> None:  # fmt: skip
        self._plan, self._sources, self._cache, self._cancel, self._lane = plan, sources, cache, cancel, lane
        self._waited = waited
        self._changed = threading.Condition()
        self._paths: dict[str, Path] = {}
        self.failure: BaseException | None = None
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(cancel.on_cancel(self._notify))
        self._tasks = encode_tasks(plan, sources)
        lane.add(total=len(self._tasks))
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="encode")
        self._futures: dict[BitstreamKey, Future[Bitstream]] = {}
        for task in self._tasks:
            fut = self._pool.submit(self._encode, task)
            fut.add_done_callback(lambda _: self._notify())
            self._futures[(task[0], task[2], task[3])] = fut

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _encode(self, task: EncodeTask) -> Bitstream:
        if self._cancel.is_set():
            raise Stopped("stopped before this encode started")
        try:
            with self._lane.busy():
                bs = encode_one(self._plan, task, self._sources, self._cache, self._cancel)
        except BaseException as exc:
            with self._changed:
                if self.failure is None and not self._cancel.is_set():
                    self.failure = exc
                    self._cancel.set("an encode failed")
            raise
        with self._changed:
            self._paths[bs.sha256] = bs.path
        self._lane.add(done=1)
        return bs

    def path(self, digest: str) -> Path:
        """A finished bitstream's file on this host (the sessions' artifact source for bitstreams)."""
        with self._changed:
            return self._paths[digest]

    def job(self, device_id: str, job: JobSpec, wait: bool) -> JobSpec | None:
        """``job`` with its bitstream filled in; None when not encoded yet (and not waiting), or never will be."""
        if job.ready:
            return job
        fut = self._futures[(job.key.role, job.key.sequence, job.key.rate_kbps)]
        if not fut.done() and wait:
            began = time.monotonic()
            with self._changed:
                self._changed.wait_for(lambda: fut.done() or self._cancel.is_set())
            self._waited(device_id, time.monotonic() - began)
        if not fut.done() or fut.cancelled() or fut.exception() is not None:
            return None
        return dataclasses.replace(job, bitstream=bitstream_ref(fut.result()))

    def fill(self, job: JobSpec) -> JobSpec:
        """A job reported without running (its device failed): with its bitstream when it gets one, as serially."""
        return self.job("", job, wait=True) or job

    def finish(self) -> tuple[Media, bool]:
        """Wait for every encode: the run's media (what finished, after a stop) and whether all of it finished.

        Raises the first encode failure, as a serial run's ``prepare_media`` would.
        """
        self._pool.shutdown(wait=True, cancel_futures=self._cancel.is_set())
        if self.failure is not None:
            raise self.failure
        ok = [(t, f.result()) for t, f in zip(self._tasks, self._futures.values(), strict=True)
              if f.done() and not f.cancelled() and f.exception() is None]  # fmt: skip
        media = media_of(self._sources, [t for t, _ in ok], [bs for _, bs in ok])
        return media, len(ok) == len(self._tasks)

    def close(self) -> None:
        """Stop what is still queued (running encodes are killed by the run's cancel, if it is set)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._stack.close()
