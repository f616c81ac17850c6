"""One round trip per job on shell devices (issue 17): a session's jobs counted in channels the transport opened.

Real peers only: the local device, a real sshd board and the farm's ADB emulator, each through ``run_session``
with its real connect. The count comes from the transport itself (``Transport.opened``: an SSH channel, an ADB
stream, a local process), between the session's "job" status and that job's ``JobDone``, so nothing the
session does for a job escapes it. Power, thermal and battery must still be measured from that one reply.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from farm.config.inventory import Device, load_inventory
from farm.devices.posix_decode import outcome_of, parse_power, split_reply
from farm.power.meters import Meter
from farm.session.cancel import Cancel
from farm.session.events import DeviceDone, JobDone
from farm.sim.fleet import Fleet
from tests.conftest import alive, wait_for, write
from tests.support.job_session import Counted, counted_session

MAX_CHANNELS = 2


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
    counted = counted_session(tmp_path, _device(kind, tmp_path, request), 4, "0.3", Cancel())
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
    box: list[Counted] = []
    session = threading.Thread(target=lambda: box.append(counted_session(tmp_path, device, 2, marker, cancel)))
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
    left = lambda: sorted(Path(device.workdir or "", "jobs").glob("rt-1*"))  # noqa: E731 (the session's folder)
    assert wait_for(lambda: not left(), 5), left()
    done = box[0].events[-1][0]
    assert isinstance(done, DeviceDone) and done.status == "interrupted"


def test_a_sample_line_cut_by_the_kill_is_dropped_not_misread() -> None:
    meter = Meter(kind="hwmon", nodes=("/p",), scale=(1e-6,))
    text = "\n".join([
        "@@m timing 1000000000 3000000000 0", "@@m sha " + "a" * 64 + " - 12", "@@m power", "900000000 2000000",
        "1500000000 3000000", "2500000000 40@@m power_end", "3100000000 5000000", "@@m thermal", "@@m stats",
        '{"frame": 0, "decode_ns": 5}@@m stderr', "oops",
    ])  # fmt: skip
    reply = split_reply(text, "m")
    assert [s.t_s for s in parse_power(reply, meter)] == [0.9, 1.5, 3.1]  # not 2.5 s at 40 uW
    outcome = outcome_of(reply, 0, 10.0)
    assert outcome.output_sha == "a" * 64 and outcome.output_bytes == 12 and outcome.frame_times_ns == (5,)
    assert outcome.stderr_tail == "oops" and (outcome.start_ns, outcome.end_ns) == (10**9, 3 * 10**9)
