"""Orchestration overhead and round trips per job on a virtual SSH board (real OpenSSH sshd), warm.

What a job costs beyond its decoder: the host's wall time for the job in the device session (from the job's start
to its result: decode, power and thermal samples, battery, hash, bookkeeping) minus the decoder's own wall time,
measured on the board around the decoder (``wall_s``, from the device's clock). The peer is therefore the
decoder itself, timed where it runs. Warm: the host already holds every decoded output (nothing to pull) and the
board every staged file (nothing to push), as in a re-run. The board has the farm's simulated hwmon meter and
thermal zone, so every job samples power and temperature as a real board would.

Beside it, the same decode measured through the device's separate verbs (spawn the sampler, wait for samples,
decode, kill, read back: what a job cost before issue 17, ``farm.devices.base.measure_around``), interleaved with
the one-round-trip path on the same connected board, so both see the same load.

A bare exec channel (``sh -c true``) on the same link is timed in each repeat too: on a loaded host it alone can
exceed the overhead target, and the difference is what the farm's script and bookkeeping add on top of it.

Targets (issue 17): at most 2 channels per job; overhead per job at most 30 ms beyond the decoder's wall
(median over all jobs of >= 5 repeats).

    python3 bench/bench_job_overhead.py [--repeats 5] [--jobs 5] [--decode-s 0.2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import machine, spread, timed, verdict  # noqa: E402

from farm.config.inventory import Device, load_inventory  # noqa: E402
from farm.devices.base import DecodeRequest, MeasuredDecode, PowerMeter, measure_around  # noqa: E402
from farm.devices.connect import connect  # noqa: E402
from farm.devices.posix import PosixDevice  # noqa: E402
from farm.power.instrument import Window  # noqa: E402
from farm.session.cancel import Cancel  # noqa: E402
from farm.sim.fleet import start_fleet  # noqa: E402
from tests.support.job_session import counted_session  # noqa: E402

TARGET_MS = 30.0
TARGET_CHANNELS = 2
FLOOR = "bare channel"
"""One exec channel running `true` on the same link: the least any job could cost over it, under today's load."""


def session_repeat(tmp: Path, device: Device, jobs: int, decode_s: str, n: int) -> tuple[list[float], list[int]]:
    """One warm session: per job, host wall minus decoder wall (ms), and channels opened."""
    counted = counted_session(
        tmp / f"run-{n}", device, jobs, decode_s, Cancel(), decoded=tmp / "decoded", run_id=f"bench-{n}"
    )
    over, channels = [], []
    for job, opened in counted.per_job():
        wall = next(m.value for m in job.measurements if m.name == "wall_s")
        if job.status != "ok" or wall is None:
            raise SystemExit(f"job {job.job.index} failed: {job.error}")
        over.append(((job.finished_at - job.started_at) - wall) * 1000)
        channels.append(opened)
    return over, channels


def verbs_repeat(dev: PosixDevice, meter: PowerMeter | None, zones: tuple[str, ...], run: str, decode_s: str,
                 n: int) -> dict[str, float]:  # fmt: skip
    """The same decode through one round trip and through separate verbs: host ms beyond the decoder's wall."""
    out: dict[str, float] = {}
    paths: dict[str, Callable[[DecodeRequest, PowerMeter | None, Window], MeasuredDecode]] = {
        "one round trip": dev.measured_decode,
        "separate verbs": lambda request, m, window: measure_around(dev, request, m, window),
    }
    for name, how in paths.items():
        job = f"{run}/{name.replace(' ', '-')}-{n}"
        request = DecodeRequest(("sh", "-c", f"sleep {decode_s}; : >out.y4m"), job, 60.0, zones)
        box: list[MeasuredDecode] = []
        took = timed(lambda: box.append(how(request, meter, Window(run, f"w{n}", 20.0, 200.0))))  # noqa: B023
        outcome = box[0].outcome
        if outcome.start_ns is None or outcome.end_ns is None:
            raise SystemExit(f"{name}: the decode reported no timing: {outcome}")
        out[name] = (took - (outcome.end_ns - outcome.start_ns) / 1e9) * 1000
    out[FLOOR] = timed(lambda: dev.sh("true")) * 1000
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (at least 5 to judge)")
    parser.add_argument("--jobs", type=int, default=5, help="jobs per session")
    parser.add_argument("--decode-s", default="0.2", help="how long the decoder runs (s)")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        fleet = start_fleet(1, tmp / "sim", exit_with_parent=True)
        try:
            device = load_inventory(fleet.inventory_path).devices[0]
            return measure(tmp, device, args.repeats, args.jobs, args.decode_s)
        finally:
            fleet.stop()


def measure(tmp: Path, device: Device, repeats: int, jobs: int, decode_s: str) -> int:
    print(f"board: {device.id} over real OpenSSH sshd on loopback (farm.sim), power and thermal SIMULATED")
    print(f"decoder: sleeps {decode_s} s and writes a 1-frame Y4M; {jobs} jobs per session; suite: sample_hz 20")
    session_repeat(tmp, device, 1, decode_s, 0)  # warm-up: stage the files, pull the one output
    dev = connect(device, tmp / "state-verbs")
    assert isinstance(dev, PosixDevice)
    meter = dev.probe_power(device.power, device.platform, False).meter
    zones = tuple(device.thermal.zones) if device.thermal.zones != "auto" else ()
    run = f"{dev.workdir}/jobs/bench-verbs"
    tether = dev.tether(run)
    over: list[float] = []
    channels: list[int] = []
    verbs: dict[str, list[float]] = {"one round trip": [], "separate verbs": [], FLOOR: []}
    try:
        for n in range(1, repeats + 1):  # interleaved: a warm session, then each device-level path once
            o, c = session_repeat(tmp, device, jobs, decode_s, n)
            over += o
            channels += c
            for name, ms in verbs_repeat(dev, meter, zones, run, decode_s, n).items():
                verbs[name].append(ms)
    finally:
        tether.close()
        dev.close()
    print(f"meter: {meter.description if meter else 'none'}; zones: {', '.join(zones) or 'none'}")
    print(f"session, per job ({len(over)} jobs in {repeats} warm sessions):")
    print(f"  host wall minus decoder wall (ms): {spread(over, '.1f')}")
    print(f"  channels opened: {spread([float(c) for c in channels], '.0f')}")
    print("device level, host wall minus decoder wall (ms), one decode each per repeat; bare channel: `sh -c true`:")
    for name, series in verbs.items():
        print(f"  {name:16s} {spread(series, '.1f')}")
    ratio = statistics.median(verbs["separate verbs"]) / statistics.median(verbs["one round trip"])
    print(f"ratio separate verbs / one round trip (overhead, median): {ratio:.1f}")
    floor = statistics.median(verbs[FLOOR])
    print(f"session overhead minus a bare channel (ms, medians): {statistics.median(over) - floor:.1f}")
    ok = verdict("channels per job (max)", float(max(channels)), "<=", TARGET_CHANNELS, repeats)
    ok &= verdict("overhead per job over SSH, ms (median)", statistics.median(over), "<=", TARGET_MS, repeats)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
