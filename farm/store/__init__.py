"""Results: runs, jobs, measurements, gate evaluations and releases, behind one ``Store`` interface.

``Store`` is the embedded SQLite backend (sqlite.py), ``PostgresStore`` a lab's shared one (postgres.py), and
``open_store`` picks between them from the URL or path; the schema and its migrations (schema.py), the typed
records (records.py), the controller identity used to reap dead runs (controller.py) and the errors
(errors.py) do not depend on SQLite, so another backend (PostgreSQL for a lab) can sit beside it.
"""

from __future__ import annotations

from pathlib import Path

from farm.project import store_path
from farm.store.errors import NewerStoreError, RunStateError, StoreError
from farm.store.records import (
    FRAME_QUALITY_FIELDS,
    RESUMABLE_STATUSES,
    RUN_STATUSES,
    FrameQuality,
    JobKey,
    Measurement,
    RunAttempt,
)
from farm.store.schema import SCHEMA_VERSION
from farm.store.sqlite import Store


def open_store(target: str | Path, *, readonly: bool = False, migrate: bool = False) -> Store:
    """``postgresql://...`` opens a lab's PostgreSQL store, anything else a SQLite file.

    psycopg is imported only here, so commands on a SQLite store never load it. ``migrate`` upgrades an older
    PostgreSQL store (`farm store migrate`); a SQLite file is upgraded by every writable open, as before.
    """
    if str(target).startswith(("postgresql://", "postgres://")):
        from farm.store.postgres import PostgresStore

        return PostgresStore(str(target), readonly=readonly, migrate=migrate)
    return Store(Path(target), readonly=readonly)


def default_store_path() -> Path:
    """``FARM_STORE``, else .farm/results.db in the project root (farm/project.py)."""
    return store_path()


__all__ = [
    "FRAME_QUALITY_FIELDS",
    "RESUMABLE_STATUSES",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "FrameQuality",
    "JobKey",
    "Measurement",
    "NewerStoreError",
    "RunAttempt",
    "RunStateError",
    "Store",
    "StoreError",
    "default_store_path",
    "open_store",
]
