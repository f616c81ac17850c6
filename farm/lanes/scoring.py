"""The scoring lane: each distinct decoded output is scored as soon as it is on the host, while devices decode.

One worker (the machine's other core decodes or encodes meanwhile). It only fills the host's score cache
(``farm.scoring.score_outputs``, keyed by output, source, tool and metrics): the store is written at the end by
``score_run`` on the controller's thread, which then reads these scores back instead of computing them, so a
pipelined run stores exactly what a serial one does and the store keeps its single writer.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from farm.artifacts import DecodedCache
from farm.config.suite import Suite
from farm.lanes.clock import Lane
from farm.media import Source
from farm.scoring import ScoreKey, score_outputs
from farm.session.cancel import Cancel
from farm.session.events import Event, JobDone


class ScoringLane:
    """Counts distinct outputs from ``JobDone`` events; scores them early only when ``eager`` (pipelined)."""

    def __init__(
        self, suite: Suite, sources: Mapping[str, Source], decoded: DecodedCache, cache: Path, lane: Lane,
        cancel: Cancel, eager: bool,
    ) -> None:  # fmt: skip
        self._suite, self._decoded, self._cache, self._lane, self._cancel = suite, decoded, cache, lane, cancel
        self._sources = {s.sha256: s for s in sources.values()}
        self._seen: set[ScoreKey] = set()
        self._scored = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score") if eager else None

    def __call__(self, event: Event) -> None:
        if not isinstance(event, JobDone) or event.status != "ok" or event.output_sha is None:
            return
        key = (event.output_sha, event.job.source_sha)
        if key in self._seen or key[1] not in self._sources:
            return
        self._seen.add(key)
        self._lane.add(total=1)
        if self._pool is not None and self._decoded.has(key[0]):
            self._pool.submit(self._score, key)

    def _score(self, key: ScoreKey) -> None:
        if self._cancel.is_set():
            return  # a stopped run scores what it has at the end, as a serial one
        with self._lane.busy():
            score_outputs({key: (self._decoded.path(key[0]), self._sources[key[1]].path)}, self._suite, self._cache)
        self._scored += 1
        self._lane.add(done=1)

    def drain(self) -> None:
        """Wait for the outputs already handed over (dropping those not started when the run is stopped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=self._cancel.is_set())

    def finished(self) -> None:
        """``score_run`` has scored the rest: count them done."""
        self._lane.add(done=len(self._seen) - self._scored)
