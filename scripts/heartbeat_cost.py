"""What one heartbeat of a running run costs the store (docs/store.md "Runs whose controller died").

Run from the repository root: ``PYTHONPATH=. python3 scripts/heartbeat_cost.py``. A run is started, then
``Store.heartbeat`` is called 5 x 200 times (the controller calls it once every 30 s), on a SQLite file in a
temporary folder and on a throw-away PostgreSQL cluster started like the tests' (tests/pg_fixtures.py, fsync on,
synchronous_commit off as in bench/bench_store.py) and stopped after. Prints min/median/max ms per beat.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from farm.store import open_store
from tests.pg_fixtures import throwaway_cluster
from tests.store_fixtures import start

REPEATS, BEATS = 5, 200


def cost(target: str) -> list[float]:
    store = open_store(target)
    start(store)
    out = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(BEATS):
            assert store.heartbeat("r1")
        out.append((time.perf_counter() - t0) / BEATS * 1000)
    store.close()
    return out


def main() -> None:
    with (
        throwaway_cluster("-c synchronous_commit=off") as cluster,
        tempfile.TemporaryDirectory(prefix="farm-beat-") as t,
    ):
        tmp = Path(t)
        for name, target in (("sqlite (WAL)", str(tmp / "r.db")), ("postgresql 15, loopback", cluster.create_db())):
            ms = cost(target)
            print(f"{name}: ms per heartbeat, {REPEATS} x {BEATS}: min {min(ms):.3f} median "
                  f"{statistics.median(ms):.3f} max {max(ms):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
