"""PostgreSQL result store: one system of record that every controller of a lab writes at once.

``PostgresStore`` is the SQLite ``Store`` with another connection underneath, not a second copy of its
queries: the queries are common SQL, and ``_Connection`` adapts the few spellings that differ (placeholders,
``IS ?``, ``BEGIN IMMEDIATE``, ``rowid``) as it sends them. One copy of each query means the two backends
cannot drift apart in what they store; the schema is shared the same way (schema.py ``postgres_ddl``).

Each write is one transaction (a job with all its measurements, or nothing), as in SQLite; concurrent runs
only insert rows of their own (run ids are random, job ids come from a sequence), so they never wait on each
other. Credentials come from the URL, the ``PG*`` environment or ``~/.pgpass`` (libpq reads them); the
password is never part of a message (``redact``).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from farm.store.errors import NewerStoreError, StoreError
from farm.store.schema import BASE_VERSION, MIGRATIONS, SCHEMA, SCHEMA_VERSION, postgres_ddl, statements
from farm.store.sqlite import Store

URL_PREFIXES = ("postgresql://", "postgres://")
_MIGRATION_LOCK = 0x6661726D  # "farm": serialises schema upgrades of concurrent controllers
RECONNECT_S = 60.0  # how long a lost database may take to come back before the run fails naming it
T = TypeVar("T")
_IS_NOT = re.compile(r"\bIS NOT \?")
_IS = re.compile(r"\bIS \?")


def is_url(target: object) -> bool:
    return str(target).startswith(URL_PREFIXES)


def redact(url: str) -> str:
    """The URL as messages show it: user, host, port and database, never the password (a path: as it is)."""
    if not is_url(url):
        return url
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


class Row(tuple[Any, ...]):
    """A row that indexes by position and by column name, like sqlite3.Row, so callers serve both backends."""

    _names: dict[str, int]

    def __new__(cls, values: Sequence[Any], names: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: psycopg.Cursor[Any]) -> Any:
    names = {col.name: i for i, col in enumerate(cursor.description or ())}
    return lambda values: Row(values, names)


def _translate(sql: str) -> str:
    sql = sql.replace("%", "%%").replace("BEGIN IMMEDIATE", "BEGIN")
    sql = _IS_NOT.sub("IS DISTINCT FROM ?", _IS.sub("IS NOT DISTINCT FROM ?", sql))
    # rowid: insertion order of the insert-only tables; their physical order is that too, as nothing is deleted
    return sql.replace("rowid", "ctid").replace("?", "%s")


class _Connection:
    """The part of sqlite3.Connection that ``Store`` uses, over a psycopg connection in autocommit mode."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> psycopg.Cursor[Any]:
        if params is None and sql.strip() in ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"):
            return self.conn.execute(_translate(sql))
        return self.conn.execute(_translate(sql), params or ())

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor[Any]:
        """As sqlite3's: the (closed) cursor still tells ``rowcount``, the rows inserted over all of ``rows``."""
        with self.conn.cursor() as cur:
            cur.executemany(_translate(sql), rows)
        return cur

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.conn.close()


