"""What the idempotency key adds to recording a job on PostgreSQL (docs/store.md "Each write stored once").

Run from the repository root: ``PYTHONPATH=. python3 scripts/write_key_cost.py``. In one process and one database
of a throw-away cluster (started like bench/bench_store.py's: fsync on, synchronous_commit off), blocks of 100
jobs of 30 measurements are recorded alternately through ``PostgresStore.add_job`` (which draws a key and writes
it under the partial unique index) and through the same SQL with the key NULL (``Store.add_job`` called on the
PostgreSQL store directly: no key, no index entry, no retry wrapper). 10 blocks each, interleaved, so the load of
this shared machine hits both alike. Prints min/median/max ms per job and the ratio of the medians.
"""

from __future__ import annotations

import statistics
import time

from farm.measures import Measurement
from farm.store import Store, open_store
from tests.pg_fixtures import throwaway_cluster
from tests.store_fixtures import JOB, start

BLOCKS, JOBS = 10, 100
MEASUREMENTS = [Measurement(f"m{i}", float(i), "u", "c") for i in range(30)]


def block(store: Store, keyed: bool, first: int) -> float:
    """Milliseconds per job over one block of JOBS jobs."""
    add = store.add_job if keyed else lambda *a: Store.add_job(store, *a)
    began = time.perf_counter()
    for i in range(first, first + JOBS):
        add("bench", JOB | {"repeat": i, "frame_times_ns": list(range(100))}, MEASUREMENTS)
    return (time.perf_counter() - began) / JOBS * 1000


def main() -> None:
    with throwaway_cluster("-c fsync=on -c synchronous_commit=off -c shared_buffers=128MB") as cluster:
        store = open_store(cluster.create_db())
        start(store, "bench")
        times: dict[bool, list[float]] = {True: [], False: []}
        for b in range(BLOCKS):
            for keyed in (True, False) if b % 2 == 0 else (False, True):
                times[keyed].append(block(store, keyed, len(times[True] + times[False]) * JOBS))
        store.close()
    print(f"PostgreSQL on loopback, {cluster.settings}; {BLOCKS} x {JOBS} jobs of 30 measurements each way")
    for keyed, label in ((True, "with a key"), (False, "key NULL")):
        t = times[keyed]
        print(f"{label:<11} per job ms: min {min(t):.3f}  median {statistics.median(t):.3f}  max {max(t):.3f}")
    print(f"with a key / key NULL (median): {statistics.median(times[True]) / statistics.median(times[False]):.3f}")


if __name__ == "__main__":
    main()
