"""The device session against a fake device: events, retries, stop and clean-up, without any real device.

Real devices run the same code in test_run_e2e, test_ssh_run, test_android_run and test_interrupt.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from farm.artifacts import DecodedCache
from farm.config.inventory import load_inventory
from farm.config.suite import load_suite
from farm.errors import CommandFailed
from farm.session.cancel import Cancel
from farm.session.events import DeviceDone, Event, JobDone, Status
from farm.session.session import SessionEnv, run_session
from farm.session.spec import BundleRef, FileRef, JobKey, JobSpec, SessionSpec
from farm.transports.base import TransportError, Unreachable
from tests.conftest import write
from tests.support.fake_device import FakeDevice, write_y4m

SUITE = """
name: unit
sequences:
  - id: clip
    generate: {source: testsrc2, width: 16, height: 8, fps: 30, frames: 3}
rates_kbps: [100, 200, 300]
timeout_s: 10
power: {baseline_s: 0, sample_hz: 10}
gates:
  - {metric: failures, op: "==", value: 0}
"""
INVENTORY = """
devices:
  - id: fake
    platform: linux
    transport: {kind: local}
    target: linux-x86_64
    power: {meter: none}
"""


def session_calls(dev: FakeDevice) -> list[str]:
    """The device's calls with the session's part of the folder name taken out, after checking it is there: one
    session's folder is ``jobs/<run>.<session>`` (farm.session.layout), so a later session never shares it."""
    sessions = set(re.findall(r"/fake/jobs/run-1\.([0-9a-f]{8})\b", " ".join(dev.calls)))
    assert len(sessions) == 1, dev.calls
    bare = [c for c in dev.calls if re.search(r"/fake/jobs/run-1(/|$)", c)]
    assert not bare, bare
    return [re.sub(r"(/fake/jobs/run-1)\.[0-9a-f]{8}\b", r"\1", c) for c in dev.calls]


def _spec(tmp_path: Path, jobs: int = 3) -> tuple[SessionSpec, dict[str, Path]]:
    suite = load_suite(write(tmp_path / "suite.yaml", SUITE))
    device = load_inventory(write(tmp_path / "devices.yaml", INVENTORY)).devices[0]
    decoder = write(tmp_path / "decoder.sh", "#!/bin/sh\n")
    bs = write(tmp_path / "bs.bin", "bits")
    import hashlib

    dsha, bsha = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (decoder, bs))
    bundle = BundleRef("b" * 64, "codec 1", (FileRef(dsha, "decoder.sh", 10),), ("{bundle}/decoder.sh", "{input}"))
    ref = FileRef(bsha, f"{bsha}.bin", 4)
    specs = tuple(
        JobSpec(i, JobKey("test", "clip", 100.0 * (i + 1), 0), bundle.digest, ref, "s" * 64, 30.0, 1000)
        for i in range(jobs)
    )
    return SessionSpec("run-1", device, suite, (bundle,), specs), {dsha: decoder, bsha: bs}


def _run(tmp_path: Path, dev: FakeDevice, cancel: Cancel | None = None, jobs: int = 3) -> list[Event]:
    spec, files = _spec(tmp_path, jobs)
    events: list[Event] = []
    env = SessionEnv(tmp_path / "state", files.__getitem__, DecodedCache(tmp_path / "decoded"),
                     cancel or Cancel(), events.append, connect=lambda _d, _s: dev)  # fmt: skip
    run_session(spec, env)
    return events


def _jobs(events: list[Event]) -> list[JobDone]:
    return [e for e in events if isinstance(e, JobDone)]


def test_a_session_reports_each_job_pulls_each_output_once_and_leaves_nothing_on_the_device(tmp_path: Path) -> None:
    dev = FakeDevice(write_y4m(tmp_path / "out.y4m"))
    events = _run(tmp_path, dev)
    jobs = _jobs(events)
    assert [j.status for j in jobs] == ["ok"] * 3 and [j.done for j in jobs] == [1, 2, 3]
    assert all(j.frames == 3 and j.output_sha == dev.digest for j in jobs)
    assert {m.name for m in jobs[0].measurements} >= {"fps", "fps.p50", "power_w", "temp_max_c"}
    power = next(m for m in jobs[0].measurements if m.name == "power_w")
    assert power.value is None and power.missing_reason and "no meter" in power.missing_reason
    assert sum(c.startswith("pull") for c in dev.calls) == 1  # identical outputs: one pull
    calls = session_calls(dev)
    removed = [c for c in calls if c.startswith("remove")]
    # each job's folder goes before the next decode (one output on the device at a time), the last with the run's
    assert removed == ["remove /fake/jobs/run-1/0", "remove /fake/jobs/run-1/1", "remove /fake/jobs/run-1"]
    assert calls.index("remove /fake/jobs/run-1/0") < calls.index("decode /fake/jobs/run-1/1")
    assert dev.tethers and all(t.closed for t in dev.tethers) and dev.calls[-1] == "close"
    done = events[-1]
    assert isinstance(done, DeviceDone) and done.status == "ok" and done.reached
    assert [e.phase for e in events if isinstance(e, Status)][:2] == ["connecting", "staging"]
    staging = next(e.text for e in events if isinstance(e, Status) and e.phase == "staging")
    assert re.fullmatch(r"staging \d+ files / \d+ bytes .*", staging)  # a CI log says what staging moves


