"""The live view without a TTY (CI, also under FORCE_COLOR): phase lines, per-job lines with the one labelled
fps and the overall progress, and a failure's reason as it happens, naming the device once."""

from __future__ import annotations

import io

from rich.console import Console

from farm.lanes.clock import LaneState
from farm.measures import measurement
from farm.progress import LiveView, interactive
from farm.session.events import DeviceDone, JobDone, Status
from farm.session.spec import FileRef, JobKey, JobSpec


def job_done(device: str, done: int, *, error: str | None = None) -> JobDone:
    spec = JobSpec(done - 1, JobKey("test", "bars", 120.0, done - 1), "b", FileRef("d", "x.ivf", 1), "s", 30.0, 1)
    fps = () if error else (measurement("fps", 250.0, "mean"), measurement("fps.p50", 240.0, "median frame"))
    return JobDone(device, spec, "failed" if error else "ok", error, None, 12, (), None, 0.0, 1.0, fps, done, 2)


def ci_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=200), buf  # FORCE_COLOR in a CI log: no real TTY


def test_force_color_without_a_tty_still_prints_every_line() -> None:
    console, buf = ci_console()
    assert console.is_terminal and not interactive(console)
    view = LiveView(console, ["board-1", "board-2"])
    with view:
        for phase, text in (("connecting", "connecting"), ("staging", "staging"), ("baseline", "idle baseline 2s")):
            view(Status("board-1", phase, text))
        view(job_done("board-1", 1))
        view(job_done("board-2", 1))
    text = buf.getvalue()
    for line in ("board-1: connecting", "board-1: staging", "board-1: idle baseline 2s"):
        assert line in text
    assert "board-1 [1/2] " in text and "240 fps p50" in text and "(mean)" not in text
    assert "all devices 1/4" in text and "all devices 2/4" in text


def test_a_failure_reason_shows_when_it_happens_with_the_device_named_once() -> None:
    console, buf = ci_console()
    view = LiveView(console, ["board-2"])
    with view:
        view(job_done("board-2", 1, error="board-2: ssh b@h:22: link dropped"))
        view(DeviceDone("board-2", "failed", "board-2: ssh b@h:22: cannot connect", reached=False))
    text = buf.getvalue()
    assert "(ssh b@h:22: link dropped)" in text and "board-2: failed: ssh b@h:22: cannot connect" in text
    assert "board-2: board-2" not in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_live_view_shows_each_lane_with_done_total_and_busy_time() -> None:
    console = Console(file=_Terminal(), force_terminal=True, width=200)
    view = LiveView(console, ["local"])
    assert view.live
    view.lane(LaneState("scoring", 0, 0, 0.0))  # no work known yet: no line
    view.lane(LaneState("encode", 3, 8, 12.5))
    view.lane(LaneState("encode", 4, 8, 14.0))
    lanes = [t for t in view.progress.tasks if t.fields["device"].startswith("lane ")]
    assert [(t.fields["device"], t.completed, t.total, t.description) for t in lanes] == [
        ("lane encode", 4, 8, "busy 14.0 s")
    ]


def test_without_a_terminal_lanes_stay_out_of_the_log() -> None:
    console, buf = ci_console()
    view = LiveView(console, ["local"])
    with view:
        view.lane(LaneState("encode", 3, 8, 12.5))
    assert "lane" not in buf.getvalue()
