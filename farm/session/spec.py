"""What a device session needs to know, as small frozen values that pickle (so a session can run elsewhere).

Jobs name what they decode by digest, not by host path: the process that runs the session resolves a digest
to a local file through its own artifact source (the controller's caches for threads; an agent's cache later).
"""

from __future__ import annotations

from dataclasses import dataclass

from farm.config.inventory import Device
from farm.config.suite import Suite

PENDING = ""
"""The digest of a bitstream not encoded yet: its content, hence its name on the device, is not known."""


@dataclass(frozen=True)
class FileRef:
    """One file a device needs: its sha256, the name it has on the device (relative), and its size."""

    digest: str
    name: str
    size: int


@dataclass(frozen=True)
class BundleRef:
    """The part of a bundle one device target uses: files to stage, and the decode template or app."""

    digest: str
    label: str
    files: tuple[FileRef, ...]
    decode: tuple[str, ...] | None
    app: FileRef | None = None
    bundle_id: str | None = None


@dataclass(frozen=True)
class JobKey:
    """A job's identity within a run on one device: resume matches stored jobs by this key."""

    role: str  # test | anchor
    sequence: str
    rate_kbps: float
    repeat: int

    def label(self) -> str:
        return f"{self.role} {self.sequence} @{self.rate_kbps:g}k r{self.repeat}"


@dataclass(frozen=True)
class JobSpec:
    """One decode: which bundle, which bitstream, and what the source it came from looks like."""

    index: int  # position in the run's plan: names the job's folder on the device
    key: JobKey
    bundle: str  # BundleRef.digest
    bitstream: FileRef
    source_sha: str
    source_fps: float
    output_bytes: int  # decoded size the job will need on the device (8-bit 4:2:0 Y4M, upper bound)

    @property
    def ready(self) -> bool:
        """False while its bitstream is still being encoded (a pipelined run, docs/pipelined-run.md): the
        session asks its ``SessionEnv.bitstream`` for the finished job when it reaches it."""
        return self.bitstream.digest != PENDING


@dataclass(frozen=True)
class SessionSpec:
    """Everything one device's session needs; ``jobs`` may be a subset of the plan (a resumed run)."""

    run_id: str
    device: Device
    suite: Suite
    bundles: tuple[BundleRef, ...]
    jobs: tuple[JobSpec, ...]

    def bundle(self, digest: str) -> BundleRef:
        return next(b for b in self.bundles if b.digest == digest)
