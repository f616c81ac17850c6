"""A lane's busy time is the union of its tasks' spans; the device lane is its busiest device less its waits.

A fake clock stands in for ``time.monotonic``: what is asserted is the arithmetic of overlapping spans, not how
long anything took on this machine.
"""

from __future__ import annotations

import pytest

from farm.lanes import clock, devices
from farm.lanes.clock import Lane, LaneState
from farm.lanes.devices import DeviceLane
from farm.session.events import DeviceDone, JobDone
from farm.session.spec import FileRef, JobKey, JobSpec


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    t = FakeClock()
    for module in (clock, devices):
        monkeypatch.setattr(f"{module.__name__}.time.monotonic", t)
    return t


def test_two_encodes_at_once_count_once_and_idle_time_not_at_all(fake: FakeClock) -> None:
    seen: list[LaneState] = []
    lane = Lane("encode", 3, seen.append)
    with lane.busy():  # 100-110, with a second task 105-115: busy 100-115
        fake.now = 105.0
        with lane.busy():
            fake.now = 110.0
        fake.now = 110.0
    fake.now = 115.0
    lane.add(done=2)
    fake.now = 130.0  # idle 115-130
    with lane.busy():
        fake.now = 134.0
    lane.add(done=1)
    assert lane.state() == LaneState("encode", 3, 3, 14.0)
    assert seen[-1].describe() == "encode 3/3, busy 14.0 s"


def test_a_running_task_counts_up_to_now(fake: FakeClock) -> None:
    lane = Lane("scoring", 0, lambda _: None)
    lane.add(total=1)
    with lane.busy():
        fake.now = 103.5
        assert lane.state().busy_s == pytest.approx(3.5)


def _job(i: int) -> JobSpec:
    return JobSpec(i, JobKey("test", "s", 100.0, 0), "b", FileRef("d", "d.ivf", 1), "src", 30.0, 1)


def _done(device: str, i: int) -> JobDone:
    return JobDone(device, _job(i), "ok", None, "o", 1, (), None, 0.0, 0.0, (), i + 1, 2)


def test_the_device_lane_is_the_busiest_device_less_its_waits_for_encodes(fake: FakeClock) -> None:
    lane = DeviceLane(["a", "b"], 4, lambda _: None)
    lane.start()  # 100
    lane.waited("a", 30.0)  # a waited 30 s for bitstreams
    fake.now = 150.0
    lane(_done("a", 0))
    lane(_done("b", 0))
    lane(DeviceDone("b", "ok", None, True))  # b: 50 s, no wait
    fake.now = 170.0
    lane(_done("a", 1))
    lane(DeviceDone("a", "ok", None, True))  # a: 70 s less 30 s waiting
    fake.now = 500.0  # later reads do not grow a finished lane
    assert lane.state() == LaneState("devices", 3, 4, 50.0)
