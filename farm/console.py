"""The CLI's rich consoles, made on first use.

Importing rich's console and table modules costs about 35 ms, which ``farm --help`` and ``farm run`` before its
first device command never need; a module-level ``Console()`` would pay it on every start (docs/performance.md).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """Stands for a rich ``Console`` and builds it from ``factory`` the first time an attribute is used."""

    def __init__(self, factory: Callable[[], Console]) -> None:
        object.__setattr__(self, "_factory", factory)
        object.__setattr__(self, "_console", None)

    def get(self) -> Console:
        """The real console (built now if this is its first use)."""
        console: Console | None = object.__getattribute__(self, "_console")
        if console is None:
            console = object.__getattribute__(self, "_factory")()
            object.__setattr__(self, "_console", console)
        return console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self.get(), name, value)


def stdout_console() -> Console:
    """Without a terminal (CI logs) rich would wrap tables at 80 columns; logs have no width limit.

    Decided on the real isatty: under FORCE_COLOR rich calls a CI log a terminal, and the tables would be cut to
    80 columns.
    """
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def stderr_console() -> Console:
    """Messages to stderr wrap softly, so a long path in an error stays one line that can be copied."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def escape(text: str) -> str:
    """rich's markup escape, imported when a message is printed rather than when the CLI starts."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)
