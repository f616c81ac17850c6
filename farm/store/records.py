"""Typed values that go into and come out of every store backend."""

from __future__ import annotations

from dataclasses import dataclass

from farm.measures import Measurement

__all__ = ["RESUMABLE_STATUSES", "RUN_STATUSES", "JobKey", "Measurement", "RunAttempt"]

# running -> complete | incomplete (every job ran; some failed) | interrupted (stopped, or its controller died).
# Only incomplete and interrupted runs can be reopened to run the jobs they lack.
RUN_STATUSES = ("running", "complete", "incomplete", "interrupted")
RESUMABLE_STATUSES = ("interrupted", "incomplete")

# (device_id, role, sequence, rate_kbps, repeat): what identifies a job within a run across attempts
JobKey = tuple[str, str, str, float, int]


@dataclass(frozen=True)
class RunAttempt:
    """One stretch of a run under one controller process: attempt 1 is the original, later ones are resumes."""

    run_id: str
    attempt: int
    controller_host: str | None
    controller_pid: int | None
    started_at: float
    finished_at: float | None
    status: str
    detail: str | None = None