def test_a_dropped_link_is_retried_once_but_a_failed_command_is_not(tmp_path: Path) -> None:
    dev = FakeDevice(write_y4m(tmp_path / "out.y4m"))
    dev.failures = {1: TransportError("link dropped"), 3: CommandFailed("fake", "mkdir", 1, "permission denied")}
    jobs = _jobs(_run(tmp_path, dev))
    assert [j.status for j in jobs] == ["ok", "failed", "ok"]
    calls = session_calls(dev)
    first = calls.index("decode /fake/jobs/run-1/0")
    retry = calls.index("decode /fake/jobs/run-1/0.1")  # in a folder of its own
    assert calls[first + 1 : retry] == ["untether", "tether"]  # the old watchdog cleaned, then a new tether
    assert (
        jobs[1].error == "fake: mkdir failed on the device (exit 1): permission denied" and dev.decodes == 4
    )  # the failed command ran once


def test_an_unreachable_device_fails_every_remaining_job_with_the_reason(tmp_path: Path) -> None:
    dev = FakeDevice(write_y4m(tmp_path / "out.y4m"))
    dev.failures = {2: Unreachable("fake: did not answer for 10 s")}
    events = _run(tmp_path, dev)
    assert [(j.status, j.error) for j in _jobs(events)] == [
        ("ok", None),
        ("failed", "fake: did not answer for 10 s"),
        ("failed", "fake: did not answer for 10 s"),
    ]
    assert isinstance(events[-1], DeviceDone) and events[-1].status == "failed"


def test_a_device_without_room_for_one_output_fails_up_front_saying_so(tmp_path: Path) -> None:
    dev = FakeDevice(write_y4m(tmp_path / "out.y4m"), free=500)
    events = _run(tmp_path, dev)
    done = events[-1]
    assert isinstance(done, DeviceDone) and done.status == "failed" and done.error is not None
    assert "not enough space on the device before staging" in done.error and "0.0 MB free in /fake" in done.error
    assert dev.decodes == 0 and all(j.status == "failed" for j in _jobs(events))


def test_a_stop_kills_the_running_decode_cleans_the_device_and_fails_nothing(tmp_path: Path) -> None:
    cancel = Cancel()
    dev = FakeDevice(write_y4m(tmp_path / "out.y4m"))

    def second_decode_hangs_until_stopped(n: int) -> None:
        if n == 2:
            dev.decode_s = 30.0  # only the tether's close (the device watchdog) can end it
            threading.Timer(0.2, cancel.set).start()

    dev.on_decode = second_decode_hangs_until_stopped
    events = _run(tmp_path, dev, cancel)
    assert [j.status for j in _jobs(events)] == ["ok"]  # the killed job is not a failure: a resume runs it
    done = events[-1]
    assert isinstance(done, DeviceDone) and done.status == "interrupted" and done.error is None
    assert "remove /fake/jobs/run-1" in session_calls(dev) and dev.calls[-1] == "close"
    assert dev.decodes == 2 and all(t.closed for t in dev.tethers)


def test_a_session_never_imports_the_store_or_the_ui() -> None:
    import ast

    root = Path(__file__).resolve().parent.parent / "farm" / "session"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("farm.store", "farm.progress", "farm.cli", "farm.report", "rich")), (
                    f"{path.name} imports {name}"
                )


@pytest.mark.parametrize("jobs", [1])
def test_specs_and_events_pickle(tmp_path: Path, jobs: int) -> None:
    import pickle

    spec, _ = _spec(tmp_path, jobs)
    assert pickle.loads(pickle.dumps(spec)) == spec
    dev = FakeDevice(write_y4m(tmp_path / "out.y4m"))
    for event in _run(tmp_path, dev, jobs=jobs):
        assert pickle.loads(pickle.dumps(event)) == event
