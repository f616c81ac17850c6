"""SQLite result store: the embedded default, the single source of truth for gates, reports, exporter and releases.

WAL mode and one short transaction per result mean a crash loses nothing already measured and readers
(``farm serve``, ``farm report``) never block a running farm. Rows are only ever inserted: re-evaluating a
run's gates appends a new evaluation, so what a release was tagged on can always be reproduced. The only
updates are a run's status, finish time, summary and controller (when it ends, is reaped or is resumed), and
its heartbeat while it runs.
A measurement that could not be taken is stored as NULL with its reason, never as 0.

Every sqlite3 error leaves this module as a StoreError that names the file and what to do (see errors.py);
a failed write rolls its whole transaction back, so a job is stored with all its measurements or not at all.
Opening read-only (``farm runs``, ``farm report``) never migrates nor writes: see ``_connect_readonly``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from farm.store.controller import STALE_AFTER_S, Controller
from farm.store.errors import NewerStoreError, RunStateError, StoreError
from farm.store.records import FRAME_QUALITY_FIELDS, RESUMABLE_STATUSES, FrameQuality, JobKey, Measurement, RunAttempt
from farm.store.schema import BASE_VERSION, MIGRATIONS, SCHEMA, SCHEMA_VERSION, statements
from farm.traces import Trace

# an older store opened read-only is upgraded in a copy in memory; past this size, refuse instead of using
# that much memory
_MAX_SNAPSHOT_BYTES = 512 * 1024 * 1024


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path if path.is_dir() else path.parent)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _read_only_medium(path: Path) -> bool:
    folder = path if path.is_dir() else path.parent
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _store_error(path: Path, exc: sqlite3.Error, doing: str) -> StoreError:
    """Turn a sqlite3 error into one paragraph a lab engineer can act on (the sqlite text kept at the end)."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    raw = f"(SQLite: {exc})"
    if name.startswith("SQLITE_FULL") or (name.startswith("SQLITE_IOERR") and _free_bytes(path) == 0):
        return StoreError(
            path,
            f"the disk holding the store {path} is full while {doing}: nothing of this write was kept, and what "
            f"was stored before is intact. Free space on that disk (df {path.parent}) or point --store / "
            f"FARM_STORE at a store on another disk, then run again (an interrupted run can be resumed). {raw}",
        )
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) and (
        _read_only_medium(path) or not os.access(path.parent, os.W_OK) or name.startswith("SQLITE_READONLY")
    ):
        return StoreError(
            path,
            f"the store {path} cannot be written while {doing}: it or its folder is read-only (a read-only mount "
            "or missing write permission; SQLite also needs to create PATH-wal and PATH-shm beside it). Make it "
            "writable, or point --store / FARM_STORE at a writable store; `farm runs` and `farm report` can "
            f"still read it. {raw}",
        )
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return StoreError(
            path,
            f"the store {path} is corrupted or is not a farm store (found while {doing}). Move it aside and keep "
            f"it (`sqlite3 {path} .recover > recovered.sql` often saves most rows), then restore it from a backup "
            f"or start a new store there or with --store / FARM_STORE. {raw}",
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreError(
            path,
            f"the store {path} stayed locked by another process for 30 s while {doing}: wait for the other farm "
            f"command to finish (or find it with `fuser {path}`), then run again. {raw}",
        )
    if name.startswith("SQLITE_CANTOPEN"):
        return StoreError(
            path, f"the store {path} cannot be opened while {doing}: check that the path is a file you can "
            f"read and that its folder exists. {raw}",
        )  # fmt: skip
    return StoreError(path, f"the store {path} failed while {doing}: {raw}")


# how a write with an idempotency key inserts (schema 9): a row already stored under the key (by an earlier try of
# the same write) is left as it is and nothing is inserted. The index is partial, so rows without a key (every
# SQLite write) cost no index entry.
_ONCE = " ON CONFLICT(write_key) WHERE write_key IS NOT NULL DO NOTHING"


def _earlier(db: sqlite3.Connection, select: str, write_key: str | None) -> Any:
    """What ``select`` (one column of one table) finds in the row stored under ``write_key``, else None.

    A write repeated after a lost COMMIT reply (PostgresStore) asks this to answer what its first try stored.
    """
    if write_key is None:
        return None
    row = db.execute(f"{select} WHERE write_key=?", (write_key,)).fetchone()
    return None if row is None else row[0]


def _probe(uri: str) -> sqlite3.Connection:
    db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=30)
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # reads the header: corruption shows here
    except sqlite3.Error:
        db.close()
        raise
    return db


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open a store without writing anything to the file, its folder, or its -wal/-shm; errors as StoreError.

    ``mode=ro`` is tried first: it sees what a running farm has committed to the -wal, but SQLite must open
    (or create) PATH-shm for that. On a read-only mount (SQLITE_CANTOPEN) or a folder we cannot write
    (SQLITE_READONLY), with no -wal present (the last writer closed cleanly), it cannot, and ``immutable=1``
    is then right: nothing is in a -wal to miss, and nobody can be writing there. With a -wal present but no
    usable -shm, immutable would silently read old data, so that case is refused with what to do.
    """
    uri = path.resolve().as_uri()
    try:
        try:
            return _probe(f"{uri}?mode=ro")
        except sqlite3.OperationalError as exc:
            if not str(getattr(exc, "sqlite_errorname", "")).startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY")):
                raise
            if Path(f"{path}-wal").exists():
                raise StoreError(
                    path, f"the store {path} has a write-ahead log ({path}-wal) that this process cannot use "
                    "read-only (PATH-shm cannot be created here). Open it once where it is writable (any farm "
                    "command) to fold the log in, or copy the store with its -wal and -shm files to a writable "
                    "folder.",
                ) from exc  # fmt: skip
            return _probe(f"{uri}?immutable=1")
    except sqlite3.Error as exc:
        raise _store_error(path, exc, "opening it read-only") from exc


class Store:
    """Thread-safe: device sessions write from their own threads through one serialised connection.

    ``readonly=True`` opens for reading only (never migrates, never writes the file); a run whose controller
    died then reads as ``interrupted`` in this process only. Writable opens reap such runs in the file.
    """

    NOW = "((julianday('now') - 2440587.5) * 86400.0)"
    """The store's clock in SQL, epoch seconds: heartbeats are written and judged in it (this host's clock for a
    file; PostgresStore uses the server's). julianday rather than unixepoch('subsec'), which needs SQLite 3.42."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._lock = threading.Lock()
        self._memory = False  # a read-only store upgraded in a copy in memory, so reaping writes the copy
        self._db = self._connect_readonly() if readonly else self._connect_writable()
        self.reap_orphans()

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        return cls(path, readonly=True)

    @property
    def where(self) -> str:
        """The store as messages name it (a PostgreSQL store names its URL without the password)."""
        return str(self.path)

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc, doing) from exc

    def _connect_writable(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                self.path, f"cannot create the folder of the store {self.path}: {exc.strerror}. Create it or "
                "point --store / FARM_STORE at a writable place.",
            ) from exc  # fmt: skip
        with self._translated("opening it"):
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            db.row_factory = sqlite3.Row
            self._db = db
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        return db

    def _migrate(self) -> None:
        """Create a new database at the current schema, or bring an older one up to it, in one transaction.

        Concurrent farms opening the same file serialise on the write lock; the second finds nothing to do. A
        store already at this schema is not written at all, so a full disk still lets it be opened and read.
        """
        with self._reading() as db:
            if (version := self._schema_version(db)) > SCHEMA_VERSION:
                raise NewerStoreError(self.path, version, SCHEMA_VERSION)
            if version == SCHEMA_VERSION:
                return
        with self._tx("upgrading its schema", guard=False) as db:
            for statement in statements(SCHEMA):
                db.execute(statement)
            version = self._schema_version(db)
            if version > SCHEMA_VERSION:
                raise NewerStoreError(self.path, version, SCHEMA_VERSION)
            for target in sorted(t for t in MIGRATIONS if t > version):
                for statement in statements(MIGRATIONS[target]):
                    db.execute(statement)
                version = target
            db.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(version),),
            )

    @staticmethod
    def _schema_version(db: sqlite3.Connection) -> int:
        has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() if has_meta else None
        return int(row[0]) if row is not None else BASE_VERSION

    def _connect_readonly(self) -> sqlite3.Connection:
        if not self.path.exists():
            return self._empty_snapshot()  # nothing recorded yet: an empty store, without creating the file
        db = connect_readonly(self.path)
        db.row_factory = sqlite3.Row
        with self._translated("opening it read-only"):
            return self._adopt_readonly(db)

    def _adopt_readonly(self, db: sqlite3.Connection) -> sqlite3.Connection:
        """A read-only store at this schema is read in place; an older one through an upgraded copy in memory."""
        version = self._schema_version(db)
        if version > SCHEMA_VERSION:
            db.close()
            raise NewerStoreError(self.path, version, SCHEMA_VERSION)
        if version == SCHEMA_VERSION:
            self._shadow_runs(db)
            return db
        size = self.path.stat().st_size
        if size > _MAX_SNAPSHOT_BYTES:
            db.close()
            raise StoreError(
                self.path, f"the store {self.path} has schema {version}, older than this farm's ({SCHEMA_VERSION}), "
                f"and is too large ({size >> 20} MiB) to upgrade in memory for reading. Open it once where it is "
                "writable (any farm command upgrades it in place, adding only), then read it here.",
            )  # fmt: skip
        memory = self._empty_snapshot(migrate=False)
        db.backup(memory)
        db.close()
        self._db = memory
        self._migrate()
        return memory

    def _empty_snapshot(self, *, migrate: bool = True) -> sqlite3.Connection:
        db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        self._memory = True
        if migrate:
            self._db = db
            self._migrate()
        return db

    @staticmethod
    def _shadow_runs(db: sqlite3.Connection) -> None:
        """Let this connection see reaped runs as interrupted without writing the file.

        A TEMP view named ``runs`` takes precedence over ``main.runs`` for every query of this connection, and
        TEMP objects live in memory, which a read-only connection may write.
        """
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("CREATE TEMP TABLE reaped (run_id TEXT PRIMARY KEY, finished_at REAL, summary_json TEXT)")
        overrides = {
            "status": "CASE WHEN x.run_id IS NULL THEN r.status ELSE 'interrupted' END",
            "finished_at": "COALESCE(x.finished_at, r.finished_at)",
            "summary_json": "COALESCE(x.summary_json, r.summary_json)",
        }
        cols = [row[1] for row in db.execute("PRAGMA main.table_info(runs)")]
        select = ", ".join(f"{overrides[c]} AS {c}" if c in overrides else f"r.{c}" for c in cols)
        db.execute(f"CREATE TEMP VIEW runs AS SELECT {select} FROM main.runs r LEFT JOIN reaped x ON x.run_id=r.id")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self, doing: str = "writing to it", *, guard: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is stored, or none of it (and a StoreError says why)."""
        if guard and self.readonly:
            raise StoreError(self.where, f"the store {self.where} was opened read-only; this command cannot write it")
        with self._lock, self._translated(doing):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back already (e.g. on SQLITE_FULL)
                    with suppress(sqlite3.Error):  # the original error is the one to report
                        self._db.execute("ROLLBACK")
                raise

    def _after_copy(self, db: sqlite3.Connection) -> None:
        """Rows were copied in with their job ids (farm.store.copy); SQLite's AUTOINCREMENT already follows them."""

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._translated("reading it"):
            yield self._db

    # -- runs: start, finish, reap, reopen ------------------------------------------------------------------
    def start_run(self, run_id: str, *, write_key: str | None = None, **fields: Any) -> None:
        """Record a new run, controlled by the calling process (attempt 1).

        ``write_key``, as for every write that takes one: the idempotency key of this logical write (schema 9), so
        a try repeated after a lost COMMIT reply finds what it stored instead of storing it again.
        """
        me, now = Controller.this_process(), time.time()
        with self._tx("starting a run") as db:
            cur = db.execute(
                "INSERT INTO runs(id, suite_name, suite_digest, suite_json, bundle_name, bundle_version,"
                " bundle_digest, anchor_name, anchor_digest, started_at, status, host, farm_version, conventions_json,"
                " plan_json, controller_host, controller_pid, controller_start, anchors_json, heartbeat_at)"
                f" VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,{self.NOW}) ON CONFLICT(id) DO NOTHING",
                (
                    run_id, fields["suite_name"], fields["suite_digest"], fields["suite_json"],
                    fields["bundle_name"], fields["bundle_version"], fields["bundle_digest"],
                    fields.get("anchor_name"), fields.get("anchor_digest"), now, "running",
                    fields["host"], fields["farm_version"], json.dumps(fields["conventions"], sort_keys=True),
                    json.dumps(fields.get("plan", {}), sort_keys=True), me.host, me.pid, me.start,
                    json.dumps(fields["anchors"]) if fields.get("anchors") is not None else None,
                ),
            )  # fmt: skip
            if not cur.rowcount:  # the run id is taken: by this very write's earlier try, or it is refused
                if _earlier(db, "SELECT attempt FROM run_attempts", write_key) is not None:
                    return
                raise StoreError(self.where, f"the store {self.where} already holds a run {run_id}; not started again")
            db.execute(
                "INSERT INTO run_attempts(run_id, attempt, controller_host, controller_pid, started_at, status,"
                " write_key) VALUES (?, 1, ?, ?, ?, 'running', ?)",
                (run_id, me.host, me.pid, now, write_key),
            )

    def finish_run(self, run_id: str, status: str, summary: Mapping[str, Any]) -> None:
        """End the current attempt. Idempotent per attempt: a second call changes nothing until a reopen."""
        now = time.time()
        with self._tx("finishing a run") as db:
            cur = db.execute(
                "UPDATE runs SET finished_at=?, status=?, summary_json=? WHERE id=? AND finished_at IS NULL",
                (now, status, json.dumps(summary, sort_keys=True), run_id),
            )
            if cur.rowcount:
                self._end_attempt(db, run_id, now, status, None)

    @staticmethod
    def _end_attempt(db: sqlite3.Connection, run_id: str, at: float, status: str, detail: str | None) -> None:
        db.execute(
            "UPDATE run_attempts SET finished_at=?, status=?, detail=? WHERE run_id=? AND finished_at IS NULL"
            " AND attempt=(SELECT MAX(attempt) FROM run_attempts WHERE run_id=?)",
            (at, status, detail, run_id, run_id),
        )

    def heartbeat(self, run_id: str) -> bool:
        """Tell other hosts that this run's controller lives; False once the run is no longer this process's.

        One UPDATE of one row in autocommit, so no transaction stays open between beats and a beat never waits
        behind anything but another single write. The run must still be ``running`` under this very process:
        a finished run's heartbeat stops where it was, and a run reaped (and perhaps resumed) elsewhere is not
        made to look alive again.
        """
        if self.readonly:
            raise StoreError(self.where, f"the store {self.where} was opened read-only; this command cannot write it")
        me = Controller.this_process()
        with self._lock, self._translated("refreshing a run's heartbeat"):
            cur = self._db.execute(
                f"UPDATE runs SET heartbeat_at={self.NOW} WHERE id=? AND status='running' AND controller_host=?"
                " AND controller_pid=? AND controller_start IS ?",
                (run_id, me.host, me.pid, me.start),
            )
            return bool(cur.rowcount)

    def reap_orphans(self) -> list[str]:
        """Mark ``interrupted`` every running run whose controller is dead; return their ids.

        Without this a SIGKILLed ``farm run`` stays ``running`` for ever. This host's controllers are judged by
        their process, another host's by their heartbeat, silent for longer than STALE_AFTER_S in the store's
        clock (``Controller.why_dead``); a run with no heartbeat at all (an older farm's) from another host is
        left alone. A read-only store marks them in this process only (see ``_shadow``).
        """
        with self._reading() as db:
            rows = db.execute(
                "SELECT id, controller_host, controller_pid, controller_start, summary_json,"
                f" {self.NOW} - heartbeat_at FROM runs WHERE status='running' AND controller_pid IS NOT NULL"
            ).fetchall()
        now, reaped = time.time(), []
        for row in rows:
            controller = Controller(row[1], int(row[2]), row[3])
            why = controller.why_dead(None if row[5] is None else float(row[5]))
            if why is None:
                continue
            summary = json.dumps({**json.loads(row[4] or "{}"), "interrupted": why}, sort_keys=True)
            if self._mark_interrupted(str(row[0]), controller, now, summary, why):
                reaped.append(str(row[0]))
        return reaped

    def _mark_interrupted(self, run_id: str, controller: Controller, at: float, summary: str, why: str) -> bool:
        if self.readonly and not self._memory:  # the file stays as it is: only this process sees the run reaped
            self._shadow(run_id, at, summary)
            return True
        # another host's run: still silent now, in the same statement (a beat may have come since the read)
        stale, args = ("", ()) if controller.is_here() else (f" AND heartbeat_at < {self.NOW} - ?", (STALE_AFTER_S,))
        with self._tx("marking a run whose controller is gone as interrupted", guard=False) as db:
            # the same controller as seen above: another farm may have reopened the run meanwhile
            cur = db.execute(
                "UPDATE runs SET status='interrupted', finished_at=?, summary_json=? WHERE id=? AND status='running'"
                " AND controller_host=? AND controller_pid=? AND controller_start IS ?" + stale,
                (at, summary, run_id, controller.host, controller.pid, controller.start, *args),
            )
            if cur.rowcount:
                self._end_attempt(db, run_id, at, "interrupted", why)
            return bool(cur.rowcount)

    def _shadow(self, run_id: str, at: float, summary: str) -> None:
        """Show a reaped run as interrupted to this connection only: TEMP tables are its own (``_shadow_runs``)."""
        with self._reading() as db:
            db.execute("INSERT OR REPLACE INTO temp.reaped VALUES (?,?,?)", (run_id, at, summary))

    def _shown(self, row: sqlite3.Row) -> sqlite3.Row:
        """A run row as this process shows it; SQLite's TEMP view has already applied ``_shadow``."""
        return row

    def reopen_run(self, run_id: str, *, extend: bool = False, write_key: str | None = None) -> int:
        """Set an interrupted or incomplete run running again under this process; return the new attempt number.

        The run keeps its id, jobs and measurements, so a resume runs only what ``completed_job_keys`` lacks and
        the whole run is scored and gated once at the end. ``extend``: a complete run too, which adds jobs
        (more repeats for an undecided adaptive gate, farm/adaptive.py): nothing stored is rewritten.
        """
        me, now = Controller.this_process(), time.time()
        with self._tx("reopening a run") as db:
            if (earlier := _earlier(db, "SELECT attempt FROM run_attempts", write_key)) is not None:
                return int(earlier)  # this very reopen, stored by a try whose COMMIT reply was lost
            run = db.execute("SELECT status, started_at, finished_at FROM runs WHERE id=?", (run_id,)).fetchone()
            if run is None:
                raise RunStateError(f"no run {run_id!r} in {self.where}")
            if run["status"] not in (*RESUMABLE_STATUSES, *(("complete",) if extend else ())):
                raise RunStateError(
                    f"run {run_id} is {run['status']}: only an interrupted or incomplete run can be resumed"
                    + (" (a running run's controller is still alive)" if run["status"] == "running" else "")
                )
            last = db.execute("SELECT MAX(attempt) FROM run_attempts WHERE run_id=?", (run_id,)).fetchone()[0]
            if last is None:  # recorded before attempts existed (schema < 4): the original run is attempt 1
                db.execute(
                    "INSERT INTO run_attempts(run_id, attempt, started_at, finished_at, status) VALUES (?,1,?,?,?)",
                    (run_id, run["started_at"], run["finished_at"], run["status"]),
                )
                last = 1
            attempt = int(last) + 1
            db.execute(
                "UPDATE runs SET status='running', finished_at=NULL, controller_host=?, controller_pid=?,"
                f" controller_start=?, heartbeat_at={self.NOW} WHERE id=?",
                (me.host, me.pid, me.start, run_id),
            )
            cur = db.execute(
                "INSERT INTO run_attempts(run_id, attempt, controller_host, controller_pid, started_at, status,"
                " write_key) VALUES (?,?,?,?,?,'running',?) ON CONFLICT(run_id, attempt) DO NOTHING",
                (run_id, attempt, me.host, me.pid, now, write_key),
            )
            if not cur.rowcount:  # taken since the status was read: by this reopen's first try (committed late), or
                if (earlier := _earlier(db, "SELECT attempt FROM run_attempts", write_key)) is not None:
                    return int(earlier)
                raise RunStateError(f"run {run_id} was resumed by another controller meanwhile")  # (rolled back)
        return attempt

    # -- results ----------------------------------------------------------------------------------------------

    def add_device(
        self, run_id: str, device_id: str, platform: str, target: str, tags: list[str],
        properties: Mapping[str, Any], status: str, error: str | None, *, write_key: str | None = None,
    ) -> None:  # fmt: skip
        with self._tx("recording a device") as db:
            db.execute(
                "INSERT INTO run_devices(run_id, device_id, platform, target, tags_json, properties_json, status,"
                " error, recorded_at, write_key) VALUES (?,?,?,?,?,?,?,?,?,?)" + _ONCE,
                (run_id, device_id, platform, target, json.dumps(tags), json.dumps(properties, sort_keys=True),
                 status, error, time.time(), write_key),
            )  # fmt: skip

    def add_job(
        self, run_id: str, job: Mapping[str, Any], measurements: list[Measurement], traces: Sequence[Trace] = (),
        *, write_key: str | None = None,
    ) -> int:  # fmt: skip
        """One job with its measurements and traces, in one transaction: all of it is stored, or none. Returns its
        id (an earlier try's, when ``write_key`` finds one: that try stored its traces too)."""
        with self._tx("recording a job") as db:
            row = db.execute(
                "INSERT INTO jobs(run_id, device_id, role, sequence, rate_kbps, repeat, status, error,"
                " bitstream_sha, bitstream_bytes, source_sha, output_sha, frames, frame_times_json,"
                " stderr_tail, started_at, finished_at, write_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                + _ONCE
                + " RETURNING id",
                (
                    run_id, job["device_id"], job["role"], job["sequence"], job["rate_kbps"], job["repeat"],
                    job["status"], job.get("error"), job["bitstream_sha"], job["bitstream_bytes"],
                    job["source_sha"], job.get("output_sha"), job.get("frames"),
                    json.dumps(list(job["frame_times_ns"])) if job.get("frame_times_ns") else None,
                    job.get("stderr_tail"), job["started_at"], job["finished_at"], write_key,
                ),
            ).fetchone()  # fmt: skip
            if row is None:  # stored whole, measurements too, by this very write's try whose COMMIT reply was lost
                return int(_earlier(db, "SELECT id FROM jobs", write_key))
            job_id = int(row[0])  # RETURNING rather than lastrowid: the same SQL serves PostgreSQL
            self._insert_measurements(db, job_id, measurements)
            if traces:
                db.executemany(
                    "INSERT INTO job_traces VALUES (?,?,?,?,?,?,?,?)", [_trace_row(job_id, t) for t in traces]
                )
        return job_id

    def add_measurements(self, job_id: int, measurements: list[Measurement]) -> None:
        """Add measurements to a stored job (its quality, once scored), idempotent by their natural key.

        ``(job_id, name)`` is unique already, so a try repeated after a lost COMMIT reply finds its rows and stores
        nothing; a measurement stored before with another value is refused, as it was before schema 9.
        """
        with self._tx("recording measurements") as db:
            cur = db.executemany(
                "INSERT INTO measurements VALUES (?,?,?,?,?,?) ON CONFLICT(job_id, name) DO NOTHING",
                [(job_id, m.name, m.value, m.unit, m.convention, m.missing_reason) for m in measurements],
            )
            if cur.rowcount < len(measurements):
                self._check_stored(db, job_id, measurements)

    def _check_stored(self, db: sqlite3.Connection, job_id: int, measurements: list[Measurement]) -> None:
        rows = db.execute(
            "SELECT name, value, unit, convention, missing_reason FROM measurements WHERE job_id=?", (job_id,)
        )
        stored = {str(r[0]): tuple(r[1:]) for r in rows}
        for m in measurements:
            if stored.get(m.name) != (m.value, m.unit, m.convention, m.missing_reason):
                raise StoreError(
                    self.where, f"job {job_id} in {self.where} already has a measurement {m.name!r} of another value "
                    f"({stored.get(m.name)}); measurements are never rewritten",
                )  # fmt: skip

    @staticmethod
    def _insert_measurements(db: sqlite3.Connection, job_id: int, ms: list[Measurement]) -> None:
        db.executemany(
            "INSERT INTO measurements VALUES (?,?,?,?,?,?)",
            [(job_id, m.name, m.value, m.unit, m.convention, m.missing_reason) for m in ms],
        )

    def add_run_metric(
        self, run_id: str, device_id: str, name: str, value: float | None, unit: str, convention: str,
        detail: str | None, *, write_key: str | None = None,
    ) -> None:  # fmt: skip
        with self._tx("recording a run metric") as db:
            db.execute(
                "INSERT INTO run_metrics(run_id, device_id, name, value, unit, convention, detail, recorded_at,"
                " write_key) VALUES (?,?,?,?,?,?,?,?,?)" + _ONCE,
                (run_id, device_id, name, value, unit, convention, detail, time.time(), write_key),
            )

    def add_gate_evaluation(
        self, run_id: str, verdicts: list[Mapping[str, Any]], *, write_key: str | None = None
    ) -> int:
        """Append one evaluation of the run's gates; return its number (an earlier try's, when ``write_key`` finds
        one). Its rows carry ``write_key/0``, ``write_key/1``, ...: the key is unique per row."""
        keys = [None if write_key is None else f"{write_key}/{i}" for i in range(len(verdicts))]
        with self._tx("recording a gate evaluation") as db:
            row = db.execute("SELECT COALESCE(MAX(evaluation), 0) FROM gates WHERE run_id=?", (run_id,)).fetchone()
            evaluation = int(row[0]) + 1
            now = time.time()
            cur = db.executemany(
                "INSERT INTO gates(run_id, evaluation, gate_index, metric, op, threshold, scope, scope_key, stat,"
                " value, verdict, detail, inputs_json, evaluated_at, gate_json, write_key)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)" + _ONCE,
                [
                    (run_id, evaluation, v["gate_index"], v["metric"], v["op"], str(v["threshold"]), v["scope"],
                     v["scope_key"], v["stat"], None if v["value"] is None else str(v["value"]), v["verdict"],
                     v["detail"], json.dumps(v["inputs"], sort_keys=True, default=str), now,
                     json.dumps(v["gate"], sort_keys=True) if v.get("gate") else None, key)
                    for v, key in zip(verdicts, keys, strict=True)
                ],
            )  # fmt: skip
            if write_key is not None and cur.rowcount < len(keys):  # stored whole by an earlier try of this write
                return int(_earlier(db, "SELECT evaluation FROM gates", keys[0]))
        return evaluation

    def add_output_diff(
        self, run_id: str, sequence: str, rate_kbps: float, a_sha: str, b_sha: str, frames: int | None,
        max_abs_diff: float | None, psnr_min_db: float | None, detail: str | None, *, write_key: str | None = None,
    ) -> None:  # fmt: skip
        """One comparison of two different decoded outputs of the same bitstream (stored with a_sha < b_sha)."""
        a_sha, b_sha = sorted((a_sha, b_sha))
        with self._tx("recording an output comparison") as db:
            db.execute(
                "INSERT INTO output_diffs(run_id, sequence, rate_kbps, a_sha, b_sha, frames, max_abs_diff, psnr_min_db,"
                " detail, recorded_at, write_key) VALUES (?,?,?,?,?,?,?,?,?,?,?)" + _ONCE,
                (run_id, sequence, rate_kbps, a_sha, b_sha, frames, max_abs_diff, psnr_min_db, detail, time.time(),
                 write_key),
            )  # fmt: skip

    def add_frame_quality(self, run_id: str, frames: Sequence[FrameQuality]) -> int:
        """Store per-frame scores of decoded outputs; return how many rows were written.

        An output already stored for the run (a resumed run scoring again) is skipped whole, so each output has
        its frames once per run. One executemany in one transaction: a 1000-frame output is one commit.
        """
        outputs = sorted({(f.output_sha, f.source_sha) for f in frames})
        with self._tx("recording per-frame quality") as db:
            have = {
                (o, s) for o, s in outputs
                if db.execute("SELECT 1 FROM frame_quality WHERE run_id=? AND output_sha=? AND source_sha=? LIMIT 1",
                              (run_id, o, s)).fetchone()
            }  # fmt: skip
            rows = [
                (run_id, f.output_sha, f.source_sha, f.frame, *(getattr(f, k) for k in FRAME_QUALITY_FIELDS))
                for f in frames
                if (f.output_sha, f.source_sha) not in have
            ]
            if rows:
                marks = ",".join("?" * (4 + len(FRAME_QUALITY_FIELDS)))
                db.executemany(f"INSERT INTO frame_quality VALUES ({marks})", rows)
        return len(rows)

    def add_release(
        self, *, tag: str, version: str, run_id: str, suite_name: str, bundle_digest: str, evaluation: int,
        repo: str, commit_sha: str, manifest_json: str, manifest_sha256: str, write_key: str | None = None,
    ) -> None:  # fmt: skip
        with self._tx("recording a release") as db:
            db.execute(
                "INSERT INTO releases(tag, version, run_id, suite_name, bundle_digest, evaluation, repo, commit_sha,"
                " manifest_json, manifest_sha256, created_at, write_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
                + _ONCE,
                (tag, version, run_id, suite_name, bundle_digest, evaluation, repo, commit_sha, manifest_json,
                 manifest_sha256, time.time(), write_key),
            )  # fmt: skip

    # -- reads ----------------------------------------------------------------------------------------
    def run(self, run_id: str) -> sqlite3.Row | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return None if row is None else self._shown(row)

    def runs(self, limit: int = 50) -> list[sqlite3.Row]:
        with self._reading() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY started_at DESC LIMIT ?", (limit,)).fetchall()
        return [self._shown(r) for r in rows]

    def devices(self, run_id: str) -> list[sqlite3.Row]:
        with self._reading() as db:
            return list(db.execute("SELECT * FROM run_devices WHERE run_id=? ORDER BY device_id", (run_id,)))

    def jobs(self, run_id: str) -> list[sqlite3.Row]:
        with self._reading() as db:
            return list(db.execute("SELECT * FROM jobs WHERE run_id=? ORDER BY id", (run_id,)))

    def measurements(self, run_id: str) -> dict[int, dict[str, sqlite3.Row]]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT m.* FROM measurements m JOIN jobs j ON j.id = m.job_id WHERE j.run_id=?", (run_id,)
            )
            out: dict[int, dict[str, sqlite3.Row]] = {}
            for row in rows:
                out.setdefault(int(row["job_id"]), {})[row["name"]] = row
            return out

    def traces(self, run_id: str) -> dict[int, dict[str, Trace]]:
        """Job id -> series -> its trace (points, or the reason it is missing); jobs stored before schema 8 and
        jobs that never reached their decode have none."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT t.* FROM job_traces t JOIN jobs j ON j.id = t.job_id WHERE j.run_id=? ORDER BY t.job_id, "
                "t.series",
                (run_id,),
            ).fetchall()
        out: dict[int, dict[str, Trace]] = {}
        for r in rows:
            t_s, values = (json.loads(r["t_json"]), json.loads(r["v_json"])) if r["t_json"] else ([], [])
            trace = Trace(r["series"], tuple(t_s), tuple(values), int(r["samples"]), r["missing_reason"])
            out.setdefault(int(r["job_id"]), {})[trace.series] = trace
        return out

    def run_metrics(self, run_id: str) -> list[sqlite3.Row]:
        with self._reading() as db:
            return list(db.execute("SELECT * FROM run_metrics WHERE run_id=? ORDER BY rowid", (run_id,)))

    def gate_verdicts(self, run_id: str, evaluation: int | None = None) -> list[sqlite3.Row]:
        with self._reading() as db:
            if evaluation is None:
                row = db.execute("SELECT MAX(evaluation) FROM gates WHERE run_id=?", (run_id,)).fetchone()
                evaluation = row[0]
            if evaluation is None:
                return []
            return list(
                db.execute(
                    "SELECT * FROM gates WHERE run_id=? AND evaluation=? ORDER BY gate_index, scope_key",
                    (run_id, evaluation),
                )
            )

    def output_diffs(self, run_id: str) -> list[sqlite3.Row]:
        with self._reading() as db:
            return list(db.execute("SELECT * FROM output_diffs WHERE run_id=? ORDER BY rowid", (run_id,)))

    def frame_quality(self, run_id: str) -> list[FrameQuality]:
        """Every per-frame row of the run, by output, source and frame."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT * FROM frame_quality WHERE run_id=? ORDER BY output_sha, source_sha, frame", (run_id,)
            ).fetchall()
        return [
            FrameQuality(r["output_sha"], r["source_sha"], int(r["frame"]), *(r[k] for k in FRAME_QUALITY_FIELDS))
            for r in rows
        ]

    def last_release(self, suite_name: str, exclude_run: str | None = None) -> sqlite3.Row | None:
        """The newest release of a suite (the default baseline of statistical gates)."""
        with self._reading() as db:
            return db.execute(  # type: ignore[no-any-return]
                "SELECT * FROM releases WHERE suite_name=? AND run_id IS NOT ? ORDER BY created_at DESC, rowid DESC"
                " LIMIT 1",
                (suite_name, exclude_run),
            ).fetchone()

    def releases(self, tag: str | None = None) -> list[sqlite3.Row]:
        with self._reading() as db:
            if tag is None:
                return list(db.execute("SELECT * FROM releases ORDER BY created_at DESC, rowid DESC"))
            return list(db.execute("SELECT * FROM releases WHERE tag=? ORDER BY created_at DESC, rowid DESC", (tag,)))

    def resolve_run_id(self, prefix: str) -> str | None:
        """Accept a unique prefix of a run id, as git does for commits."""
        with self._reading() as db:
            rows = db.execute("SELECT id FROM runs WHERE id LIKE ? LIMIT 2", (prefix + "%",)).fetchall()
        return str(rows[0][0]) if len(rows) == 1 else None

    def attempts(self, run_id: str) -> list[RunAttempt]:
        """A run's attempts, first to last; a run stored before attempts existed counts as one attempt."""
        with self._reading() as db:
            rows = db.execute("SELECT * FROM run_attempts WHERE run_id=? ORDER BY attempt", (run_id,)).fetchall()
            run = db.execute("SELECT status, started_at, finished_at FROM runs WHERE id=?", (run_id,)).fetchone()
        if rows:
            return [
                RunAttempt(run_id, r["attempt"], r["controller_host"], r["controller_pid"], r["started_at"],
                           r["finished_at"], r["status"], r["detail"])
                for r in rows
            ]  # fmt: skip
        if run is None:
            return []
        return [RunAttempt(run_id, 1, None, None, run["started_at"], run["finished_at"], run["status"])]

    def completed_job_keys(self, run_id: str) -> set[JobKey]:
        """The jobs of a run that succeeded (in any attempt): what a resume must not run again."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT device_id, role, sequence, rate_kbps, repeat FROM jobs WHERE run_id=? AND status='ok'",
                (run_id,),
            ).fetchall()
        return {(str(r[0]), str(r[1]), str(r[2]), float(r[3]), int(r[4])) for r in rows}


def _trace_row(job_id: int, t: Trace) -> tuple[Any, ...]:
    """A ``job_traces`` row: the points as two compact JSON arrays (see docs/store.md for why not a row each)."""
    arrays = (json.dumps(t.t_s), json.dumps(t.values)) if t.t_s else (None, None)
    return (job_id, t.series, t.unit, len(t.t_s), t.samples, *arrays, t.missing_reason)