class PostgresStore(Store):
    """A lab's store on a PostgreSQL server; the same methods, rows and errors as the SQLite ``Store``.

    Unlike a SQLite file, a lab's store is upgraded only on purpose (``migrate=True``: `farm store migrate`):
    the first farm upgraded in a lab would otherwise lock every older controller out of the shared store. An
    empty database is given the schema by any writable open. ``readonly=True`` never writes; runs whose
    controller died are reaped by the next writable open, as the SQLite store does, and shown interrupted to a
    read-only one (in this process only).
    """

    NOW = "CAST(EXTRACT(EPOCH FROM now()) AS DOUBLE PRECISION)"
    """The server's clock: every controller of a lab writes its heartbeat in it, and every reader judges it in it,
    so controller hosts whose clocks disagree never reap a live run nor keep a dead one."""

    def __init__(
        self, url: str, *, readonly: bool = False, migrate: bool = False, reconnect_s: float = RECONNECT_S
    ) -> None:
        self.url = url
        self.reconnect_s = reconnect_s
        self._reconnecting = threading.Lock()
        self.reconnects = 0  # how often the connection was lost and made again (shown nowhere yet; tests read it)
        self.path = None  # type: ignore[assignment]  # a URL has no path; ``where`` names it
        self.readonly = readonly
        self._lock = threading.Lock()
        self._memory = False
        self._reaped: dict[str, tuple[float, str]] = {}  # run id -> (finished_at, summary) shown to this process
        self._db = cast(sqlite3.Connection, self._connect())  # the adapter offers what Store uses of it
        if not readonly and (migrate or self._version() is None):
            self._migrate()
        else:
            self._check_current()
        self.reap_orphans()

    @property
    def where(self) -> str:
        return redact(self.url)

    def _connect(self) -> _Connection:
        try:
            conn = psycopg.connect(self.url, autocommit=True, row_factory=_row_factory, connect_timeout=10)
            if self.readonly:  # the server enforces it too: `farm runs` can never change the lab's store
                conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            raise StoreError(
                self.where, f"cannot reach the PostgreSQL store {self.where}: {_reason(exc, self.url)}. Check that "
                "the server is running and reachable, and the user and database (credentials come from the URL, "
                "PG* variables or ~/.pgpass), or point --store / FARM_STORE at another store.",
            ) from exc  # fmt: skip
        return _Connection(conn)

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            raise StoreError(
                self.where, f"the PostgreSQL store {self.where} failed while {doing}: {_reason(exc, self.url)}"
            ) from exc

    def _version(self) -> int | None:
        """The stored schema version, or None when the database holds no farm store yet."""
        with self._reading() as db:
            if db.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
                return None
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row is not None else None

    def _check_current(self) -> None:
        version = self._version()
        if version is not None and version > SCHEMA_VERSION:
            raise NewerStoreError(self.where, version, SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise StoreError(
                self.where, f"the PostgreSQL store {self.where} has schema {version or 'none'}, not this farm's "
                f"({SCHEMA_VERSION}): a lab's store is upgraded on purpose, once every farm that writes it is "
                f"upgraded: run `farm store migrate --store {self.where}`, then run this again.",
            )  # fmt: skip

    def _migrate(self) -> None:
        """Bring the database to this farm's schema in one transaction; concurrent farms wait on a lock."""
        if (version := self._version()) == SCHEMA_VERSION:
            return
        if version is not None and version > SCHEMA_VERSION:
            raise NewerStoreError(self.where, version, SCHEMA_VERSION)
        with self._tx("upgrading its schema", guard=False) as db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            has_meta = db.execute("SELECT to_regclass('meta')").fetchone()[0] is not None
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() if has_meta else None
            version = int(row[0]) if row is not None else None
            if version is not None and version > SCHEMA_VERSION:
                raise NewerStoreError(self.where, version, SCHEMA_VERSION)
            if version is None:  # a new store: the base schema, then every migration
                for statement in statements(SCHEMA):
                    db.execute(postgres_ddl(statement))
                version = BASE_VERSION
            for target in sorted(t for t in MIGRATIONS if t > version):
                for statement in statements(MIGRATIONS[target]):
                    db.execute(postgres_ddl(statement))
                version = target
            db.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(version),),
            )

    def _lost(self) -> bool:
        conn = cast(_Connection, self._db).conn
        return bool(conn.closed or conn.broken)

    def _retry(self, name: str, call: Callable[[], T]) -> T:
        """Run ``call``; when the connection was lost (a database restart), reconnect with backoff and run it again.

        A transaction cut by a lost connection was rolled back by the server, so running it again stores the
        job once; one cut during COMMIT may have been committed, and a write run again then finds its rows by its
        idempotency key (``KEYED_WRITES``) or natural key and returns what the first try stored. Past
        ``reconnect_s`` the StoreError names the database, and the recorder fails the run with the jobs it could
        not store (farm/recorder.py): none is dropped silently.
        """
        deadline, delay = time.monotonic() + self.reconnect_s, 0.1
        while True:
            try:
                return call()
            except StoreError as exc:
                if not self._lost():
                    raise
                last: StoreError = exc
            while time.monotonic() < deadline:
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 5.0)
                if self._reconnect():
                    break
            else:
                raise StoreError(
                    self.where, f"lost the PostgreSQL store {self.where} during {name} and could not reconnect "
                    f"within {self.reconnect_s:g} s: {last}",
                ) from last  # fmt: skip

    def _reconnect(self) -> bool:
        with self._reconnecting:
            if not self._lost():
                return True  # another thread reconnected meanwhile
            try:
                fresh = self._connect()
            except StoreError:
                return False
            with self._lock:
                self._db = cast(sqlite3.Connection, fresh)
                self.reconnects += 1
            return True

    def _after_copy(self, db: sqlite3.Connection) -> None:
        """Jobs copied with their ids leave the id sequence behind them: move it past the largest id."""
        db.execute("SELECT setval(pg_get_serial_sequence('jobs', 'id'), GREATEST((SELECT MAX(id) FROM jobs), 1))")

    def _shadow(self, run_id: str, at: float, summary: str) -> None:
        """A read-only session may not even create a TEMP view (the server refuses every CREATE), so the rows
        of a reaped run are patched as they are read (``_shown``) instead."""
        self._reaped[run_id] = (at, summary)

    def _shown(self, row: sqlite3.Row) -> sqlite3.Row:
        reaped = self._reaped.get(row["id"])
        if reaped is None:
            return row
        names = cast(Row, row)._names
        values = list(row)
        values[names["status"]] = "interrupted"
        values[names["finished_at"]], values[names["summary_json"]] = reaped
        return cast(sqlite3.Row, Row(values, names))


