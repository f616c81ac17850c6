"""The live view while a run is going: one line per device with its current job, progress and last fps, and an
overall line with the time remaining.

It subscribes to the session events the recorder stores. On a terminal it is a rich live display; in CI (no
TTY) it degrades to one plain line per phase change and finished job, so logs stay readable and nothing depends
on cursor tricks. "Terminal" means the real ``isatty()`` of the console's file: under FORCE_COLOR rich treats a
CI log as a terminal, and the live display would swallow the per-job lines the log needs.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from farm.errors import unnamed
from farm.lanes.clock import LaneState
from farm.session.events import DeviceDone, Event, JobDone, Status

QUIET_PHASES = frozenset({"job", "cleanup"})  # shown live, but not worth a log line each
OVERALL = "all devices"
FPS_LABEL = "fps p50"
"""The one fps on screen: 1 / median steady-state frame time, as the results table's ``fps p50`` column."""


def interactive(console: Console) -> bool:
    """True only for a real terminal that is not silenced: the live display needs one to redraw in place."""
    isatty = getattr(console.file, "isatty", None)
    return bool(console.is_terminal and isatty is not None and isatty() and not console.quiet)


class LiveView:
    def __init__(self, console: Console, device_ids: list[str], total_jobs: int | None = None) -> None:
        self.console = console
        self.live = interactive(console)
        self.progress = Progress(
            TextColumn("[bold]{task.fields[device]:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]:>14}"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not self.live,
        )
        self.overall = self.progress.add_task("", device=OVERALL, fps="", total=total_jobs)
        self.tasks: dict[str, TaskID] = {
            d: self.progress.add_task("waiting", device=d, fps="", total=None) for d in device_ids
        }
        self.done: dict[str, tuple[int, int]] = {}  # device -> (done, total) as its last JobDone said
        self.lanes: dict[str, TaskID] = {}  # encode | devices | scoring -> its line, once it has work

    def __enter__(self) -> LiveView:
        self.progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def log(self, text: str) -> None:
        if self.live:
            self.console.log(escape(text), highlight=False)
        else:
            self.console.print(text, highlight=False, markup=False)

    def plain(self, text: str) -> None:
        if not self.live:
            self.console.print(text, highlight=False, markup=False)

    def __call__(self, event: Event) -> None:
        task = self.tasks[event.device_id]
        if isinstance(event, Status):
            self.progress.update(task, description=event.text)
            if event.warning:
                self.log(f"{event.device_id}: {event.text}")  # a warning must outlive the live display
            elif event.phase not in QUIET_PHASES:
                self.plain(f"{event.device_id}: {event.text}")
        elif isinstance(event, JobDone):
            self._job_done(task, event)
        elif isinstance(event, DeviceDone) and event.error:
            self.progress.update(task, description=f"{event.status}: {unnamed(event.device_id, event.error)}")
            self.log(f"{event.device_id}: {event.status}: {unnamed(event.device_id, event.error)}")

    def lane(self, state: LaneState) -> None:
        """A lane moved (from any thread: rich's progress locks): its line shows done/total and busy time."""
        if not self.live or state.total == 0:
            return
        task = self.lanes.get(state.name)
        if task is None:
            task = self.progress.add_task("", device=f"lane {state.name}", fps="", total=state.total)
            self.lanes[state.name] = task
        self.progress.update(task, completed=state.done, total=state.total, description=f"busy {state.busy_s:.1f} s")

    def _job_done(self, task: TaskID, event: JobDone) -> None:
        p50 = next((m.value for m in event.measurements if m.name == "fps.p50"), None)
        fps = f"{p50:.0f} {FPS_LABEL}" if p50 is not None else ""
        self.progress.update(task, completed=event.done, total=event.total, fps=fps)
        self.done[event.device_id] = (event.done, event.total)
        overall = self._overall()
        line = f"{event.device_id} [{event.done}/{event.total}] {event.job.key.label()}: {event.status}"
        why = f" ({unnamed(event.device_id, event.error)})" if event.error else ""
        if event.status != "ok" and self.live:
            self.log(line + why)  # the reason now, not only in the summary at the end
        self.plain(line + why + (f" {fps}" if fps else "") + f" · {overall}")

    def _overall(self) -> str:
        """Jobs done over every device and the time remaining, from the overall task's measured speed.

        A device learns its job count with its first finished job; until then it is assumed to have as many as
        the devices that reported, so the ETA does not jump when a slow device starts.
        """
        done = sum(d for d, _ in self.done.values())
        known = [t for _, t in self.done.values()]
        guess = sum(known) + (len(self.tasks) - len(known)) * (sum(known) // max(len(known), 1))
        total = max(int(self.progress.tasks[self.overall].total or 0), guess)
        self.progress.update(self.overall, completed=done, total=total)
        remaining = self.progress.tasks[self.overall].time_remaining
        eta = f", about {remaining:.0f} s left" if remaining is not None and done < total else ""
        return f"all devices {done}/{total}{eta}"
