"""How much the store grows, and how long a write takes, per 1000 per-frame quality rows (docs/store.md).

Run from the repository root: ``PYTHONPATH=. python3 scripts/frame_quality_size.py [--pg]``. Ten outputs of
1000 frames each are written the way scoring writes them (one ``add_frame_quality`` per output: one executemany
in one transaction), with 64-hex digests and a real-length run id. ``--pg`` also measures a throw-away PostgreSQL
cluster started like the tests' (tests/pg_fixtures.py) and stopped after.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from farm.store import FrameQuality, Store, open_store
from tests.store_fixtures import start

RUN = "20261201-032000-0a1b2c3d"
OUTPUTS = 10


def rows(output: str) -> list[FrameQuality]:
    return [FrameQuality(output, "5" * 64, t, 40.123456 + t / 7, 45.1, 46.2, 41.5, 0.987654, 93.21,
                         None if t == 0 else 1.234567) for t in range(1000)]  # fmt: skip


def write(store: Store) -> list[float]:
    start(store, RUN)
    times = []
    for k in range(OUTPUTS):
        t0 = time.perf_counter()
        store.add_frame_quality(RUN, rows(f"{k:064x}"))
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)


def report(name: str, kib: float, ms: list[float]) -> None:
    print(f"{name}: {kib:.1f} KiB per 1000 frames; write min/median/max {ms[0]:.1f}/{ms[len(ms) // 2]:.1f}/"
          f"{ms[-1]:.1f} ms per 1000 frames ({OUTPUTS} outputs)")  # fmt: skip


def sqlite() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.db"
        store = Store(path)
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = os.path.getsize(path)
        ms = write(store)
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        report("sqlite (file growth, table + index)", (os.path.getsize(path) - before) / OUTPUTS / 1024, ms)


def postgresql() -> None:
    from tests.pg_fixtures import throwaway_cluster

    with throwaway_cluster() as cluster:
        store = open_store(cluster.create_db())
        ms = write(store)
        size = store._db.execute("SELECT pg_total_relation_size('frame_quality')").fetchone()[0]
        report("postgresql (pg_total_relation_size)", size / OUTPUTS / 1024, ms)
        store.close()


if __name__ == "__main__":
    sqlite()
    if "--pg" in sys.argv[1:]:
        postgresql()
