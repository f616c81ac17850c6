"""Recording results: the lab's PostgreSQL store vs the embedded SQLite one, through the same ``Store`` methods.

What the recorder does in a run: one ``add_job`` per finished decode, each with its measurements (30 here) and its
traces (``--trace-points`` power samples and half as many temperature samples: 600 is a 10 Hz sampler over a 60 s
decode; 0 records none, as a farm before schema 8 did), in its own transaction. SQLite writes a local file;
PostgreSQL pays a round trip per statement to a server. Both are run interleaved (SQLite, PostgreSQL, SQLite, ...)
so machine load hits both alike, each repeat into a new store. The peer: a throw-away PostgreSQL cluster on
loopback started here (Debian's server, as in the tests), fsync on and synchronous_commit off, which is the
durability SQLite's WAL with synchronous=NORMAL gives (a crash of the process loses nothing committed; a power cut
may lose the last commits). ``--url`` uses a server of yours instead.

Target: a job recorded on PostgreSQL in under 5 ms (median). A decode takes seconds, so below that the store
is never what a run waits on, whatever the ratio to SQLite.

    python3 bench/bench_store.py [--jobs 500] [--repeats 5] [--trace-points 600] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farm.measures import Measurement  # noqa: E402
from farm.store import Store, open_store  # noqa: E402
from farm.traces import POWER, TEMP, Trace, bounded  # noqa: E402
from tests.pg_fixtures import pg_bin, throwaway_cluster  # noqa: E402
from tests.store_fixtures import JOB, start  # noqa: E402

MEASUREMENTS = [Measurement(f"m{i}", float(i), "u", "c") for i in range(30)]
TARGET_MS = 5.0


def traces(points: int) -> tuple[Trace, ...]:
    """A job's power trace of ``points`` samples (watts varying as a real one does) and a temperature trace."""
    if points <= 0:
        return ()
    power = bounded(POWER, [(i * 0.1, 2.0 + 0.37 * ((i * 7919) % 101) / 101) for i in range(points)])
    temp = bounded(TEMP, [(i * 0.2, 45.0 + i * 0.013) for i in range(max(1, points // 2))])
    return power, temp


def record(store: Store, jobs: int, points: int) -> float:
    """Seconds to record ``jobs`` jobs of 30 measurements and their traces, one transaction each (the run row
    not counted)."""
    start(store, "bench")
    series = traces(points)
    began = time.perf_counter()
    for i in range(jobs):
        store.add_job("bench", JOB | {"repeat": i, "frame_times_ns": list(range(100))}, MEASUREMENTS, series)
    took = time.perf_counter() - began
    store.close()
    return took


def spread(name: str, times: list[float], jobs: int) -> str:
    per = [t / jobs * 1000 for t in times]
    return f"{name:<10} per job ms: min {min(per):.3f}  median {statistics.median(per):.3f}  max {max(per):.3f}"


def run(args: argparse.Namespace, new_pg: Callable[[], str], tmp: Path) -> int:
    sqlite_t: list[float] = []
    pg_t: list[float] = []
    for i in range(args.repeats):
        sqlite_t.append(record(open_store(tmp / f"r{i}.db"), args.jobs, args.trace_points))
        pg_t.append(record(open_store(new_pg()), args.jobs, args.trace_points))
    print(f"recording {args.jobs} jobs x 30 measurements + traces of {args.trace_points} power and "
          f"{args.trace_points // 2} temperature points, {args.repeats} interleaved repeats")  # fmt: skip
    print(spread("sqlite", sqlite_t, args.jobs))
    print(spread("postgresql", pg_t, args.jobs))
    ratio = statistics.median(pg_t) / statistics.median(sqlite_t)
    print(f"ratio postgresql/sqlite (time, median): {ratio:.2f}")
    pg_ms = statistics.median(pg_t) / args.jobs * 1000
    verdict = "PASS" if pg_ms < TARGET_MS else "FAIL"
    print(f"target: a job recorded on PostgreSQL (median) < {TARGET_MS} ms -> {pg_ms:.3f} ms: {verdict}")
    return 0 if verdict == "PASS" else 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trace-points", type=int, default=600, help="power samples per job (0: no traces)")
    parser.add_argument("--url", help="a PostgreSQL server to use (one new database per repeat is made there)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.url:
            print(f"peer: {args.url.split('@')[-1]} (your server, its own settings)")
            sys.exit(run(args, lambda: args.url, tmp))
        if not (pg_bin() / "initdb").exists():
            sys.exit(f"{pg_bin()}/initdb not found: install the Debian postgresql package (scripts/system-deps)")
        with throwaway_cluster("-c fsync=on -c synchronous_commit=off -c shared_buffers=128MB") as cluster:
            print(f"peer: PostgreSQL {pg_bin().parent.name} on 127.0.0.1:{cluster.port}, {cluster.settings}; "
                  "sqlite: WAL, synchronous=NORMAL, on the same disk")  # fmt: skip
            code = run(args, cluster.create_db, tmp)
    sys.exit(code)


if __name__ == "__main__":
    main()
