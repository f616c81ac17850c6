"""A device session on a real device with a tiny generated decoder, counting the channels each job opens.

Shared by tests/test_round_trips.py and bench/bench_job_overhead.py: both judge a job by the channels its
transport opened (``Transport.opened``) between the session's "job" status and its ``JobDone``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from farm.artifacts import DecodedCache
from farm.config.inventory import Device
from farm.config.suite import load_suite
from farm.devices.base import FarmDevice
from farm.devices.connect import connect
from farm.devices.posix import PosixDevice
from farm.fileio import write_atomic
from farm.session.cancel import Cancel
from farm.session.events import Event, JobDone, Status
from farm.session.session import SessionEnv, run_session
from farm.session.spec import BundleRef, FileRef, JobKey, JobSpec, SessionSpec

SUITE = """
name: round-trips
sequences:
  - id: clip
    generate: {source: testsrc2, width: 16, height: 8, fps: 30, frames: 3}
rates_kbps: [100]
repeats: 1
timeout_s: 61.37
power: {baseline_s: 0, sample_hz: 20}
gates:
  - {metric: failures, op: "==", value: 0}
"""
# a 2x2 one-frame Y4M, the same on every run (so later jobs' outputs are already on the host: nothing to pull)
DECODER = r"""#!/bin/sh
sleep "$3"
printf 'YUV4MPEG2 W2 H2 F30:1 Ip A1:1 C420jpeg\nFRAME\n\001\002\003\004\005\006' >"$2"
"""


def job_spec(
    tmp_path: Path, device: Device, jobs: int, decode_s: str, run_id: str = "rt-1"
) -> tuple[SessionSpec, dict[str, Path]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    suite_file, decoder, bs = tmp_path / "suite.yaml", tmp_path / "decoder.sh", tmp_path / "bs.bin"
    write_atomic(suite_file, SUITE)
    write_atomic(decoder, DECODER, 0o755)
    write_atomic(bs, "bits")
    suite = load_suite(suite_file)
    dsha, bsha = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (decoder, bs))
    argv = ("{bundle}/decoder.sh", "{input}", "{output}", decode_s)
    bundle = BundleRef("b" * 64, "codec 1", (FileRef(dsha, "decoder.sh", decoder.stat().st_size),), argv)
    ref = FileRef(bsha, f"{bsha}.bin", 4)
    specs = tuple(
        JobSpec(i, JobKey("test", "clip", 100.0, i), bundle.digest, ref, "s" * 64, 30.0, 1000) for i in range(jobs)
    )
    return SessionSpec(run_id, device, suite, (bundle,), specs), {dsha: decoder, bsha: bs}


class Counted:
    """Session events with the device's channel count at each, so each job's round trips can be told apart."""

    def __init__(self) -> None:
        self.dev: PosixDevice | None = None
        self.events: list[tuple[Event, int]] = []

    def connect(self, device: Device, state: Path) -> FarmDevice:
        dev = connect(device, state)
        assert isinstance(dev, PosixDevice)
        self.dev = dev
        return dev

    def emit(self, event: Event) -> None:
        self.events.append((event, self.dev.transport.opened if self.dev is not None else 0))

    def per_job(self) -> list[tuple[JobDone, int]]:
        """(job, channels opened from its "job" status to its JobDone)."""
        out, start = [], None
        for event, count in self.events:
            if isinstance(event, Status) and event.phase == "job":
                start = count
            elif isinstance(event, JobDone) and start is not None:
                out.append((event, count - start))
        return out


def counted_session(
    tmp_path: Path,
    device: Device,
    jobs: int,
    decode_s: str,
    cancel: Cancel,
    decoded: Path | None = None,
    run_id: str = "rt-1",
) -> Counted:
    """Run ``jobs`` jobs whose decoder sleeps ``decode_s``; ``decoded``: a host output cache kept across runs.

    Sessions run one after another need run ids of their own: a closed tether's watchdog removes its run's
    folder up to a second later, under a session that reused the id.
    """
    spec, files = job_spec(tmp_path, device, jobs, decode_s, run_id)
    counted = Counted()
    cache = DecodedCache(decoded or tmp_path / "decoded")
    env = SessionEnv(tmp_path / "state", files.__getitem__, cache, cancel, counted.emit, connect=counted.connect)
    run_session(spec, env)
    return counted
