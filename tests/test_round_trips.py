"""One round trip per job on shell devices (issue 17): a session's jobs counted in channels the transport opened.

Real peers only: the local device, a real sshd board and the farm's ADB emulator, each through ``run_session``
with its real connect. The count comes from the transport itself (``Transport.opened``: an SSH channel, an ADB
stream, a local process), between the session's "job" status and that job's ``JobDone``, so nothing the
session does for a job escapes it. Power, thermal and battery must still be measured from that one reply.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from farm.artifacts import DecodedCache
from farm.config.inventory import Device, load_inventory
from farm.config.suite import load_suite
from farm.devices.base import FarmDevice
from farm.devices.connect import connect
from farm.devices.posix import PosixDevice
from farm.session.cancel import Cancel
from farm.session.events import DeviceDone, Event, JobDone, Status
from farm.session.session import SessionEnv, run_session
from farm.session.spec import BundleRef, FileRef, JobKey, JobSpec, SessionSpec
from farm.sim.fleet import Fleet
from tests.conftest import alive, wait_for, write

MAX_CHANNELS = 2
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


def _spec(tmp_path: Path, device: Device, jobs: int, decode_s: str) -> tuple[SessionSpec, dict[str, Path]]:
    suite = load_suite(write(tmp_path / "suite.yaml", SUITE))
    decoder = write(tmp_path / "decoder.sh", DECODER)
    decoder.chmod(0o755)
    bs = write(tmp_path / "bs.bin", "bits")
    dsha, bsha = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (decoder, bs))
    argv = ("{bundle}/decoder.sh", "{input}", "{output}", decode_s)
    bundle = BundleRef("b" * 64, "codec 1", (FileRef(dsha, "decoder.sh", decoder.stat().st_size),), argv)
    ref = FileRef(bsha, f"{bsha}.bin", 4)
    specs = tuple(
        JobSpec(i, JobKey("test", "clip", 100.0, i), bundle.digest, ref, "s" * 64, 30.0, 1000) for i in range(jobs)
    )
    return SessionSpec("rt-1", device, suite, (bundle,), specs), {dsha: decoder, bsha: bs}


class _Counted:
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


def _session(tmp_path: Path, device: Device, jobs: int, decode_s: str, cancel: Cancel) -> _Counted:
    spec, files = _spec(tmp_path, device, jobs, decode_s)
    counted = _Counted()
    env = SessionEnv(tmp_path / "state", files.__getitem__, DecodedCache(tmp_path / "decoded"), cancel,
                     counted.emit, connect=counted.connect)  # fmt: skip
    run_session(spec, env)
    return counted


def _device(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Device:
    if kind == "local":
        entry = f"{{id: here, platform: linux, transport: {{kind: local}}, target: auto, workdir: {tmp_path}/w}}"
        text = f"devices:\n  - {entry}\n"
        return load_inventory(write(tmp_path / "devices.yaml", text)).devices[0]
    fleet: Fleet = request.getfixturevalue("ssh_fleet" if kind == "ssh" else "phone_fleet")
    return load_inventory(fleet.inventory_path).devices[0]


def _value(job: JobDone, name: str) -> float | None:
    return next(m.value for m in job.measurements if m.name == name)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["local", "ssh", "adb"])
def test_each_job_is_at_most_two_channels_and_still_measures_everything(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    counted = _session(tmp_path, _device(kind, tmp_path, request), 4, "0.3", Cancel())
    jobs = counted.per_job()
    assert [j.status for j, _ in jobs] == ["ok"] * 4, [j.error for j, _ in jobs]
    channels = [n for _, n in jobs]
    assert max(channels) <= MAX_CHANNELS, channels
    assert channels[1:] == [1, 1, 1], channels  # the same output again: no pull, so the decode's reply is all
    assert channels[0] == 2, channels  # decode + the one pull of a new output
    for job, _ in jobs:
        assert job.frames == 1 and _value(job, "wall_s") is not None
        if kind != "local":  # the virtual devices have a (simulated) meter and thermal zone; this machine may not
            assert _value(job, "energy_j") is not None and _value(job, "power_w") is not None
            assert _value(job, "temp_max_c") is not None and _value(job, "temp_start_c") is not None
        if kind == "adb":  # a phone's battery is read before and after, in the same reply
            assert _value(job, "battery_level") is not None and _value(job, "charging") is not None
    done = counted.events[-1][0]
    assert isinstance(done, DeviceDone) and done.status == "ok"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["local", "ssh"])  # the phone's stop: tests/test_tether.py
def test_a_stop_mid_decode_leaves_no_process_and_no_file(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    device = _device(kind, tmp_path, request)
    cancel = Cancel()
    marker = "29.4871"  # the decoder's sleep: its command line names it
    lifetime = "181.37"  # the samplers' bounded life (timeout_s + spare): their command line names it
    box: list[_Counted] = []
    session = threading.Thread(target=lambda: box.append(_session(tmp_path, device, 2, marker, cancel)))
    session.start()
    try:
        sampled = kind != "local"  # the board has a meter and a zone: samplers run beside the decoder
        started = lambda: bool(alive(marker)) and (not sampled or bool(alive(f"timeout {lifetime}")))  # noqa: E731
        assert wait_for(started, 20), alive(marker)
    finally:
        cancel.set()
        session.join(30)
    assert not session.is_alive()
    assert wait_for(lambda: not alive(marker) and not alive(f"timeout {lifetime}"), 5), alive(marker)
    run_dir = Path(device.workdir or "", "jobs", "rt-1")
    assert wait_for(lambda: not run_dir.exists(), 5), sorted(run_dir.rglob("*"))
    done = box[0].events[-1][0]
    assert isinstance(done, DeviceDone) and done.status == "interrupted"
