"""Exceptions that map onto the farm's exit codes.

The CLI turns these into exit codes (design: 0 pass, 1 gate failed/missing or refused, 2 bad input,
3 infrastructure), so every layer raises one of them instead of printing and exiting on its own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One located problem in an input file: ``file:line: field: message``."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class FarmError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 3


class InputError(FarmError):
    """Bad input (config, bundle, arguments). Carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(file="", line=None, field="", message=problems)]
        self.problems = problems
        super().__init__("\n".join(str(p) if p.file else p.message for p in problems))


class InfraError(FarmError):
    """A device or service could not be reached and the work could not complete."""

    exit_code = 3


class CommandFailed(FarmError):
    """A command ran on the device and failed (non-zero exit, or it ran out of time there): the link is fine.

    Kept apart from ``TransportError`` (a dropped link, worth one retry after reconnecting) because running the
    same command again fails the same way: a checksum mismatch, a permission error or a full disk needs a person,
    not a retry. Carries the data a report needs (like labgrid's ExecutionError and devlib's
    TargetCalledProcessError) so callers never parse the message.
    """

    exit_code = 3

    def __init__(
        self, device_id: str, command: str, exit_status: int | None, stderr_tail: str = "", *, timed_out: bool = False
    ) -> None:
        self.device_id = device_id
        self.command = command
        self.exit_status = exit_status  # None: killed at its deadline, or refused with no status (an ADB sync FAIL)
        self.stderr_tail = stderr_tail
        self.timed_out = timed_out
        why = "timed out" if timed_out else ("refused" if exit_status is None else f"exit {exit_status}")
        detail = f": {stderr_tail}" if stderr_tail else ""
        super().__init__(f"{device_id}: {command} failed on the device ({why}){detail}")


class Stopped(FarmError):
    """The user stopped the farm (Ctrl-C, SIGTERM) before a run had anything to keep: exit 130 like any stop."""

    exit_code = 130


class Refused(FarmError):
    """The farm's answer is no: a gate did not pass, a bundle or a stored result does not match (exit 1).

    Not an error of the input or of the farm: CI reads exit 1 as "this must not ship", with every reason listed.
    """

    exit_code = 1

    def __init__(self, headline: str, reasons: list[str]) -> None:
        self.headline = headline
        self.reasons = reasons
        super().__init__("\n".join([headline, *(f"  {r}" for r in reasons)]))


def unnamed(device_id: str, text: str) -> str:
    """``text`` without a leading ``device_id:``: transport and device errors start with their device, so a
    message that names the device itself must not say it twice ("board-2: board-2: ...")."""
    prefix = f"{device_id}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def named(device_id: str, text: str) -> str:
    """``device_id: text``, with the device named once whether or not ``text`` already started with it."""
    return f"{device_id}: {unnamed(device_id, text)}"
