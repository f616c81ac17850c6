"""Store failures as farm errors: each names the store's path and says what the user can do about it.

A store failure is infrastructure (exit 3) unless only the user can fix it by upgrading the farm (exit 2): CI
must tell "the disk is full" from "the gates failed", and a person must never be shown a sqlite3 traceback.
Backend-neutral on purpose: a PostgreSQL store raises the same classes with its own messages.
"""

from __future__ import annotations

from farm.errors import FarmError


class StoreError(FarmError):
    """The store could not be opened, read or written; nothing half-written was kept."""

    exit_code = 3

    def __init__(self, path: object, message: str) -> None:
        self.path = str(path)
        super().__init__(message)


class NewerStoreError(StoreError):
    """The store was written by a newer farm: reading it with this one could misread it, so upgrade the farm."""

    exit_code = 2

    def __init__(self, path: object, version: int, supported: int) -> None:
        self.version = version
        self.supported = supported
        super().__init__(
            path,
            f"{path} has store schema {version}, newer than this farm's ({supported}): it was written by a newer "
            "farm, and this one could misread it. Upgrade the farm (pip install -U codec-farm) on this machine, "
            "or point --store / FARM_STORE at another store.",
        )


class RunStateError(FarmError):
    """A run cannot do what was asked in its current state (e.g. resume a complete run): the user's request."""

    exit_code = 2
