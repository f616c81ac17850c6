"""The live view while a run is going: one line per device with its current job, progress and last fps.

It subscribes to the session events the recorder stores. On a terminal it is a rich live display; in CI (no
TTY) it degrades to one plain line per phase change and finished job, so logs stay readable and nothing depends
on cursor tricks.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from farm.session.events import DeviceDone, Event, JobDone, Status

QUIET_PHASES = frozenset({"job", "cleanup"})  # shown live, but not worth a log line each


class LiveView:
    def __init__(self, console: Console, device_ids: list[str]) -> None:
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.fields[device]:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]:>16}"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            disable=not self.live,
        )
        self.tasks: dict[str, TaskID] = {
            d: self.progress.add_task("waiting", device=d, fps="", total=None) for d in device_ids
        }

    def __enter__(self) -> LiveView:
        self.progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def log(self, text: str) -> None:
        if self.live:
            self.console.log(text, highlight=False)
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
            fps = f"{event.fps:.0f} fps (mean)" if event.fps is not None else ""
            self.progress.update(task, completed=event.done, total=event.total, fps=fps)
            line = f"{event.device_id} [{event.done}/{event.total}] {event.job.key.label()}: {event.status}"
            self.plain(line + (f" ({event.error})" if event.error else "") + (f" {fps}" if fps else ""))
        elif isinstance(event, DeviceDone) and event.error:
            self.log(f"{event.device_id}: {event.status}: {event.error}")
