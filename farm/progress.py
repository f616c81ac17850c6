"""The live view while a run is going: one line per device with its current job, progress and last fps.

On a terminal this is a rich live display; in CI (no TTY) it degrades to one plain log line per finished
job, so logs stay readable and nothing depends on cursor tricks.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class LiveView:
    def __init__(self, console: Console, device_ids: list[str]) -> None:
        self.console = console
        self.live = console.is_terminal
        self._lock = threading.Lock()
        self.progress = Progress(
            TextColumn("[bold]{task.fields[device]:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]:>10}"),
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
        self.console.log(text, highlight=False) if self.live else self.console.print(
            text, highlight=False, markup=False
        )

    def event(self, device_id: str, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            task = self.tasks[device_id]
            if kind == "status":
                self.progress.update(task, description=data["text"])
                if data["text"].startswith("warning"):
                    self.log(f"{device_id}: {data['text']}")  # a warning must outlive the live display
                elif not self.live and (
                    data["text"] in {"done", "failed"} or data["text"].startswith(("cooling", "link"))
                ):
                    self.console.print(f"{device_id}: {data['text']}", highlight=False, markup=False)
            elif kind == "job":
                record = data["record"]
                fps = self._last_fps(record)
                self.progress.update(task, completed=data["done"], total=data["total"], fps=fps)
                if not self.live:
                    spec = record.spec
                    line = (f"{device_id} [{data['done']}/{data['total']}] {spec.role} {spec.source.sequence_id} "
                            f"@{spec.bitstream.rate_kbps:g}k r{spec.repeat}: {record.status}")  # fmt: skip
                    if record.error:
                        line += f" ({record.error})"
                    self.console.print(line + (f" {fps}" if fps else ""), highlight=False, markup=False)

    @staticmethod
    def _last_fps(record: Any) -> str:
        fps = getattr(record, "fps", None)
        return f"{fps:.0f} fps" if isinstance(fps, float) else ""
