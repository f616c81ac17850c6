"""The store's schema and its migrations, as versioned SQL that only ever adds.

Hand-written SQL rather than an ORM: a dozen tables, and every statement must be readable in a review of what a
release was granted on. Written once, in SQLite's dialect; ``postgres_ddl`` translates the three type names that
differ for PostgreSQL, so both backends share one list of versions and can never drift apart (docs/decisions.md).
A newer farm migrates an older store in place by adding tables and nullable columns (NULL = recorded before the
column existed), so every result already stored stays readable and no row is rewritten.
"""

from __future__ import annotations

import re
import sqlite3

SCHEMA_VERSION = 9
BASE_VERSION = 2  # what SCHEMA below creates; MIGRATIONS bring it to SCHEMA_VERSION

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    suite_name TEXT NOT NULL, suite_digest TEXT NOT NULL, suite_json TEXT NOT NULL,
    bundle_name TEXT NOT NULL, bundle_version TEXT NOT NULL, bundle_digest TEXT NOT NULL,
    anchor_name TEXT, anchor_digest TEXT,
    started_at REAL NOT NULL, finished_at REAL,
    status TEXT NOT NULL,             -- running | complete | incomplete | interrupted (schema 4)
    host TEXT NOT NULL, farm_version TEXT NOT NULL,
    conventions_json TEXT NOT NULL,
    plan_json TEXT NOT NULL,          -- devices (with tags) and planned test jobs per device
    summary_json TEXT                 -- bytes pushed, encodes reused, ... (set once at the end)
);
CREATE TABLE IF NOT EXISTS run_devices (
    run_id TEXT NOT NULL REFERENCES runs(id), device_id TEXT NOT NULL,
    platform TEXT NOT NULL, target TEXT NOT NULL, tags_json TEXT NOT NULL,
    properties_json TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(id), device_id TEXT NOT NULL,
    role TEXT NOT NULL,               -- test | anchor (the first anchor) | anchor:NAME (schema 5: the others)
    sequence TEXT NOT NULL, rate_kbps REAL NOT NULL, repeat INTEGER NOT NULL,
    status TEXT NOT NULL,             -- ok | failed
    error TEXT,
    bitstream_sha TEXT NOT NULL, bitstream_bytes INTEGER NOT NULL, source_sha TEXT NOT NULL,
    output_sha TEXT, frames INTEGER,
    frame_times_json TEXT,            -- raw per-frame decode ns, for quantiles elsewhere
    stderr_tail TEXT,
    started_at REAL NOT NULL, finished_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs(run_id);
CREATE TABLE IF NOT EXISTS measurements (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    name TEXT NOT NULL, value REAL, unit TEXT NOT NULL,
    convention TEXT NOT NULL, missing_reason TEXT,
    UNIQUE (job_id, name)
);
CREATE TABLE IF NOT EXISTS run_metrics (
    run_id TEXT NOT NULL REFERENCES runs(id), device_id TEXT NOT NULL,
    name TEXT NOT NULL, value REAL, unit TEXT NOT NULL, convention TEXT NOT NULL, detail TEXT,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS gates (
    run_id TEXT NOT NULL REFERENCES runs(id), evaluation INTEGER NOT NULL,
    gate_index INTEGER NOT NULL, metric TEXT NOT NULL, op TEXT NOT NULL, threshold TEXT NOT NULL,
    scope TEXT NOT NULL, scope_key TEXT NOT NULL, stat TEXT NOT NULL,
    value TEXT, verdict TEXT NOT NULL,  -- pass | fail | missing | inconclusive
    detail TEXT NOT NULL, inputs_json TEXT NOT NULL, evaluated_at REAL NOT NULL
);
"""

# version reached -> statements that bring a database of the previous version there. Only additions: an older
# farm's rows keep every column they had, and new columns are nullable (NULL = recorded before they existed).
MIGRATIONS: dict[int, str] = {
    3: """
ALTER TABLE gates ADD COLUMN gate_json TEXT;      -- the gate as declared (baseline, alpha, min_change, ...)
CREATE TABLE IF NOT EXISTS output_diffs (         -- decoded outputs of one bitstream that differ, compared
    run_id TEXT NOT NULL REFERENCES runs(id),
    sequence TEXT NOT NULL, rate_kbps REAL NOT NULL,
    a_sha TEXT NOT NULL, b_sha TEXT NOT NULL,     -- a_sha < b_sha
    frames INTEGER,
    max_abs_diff REAL,                            -- largest |a - b| over every sample of every plane
    psnr_min_db REAL,                             -- worst frame's PSNR-YUV of b against a (capped at 100 dB)
    detail TEXT,                                  -- why they could not be compared (then both values NULL)
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS output_diffs_run ON output_diffs(run_id);
CREATE TABLE IF NOT EXISTS releases (
    tag TEXT NOT NULL, version TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs(id), suite_name TEXT NOT NULL, bundle_digest TEXT NOT NULL,
    evaluation INTEGER NOT NULL,                  -- the gate evaluation the release was granted on
    repo TEXT NOT NULL, commit_sha TEXT NOT NULL,
    manifest_json TEXT NOT NULL, manifest_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL
);
""",
    4: """
ALTER TABLE runs ADD COLUMN controller_host TEXT;   -- the process that runs it now (see farm.store.controller)
ALTER TABLE runs ADD COLUMN controller_pid INTEGER;
ALTER TABLE runs ADD COLUMN controller_start TEXT;  -- BOOT_ID:STARTTIME, so a recycled pid is not the controller
CREATE TABLE IF NOT EXISTS run_attempts (           -- 1 = the original run, 2.. = resumes
    run_id TEXT NOT NULL REFERENCES runs(id), attempt INTEGER NOT NULL,
    controller_host TEXT, controller_pid INTEGER,
    started_at REAL NOT NULL, finished_at REAL,
    status TEXT NOT NULL,                           -- as runs.status, for this attempt
    detail TEXT,                                    -- why it was interrupted, when the store knows
    PRIMARY KEY (run_id, attempt)
);
""",
    5: """
-- several anchors: [{"name", "role", "label", "digest"}, ...], the first the default (anchor_name/anchor_digest
-- keep naming it, so older readers see a single-anchor run). NULL: recorded before schema 5, when the run's one
-- anchor (if any) is anchor_name, its jobs have role 'anchor', and its name is its bundle's.
ALTER TABLE runs ADD COLUMN anchors_json TEXT;
""",
    6: """
CREATE TABLE IF NOT EXISTS frame_quality (          -- per-frame scores of each distinct decoded output, once a run
    run_id TEXT NOT NULL REFERENCES runs(id),
    output_sha TEXT NOT NULL, source_sha TEXT NOT NULL,  -- what the jobs' output_sha and source_sha name
    frame INTEGER NOT NULL,                         -- 0-based display index (frames paired by index)
    psnr_y REAL, psnr_u REAL, psnr_v REAL,          -- dB, capped at 100; NULL = not requested by the suite
    psnr_yuv REAL,                                  -- (6Y+U+V)/8 of this frame
    ssim REAL, vmaf REAL,
    flicker REAL                                    -- 8-bit levels; NULL for frame 0 (no previous frame)
);
CREATE INDEX IF NOT EXISTS frame_quality_output ON frame_quality(run_id, output_sha);
""",
    7: """
-- the controller's last sign of life while the run is running, in epoch seconds of the STORE's clock (SQLite: the
-- writing host's; PostgreSQL: the server's now()), so hosts whose clocks differ compare it in one clock. Lets
-- another host reap a run whose controller died (farm.store.controller STALE_AFTER_S). NULL: written by an older
-- farm, which sends none: such a run is never reaped from another host.
ALTER TABLE runs ADD COLUMN heartbeat_at REAL;
""",
    8: """
CREATE TABLE IF NOT EXISTS job_traces (             -- per-sample series of a job over its decode window
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    series TEXT NOT NULL,                           -- power_w (W) | temp_c (degrees C, hottest thermal zone)
    unit TEXT NOT NULL,
    points INTEGER NOT NULL,                        -- stored points (at most 2000: farm.traces.MAX_POINTS)
    samples INTEGER NOT NULL,                       -- samples in the window before even decimation
    t_json TEXT,                                    -- [s since the decode window's start, device clock], ascending
    v_json TEXT,                                    -- the values at those times; both NULL when missing
    missing_reason TEXT,                            -- why there is no trace (no meter, on the charger, ...)
    UNIQUE (job_id, series)
);
""",
    9: """
-- the idempotency key of the write that stored the row: chosen once per logical write before its first try
-- (PostgresStore), so a try repeated after a COMMIT whose reply was lost finds its row instead of storing it twice
-- (docs/store.md). A gate evaluation's rows carry KEY/0, KEY/1, ... NULL: written without one (SQLite, which never
-- repeats a write, or an older farm). Unique indexes, not lookups: a repeat waits for a try still committing. Partial
-- (keyed rows only), so a row without a key costs no index entry; inserts name the same WHERE (sqlite.py _ONCE).
ALTER TABLE jobs ADD COLUMN write_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_write_key ON jobs(write_key) WHERE write_key IS NOT NULL;
ALTER TABLE run_devices ADD COLUMN write_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS run_devices_write_key ON run_devices(write_key) WHERE write_key IS NOT NULL;
ALTER TABLE run_attempts ADD COLUMN write_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS run_attempts_write_key ON run_attempts(write_key) WHERE write_key IS NOT NULL;
ALTER TABLE run_metrics ADD COLUMN write_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS run_metrics_write_key ON run_metrics(write_key) WHERE write_key IS NOT NULL;
ALTER TABLE gates ADD COLUMN write_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS gates_write_key ON gates(write_key) WHERE write_key IS NOT NULL;
ALTER TABLE output_diffs ADD COLUMN write_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS output_diffs_write_key ON output_diffs(write_key) WHERE write_key IS NOT NULL;
ALTER TABLE releases ADD COLUMN write_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS releases_write_key ON releases(write_key) WHERE write_key IS NOT NULL;
""",
}


def statements(script: str) -> list[str]:
    """Split a DDL script into statements (executescript would commit the migration's transaction early)."""
    out: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    if pending.strip():
        out.append(pending.strip())
    return out


# SQLite type -> PostgreSQL type. REAL is float4 in PostgreSQL (timestamps would lose seconds), INTEGER is int4
# (bitstream bytes and pids may pass 2**31), and AUTOINCREMENT is spelled BIGSERIAL.
_PG_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
)


def postgres_ddl(statement: str) -> str:
    """One statement of SCHEMA or MIGRATIONS in PostgreSQL's dialect (the rest of the DDL is common SQL)."""
    for pattern, replacement in _PG_TYPES:
        statement = pattern.sub(replacement, statement)
    return statement
