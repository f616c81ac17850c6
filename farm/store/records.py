"""Typed values that go into and come out of every store backend."""

from __future__ import annotations

from dataclasses import dataclass

from farm.measures import Measurement

__all__ = [
    "FRAME_QUALITY_FIELDS",
    "RESUMABLE_STATUSES",
    "RUN_STATUSES",
    "FrameQuality",
    "JobKey",
    "Measurement",
    "RunAttempt",
]

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


FRAME_QUALITY_FIELDS = ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "ssim", "vmaf", "flicker")
"""The per-frame values a ``frame_quality`` row holds, in column order."""


@dataclass(frozen=True)
class FrameQuality:
    """One frame of one decoded output scored against its source (a ``frame_quality`` row).

    Kept per distinct output and not per job: an output is scored once however many repeats and devices
    produced it (identical digests), so the jobs that name ``output_sha`` share these rows. A value the suite
    did not ask for is None, and so is ``flicker`` of frame 0, which has no previous frame.
    """

    output_sha: str
    source_sha: str
    frame: int
    psnr_y: float | None = None
    psnr_u: float | None = None
    psnr_v: float | None = None
    psnr_yuv: float | None = None
    ssim: float | None = None
    vmaf: float | None = None
    flicker: float | None = None