def connect_readonly(url: str) -> sqlite3.Connection:
    """A read-only session for the exporter (farm/metrics/results.py), shaped as the sqlite3 one it uses."""
    where = redact(url)
    try:
        conn = psycopg.connect(url, autocommit=True, row_factory=_row_factory, connect_timeout=10)
        conn.execute("SET default_transaction_read_only = on")
    except psycopg.Error as exc:
        raise StoreError(where, f"cannot reach the PostgreSQL store {where}: {_reason(exc, url)}") from exc
    return cast(sqlite3.Connection, _Connection(conn))


def _retrying(name: str) -> Callable[..., Any]:
    keyed = name in KEYED_WRITES

    def method(self: PostgresStore, *args: Any, **kwargs: Any) -> Any:
        if keyed and kwargs.get("write_key") is None:  # chosen once, before the first try: every try shares it
            kwargs["write_key"] = new_write_key()
        return self._retry(name, lambda: getattr(Store, name)(self, *args, **kwargs))

    method.__name__ = name
    method.__doc__ = getattr(Store, name).__doc__
    return method


# the writes that would store a second row when run again after a COMMIT that succeeded but whose reply was lost:
# each takes an idempotency key (schema 9)
KEYED_WRITES = frozenset({
    "start_run", "reopen_run", "add_device", "add_job", "add_run_metric", "add_gate_evaluation", "add_output_diff",
    "add_release",
})  # fmt: skip
# the writes a repeat leaves as the first try left them without a key: add_measurements and add_frame_quality find
# their rows by a natural key, finish_run and heartbeat are updates to the same values. A write added to the list
# below belongs in one of the two sets (tests/test_store_once.py checks it).
REPEATABLE_WRITES = frozenset({"add_measurements", "add_frame_quality", "finish_run", "heartbeat"})


def new_write_key() -> str:
    """A random idempotency key for one logical write: 128 bits, so two writes never share one."""
    return uuid.uuid4().hex


# every public method that reads or writes: each is one transaction, so each can be run again whole
for _name in (
    "start_run", "finish_run", "reopen_run", "add_device", "add_job", "add_measurements", "add_run_metric",
    "add_gate_evaluation", "add_output_diff", "add_frame_quality", "add_release", "run", "runs", "devices", "jobs",
    "measurements", "run_metrics", "gate_verdicts", "output_diffs", "frame_quality", "last_release", "releases",
    "resolve_run_id", "attempts", "completed_job_keys", "heartbeat", "traces",
):  # fmt: skip
    setattr(PostgresStore, _name, _retrying(_name))


def _reason(exc: psycopg.Error, url: str) -> str:
    """The server's own words, first line only, with the password taken out should libpq ever echo it."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    return text.replace(str(password), "***") if password else text
