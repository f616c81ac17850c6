"""What storing one job's traces costs in each layout weighed for ``job_traces`` (docs/decisions.md).

Run from the repository root: ``PYTHONPATH=. python3 scripts/trace_layout_cost.py``. Per job, 600 power and 300
temperature points (a 10 Hz sampler over a 60 s decode) are written in one transaction, 5 x 100 jobs, interleaved:
(a) the layout kept, one row per job and series with the points as two JSON arrays; (b) the alternative, one row
per sample (job_id, series, t_s, value), inserted with one executemany. On a SQLite file in a temporary folder and
on a throw-away PostgreSQL cluster started like the tests' (fsync on, synchronous_commit off as in
bench/bench_store.py). Prints min/median/max ms per job and the bytes each layout takes on disk per job (SQLite).
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from farm.store import open_store
from tests.pg_fixtures import throwaway_cluster

REPEATS, JOBS = 5, 100
POWER = [(i * 0.1, 2.0 + 0.37 * ((i * 7919) % 101) / 101) for i in range(600)]
TEMP = [(i * 0.2, 45.0 + i * 0.013) for i in range(300)]
DDL = {
    "arrays": "CREATE TABLE t_arrays (job_id INTEGER, series TEXT, t_json TEXT, v_json TEXT)",
    "rows": "CREATE TABLE t_rows (job_id INTEGER, series TEXT, t_s REAL, value REAL)",
}


def write(db: Any, layout: str, job: int) -> None:
    db.execute("BEGIN IMMEDIATE")
    series = (("power_w", POWER), ("temp_c", TEMP))
    if layout == "arrays":
        rows = [(job, name, json.dumps([round(t, 4) for t, _ in pts]), json.dumps([v for _, v in pts]))
                for name, pts in series]  # fmt: skip
        db.executemany("INSERT INTO t_arrays VALUES (?,?,?,?)", rows)
    else:
        db.executemany("INSERT INTO t_rows VALUES (?,?,?,?)", [(job, n, t, v) for n, pts in series for t, v in pts])
    db.execute("COMMIT")


def main() -> None:
    with (
        throwaway_cluster("-c synchronous_commit=off") as cluster,
        tempfile.TemporaryDirectory(prefix="farm-traces-") as t,
    ):
        tmp = Path(t)
        for name, target in (("sqlite (WAL)", str(tmp / "r.db")), ("postgresql 15, loopback", cluster.create_db())):
            db = open_store(target)._db  # the store's own connection (and, for PostgreSQL, its SQL adapter)
            for ddl in DDL.values():
                db.execute(ddl.replace("REAL", "DOUBLE PRECISION") if "postgres" in name else ddl)
            ms: dict[str, list[float]] = {k: [] for k in DDL}
            for r in range(REPEATS):
                for layout in DDL:
                    t0 = time.perf_counter()
                    for j in range(JOBS):
                        write(db, layout, r * JOBS + j)
                    ms[layout].append((time.perf_counter() - t0) / JOBS * 1000)
            for layout, v in ms.items():
                print(f"{name} {layout:<6}: ms per job, {REPEATS} x {JOBS}: min {min(v):.3f} median "
                      f"{statistics.median(v):.3f} max {max(v):.3f}")  # fmt: skip
        for layout in DDL:
            one = sqlite3.connect(tmp / f"{layout}.db")
            one.execute(DDL[layout])
            for j in range(JOBS):
                write(one, layout, j)
            one.execute("VACUUM")
            one.close()
            size = (tmp / f"{layout}.db").stat().st_size
            print(f"sqlite file, {layout:<6}: {size / JOBS / 1024:.1f} KiB per job")


if __name__ == "__main__":
    main()
