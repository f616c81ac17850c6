"""Copy every run of one store into another (a machine's SQLite file into the lab's PostgreSQL), verified.

Rows are copied as they are, job ids included: a release manifest holds a digest over the run's rows (job ids
and measurement job ids among them), so only an identical copy lets `farm release verify` pass on the lab's
store. The copy of a run is one transaction, and is then checked by recomputing that same digest
(farm.release.manifest ``results_digests``) on both sides. A run already in the destination with the same
digest is skipped, so a copy can be run again after an interruption; one that differs is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from farm.release.manifest import results_digests
from farm.store.errors import StoreError
from farm.store.sqlite import Store

# table -> how to select one run's rows, in the order they were inserted (jobs before their measurements)
_TABLES: dict[str, str] = {
    "runs": "SELECT * FROM runs WHERE id=?",
    "run_attempts": "SELECT * FROM run_attempts WHERE run_id=? ORDER BY attempt",
    "run_devices": "SELECT * FROM run_devices WHERE run_id=? ORDER BY rowid",
    "jobs": "SELECT * FROM jobs WHERE run_id=? ORDER BY id",
    "measurements": "SELECT m.* FROM measurements m JOIN jobs j ON j.id=m.job_id WHERE j.run_id=? ORDER BY m.rowid",
    "job_traces": "SELECT t.* FROM job_traces t JOIN jobs j ON j.id=t.job_id WHERE j.run_id=? ORDER BY t.rowid",
    "run_metrics": "SELECT * FROM run_metrics WHERE run_id=? ORDER BY rowid",
    "gates": "SELECT * FROM gates WHERE run_id=? ORDER BY evaluation, gate_index, rowid",
    "output_diffs": "SELECT * FROM output_diffs WHERE run_id=? ORDER BY rowid",
    "frame_quality": "SELECT * FROM frame_quality WHERE run_id=? ORDER BY output_sha, source_sha, frame",
    "releases": "SELECT * FROM releases WHERE run_id=? ORDER BY rowid",
}


@dataclass(frozen=True)
class CopiedRun:
    run_id: str
    rows: int  # 0 when the run was already there, identical
    digest: str  # results_digests(...)["all"], equal on both sides


def copy_store(source: Store, dest: Store) -> list[CopiedRun]:
    """Copy every run of ``source`` into ``dest``, oldest first; raise StoreError on the first that differs."""
    with source._reading() as db:
        run_ids = [str(r[0]) for r in db.execute("SELECT id FROM runs ORDER BY started_at, id").fetchall()]
    return [_copy_run(source, dest, run_id) for run_id in run_ids]


def _copy_run(source: Store, dest: Store, run_id: str) -> CopiedRun:
    want = results_digests(source, run_id)["all"]
    if dest.run(run_id) is not None:
        if results_digests(dest, run_id)["all"] != want:
            raise StoreError(dest.where, f"run {run_id} is already in {dest.where} with other results; not copied")
        return CopiedRun(run_id, 0, want)
    with source._reading() as db:
        tables = {name: [dict(zip(r.keys(), r, strict=True)) for r in db.execute(sql, (run_id,))]
                  for name, sql in _TABLES.items()}  # fmt: skip
    rows = _insert(dest, run_id, tables)
    got = results_digests(dest, run_id)["all"]
    if got != want:
        raise StoreError(dest.where, f"run {run_id} copied to {dest.where} does not verify: digest {got} != {want}")
    return CopiedRun(run_id, rows, want)


def _insert(dest: Store, run_id: str, tables: dict[str, list[dict[str, Any]]]) -> int:
    job_ids = [int(j["id"]) for j in tables["jobs"]]
    count = 0
    with dest._tx(f"copying run {run_id}") as db:
        if job_ids:
            marks = ",".join("?" * len(job_ids))
            taken = db.execute(f"SELECT COUNT(*) FROM jobs WHERE id IN ({marks})", job_ids).fetchone()[0]
            if taken:
                raise StoreError(
                    dest.where, f"{dest.where} already holds job ids of run {run_id} (from other runs): a copy "
                    "keeps job ids so release digests still verify; copy into a new store instead",
                )  # fmt: skip
        for table, rows in tables.items():
            for row in rows:
                cols = ", ".join(row)
                db.execute(f"INSERT INTO {table}({cols}) VALUES ({','.join('?' * len(row))})", list(row.values()))
                count += 1
        dest._after_copy(db)
    return count
