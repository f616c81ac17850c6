"""What the controller asks of an executor: run these sessions, hand me their events, stop when told.

Events are delivered on the caller's thread, in the order each session sent them, so the recorder (the store's
only writer) and the live view never need locks of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from farm.session.cancel import Cancel
from farm.session.events import DeviceDone, Event
from farm.session.spec import SessionSpec


class Executor(Protocol):
    def run(self, specs: Sequence[SessionSpec], on_event: Callable[[Event], None], cancel: Cancel) -> list[DeviceDone]:
        """Run every session to its end (or to a stop); one ``DeviceDone`` per spec, in the specs' order."""
        ...
