"""The lab store on a real PostgreSQL: a whole `farm run` and the commands that read it, and its failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from farm.cli import app
from farm.metrics.server import start as start_exporter
from farm.release.manifest import results_digests
from farm.store import SCHEMA_VERSION, FrameQuality, Measurement, Store, StoreError, open_store
from farm.store.postgres import PostgresStore, redact
from farm.store.schema import MIGRATIONS, SCHEMA, postgres_ddl, statements
from tests.conftest import ROOT, wait_for
from tests.pg_fixtures import PgCluster, _free_port
from tests.store_fixtures import JOB, start
from tests.support.runs import bundle_args, farm, suite


def _farm(url: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"FARM_STORE": url, "FARM_INVENTORY": str(ROOT / "devices.yaml"), "FARM_STATE": str(tmp_path / "state")}
    res = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return res.exit_code, res.output


@pytest.mark.slow
def test_a_run_on_postgresql_then_runs_report_gate_compare_and_release_use_it(pg_url: str, tmp_path: Path) -> None:
    code, output = _farm(pg_url, tmp_path, "run", suite(tmp_path), *bundle_args(), "--json", str(tmp_path / "r.json"))
    assert code == 0, output
    run_id = json.loads((tmp_path / "r.json").read_text())["run"]["id"]
    store = open_store(pg_url, readonly=True)
    assert store.run(run_id)["status"] == "complete" and len(store.jobs(run_id)) > 0
    code, output = _farm(pg_url, tmp_path, "runs")
    assert code == 0 and run_id in output, output
    assert "postgresql://postgres@127.0.0.1" in output  # the store is named, as a URL
    code, output = _farm(pg_url, tmp_path, "report", run_id[:12])
    assert code == 0 and run_id in output, output
    code, output = _farm(pg_url, tmp_path, "gate", run_id)
    assert code == 0, output
    assert [r["evaluation"] for r in open_store(pg_url).gate_verdicts(run_id)][:1] == [2]
    code, output = _farm(pg_url, tmp_path, "compare", run_id, run_id)
    assert code == 0, output
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["config", "user.name", "Bot"], ["config", "user.email", "bot@example.invalid"],
                 ["commit", "-q", "--allow-empty", "-m", "codec"]):  # fmt: skip
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    code, output = _farm(pg_url, tmp_path, "release", "tag", "v1.0.0", "--run", run_id, "--repo", str(repo),
                         *bundle_args()[:2])  # fmt: skip
    assert code == 0, output
    code, output = _farm(pg_url, tmp_path, "release", "verify", "v1.0.0", "--repo", str(repo), *bundle_args()[:2])
    assert code == 0 and "ok: v1.0.0" in output, output


def test_a_database_that_is_down_exits_3_naming_it_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://farm:s3cret@127.0.0.1:{_free_port()}/farm"
    with pytest.raises(StoreError) as info:
        open_store(url)
    assert info.value.exit_code == 3 and "s3cret" not in str(info.value)
    code, output = _farm(url, tmp_path, "runs")
    assert code == 3, output
    assert f"postgresql://farm@127.0.0.1:{url.split(':')[3].split('/')[0]}/farm" in output
    assert "cannot reach the PostgreSQL store" in output and "s3cret" not in output


def test_redact_keeps_user_host_and_database_only() -> None:
    assert redact("postgresql://farm:pw@db.lab:5433/farm") == "postgresql://farm@db.lab:5433/farm"
    assert redact("postgresql://farm@db.lab/farm") == "postgresql://farm@db.lab/farm"


def test_a_reader_of_a_database_without_a_store_is_told_to_migrate(pg_cluster: PgCluster) -> None:
    url = pg_cluster.create_db()
    with pytest.raises(StoreError, match="farm store migrate") as info:
        open_store(url, readonly=True)
    assert info.value.exit_code == 3


def _filled_sqlite(path: Path) -> Store:
    store = Store(path)
    for run_id in ("r1", "r2"):
        start(store, run_id)
        for repeat in range(3):
            ms = [
                Measurement("fps", 30.0 + repeat, "fps", "steady"),
                Measurement("power_w", None, "W", "c", "no meter"),
            ]
            store.add_job(run_id, JOB | {"repeat": repeat, "frame_times_ns": [1, 2, 3]}, ms)
        store.add_device(run_id, "d", "linux", "x86_64", ["local"], {"kernel": "6"}, "ok", None)
        store.add_run_metric(run_id, "d", "bd_rate.psnr_yuv", -3.25, "%", "pchip", "detail")
        store.add_output_diff(run_id, "s", 100.0, "b" * 64, "a" * 64, 3, 2.0, 80.0, None)
        if run_id == "r1":  # per-frame rows (schema 6) are copied and verified with the rest; r2 has none
            store.add_frame_quality(run_id, [FrameQuality("o", "s", t, 40.0, flicker=t or None) for t in range(3)])
        verdict = {"gate_index": 0, "metric": "fps", "op": ">=", "threshold": 1, "scope": "each", "scope_key": "d",
                   "stat": "median", "value": 31.0, "verdict": "pass", "detail": "", "inputs": {"v": [1]}}  # fmt: skip
        store.add_gate_evaluation(run_id, [verdict])
        store.finish_run(run_id, "complete", {"jobs": 3})
    store.add_release(tag="v1", version="v1", run_id="r1", suite_name="s", bundle_digest="x", evaluation=1,
                      repo="/r", commit_sha="c", manifest_json="{}", manifest_sha256="m")  # fmt: skip
    return store


def test_store_copy_moves_every_run_into_postgresql_verified_and_is_idempotent(pg_url: str, tmp_path: Path) -> None:
    source = _filled_sqlite(tmp_path / "r.db")
    want = {run_id: results_digests(source, run_id) for run_id in ("r1", "r2")}
    source_frames = source.frame_quality("r1")
    source.close()
    code, output = _farm(pg_url, tmp_path, "store", "copy", str(tmp_path / "r.db"), pg_url)
    assert code == 0 and "2 run(s)" in output and "verified" in output, output
    lab = open_store(pg_url)
    assert {run_id: results_digests(lab, run_id) for run_id in ("r1", "r2")} == want
    assert [r["tag"] for r in lab.releases()] == ["v1"] and lab.gate_verdicts("r2")[0]["verdict"] == "pass"
    assert [a.status for a in lab.attempts("r1")] == ["complete"]
    assert lab.frame_quality("r1") == source_frames and lab.frame_quality("r2") == []
    start(lab, "r3")  # new jobs get ids after the copied ones
    assert lab.add_job("r3", JOB, []) == 7
    code, output = _farm(pg_url, tmp_path, "store", "copy", str(tmp_path / "r.db"), pg_url)
    assert code == 0 and output.count("already there, identical") == 2, output


def test_store_migrate_creates_the_schema_of_a_new_database(pg_cluster: PgCluster, tmp_path: Path) -> None:
    url = pg_cluster.create_db()
    code, output = _farm(url, tmp_path, "store", "migrate")
    assert code == 0 and f"is at store schema {SCHEMA_VERSION}" in output, output
    assert open_store(url, readonly=True).runs() == []


def test_writers_reconnect_when_the_database_restarts_mid_run_and_lose_no_job(pg_cluster: PgCluster) -> None:
    url = pg_cluster.create_db()
    store = open_store(url)
    start(store)
    errors: list[Exception] = []

    def record(device: str) -> None:  # as the recorder does, from the device sessions' threads
        try:
            for repeat in range(30):
                store.add_job(
                    "r1", JOB | {"device_id": device, "repeat": repeat}, [Measurement("fps", 1.0, "fps", "c")]
                )
                time.sleep(0.02)
        except Exception as exc:  # the test reports whatever a writer met
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(f"d{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.15)
    pg_cluster.restart()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and store.reconnects >= 1
    assert len(store.completed_job_keys("r1")) == 60 and len(store.measurements("r1")) == 60
    assert len(store.jobs("r1")) == 60  # each job once, none twice


def test_a_database_that_stays_down_fails_the_write_naming_it_after_the_bound(pg_cluster: PgCluster) -> None:
    url = pg_cluster.create_db()
    store = PostgresStore(url, reconnect_s=1.0)
    start(store)
    pg_cluster.stop()
    try:
        began = time.monotonic()
        with pytest.raises(StoreError, match=r"lost the PostgreSQL store postgresql://postgres@127\.0\.0\.1:\d+/t_\w+ "
                           "during add_job and could not reconnect within 1 s") as info:  # fmt: skip
            store.add_job("r1", JOB, [])
        assert info.value.exit_code == 3 and 0.9 < time.monotonic() - began < 15
    finally:
        pg_cluster.start()
    assert store.add_job("r1", JOB, []) > 0  # and it comes back once the database does


@pytest.mark.slow
def test_serve_over_postgresql_exports_what_it_exports_over_sqlite(pg_url: str, tmp_path: Path) -> None:
    """The exporter's PostgreSQL statements (DISTINCT ON, no rowid) give the same families as SQLite's."""
    code, output = farm(tmp_path, "run", suite(tmp_path), *bundle_args())
    assert code == 0, output
    sqlite_file = tmp_path / "state" / "results.db"
    code, output = _farm(pg_url, tmp_path, "store", "copy", str(sqlite_file), pg_url)
    assert code == 0, output
    scraped = {}
    for name, target in (("sqlite", str(sqlite_file)), ("postgresql", pg_url)):
        exporter = start_exporter(target, [], tmp_path / name, port=0)
        try:
            with urllib.request.urlopen(exporter.url, timeout=30) as resp:
                scraped[name] = sorted(line for line in resp.read().decode().splitlines() if line.startswith("farm_"))
        finally:
            exporter.stop()
    assert any('role="test"' in line for line in scraped["postgresql"]), scraped["postgresql"]
    assert scraped["postgresql"] == scraped["sqlite"]


def test_an_older_lab_store_is_upgraded_only_by_farm_store_migrate(pg_cluster: PgCluster, tmp_path: Path) -> None:
    url = pg_cluster.create_db()
    with psycopg.connect(url, autocommit=True) as db:  # the store as a farm of schema 3 left it
        for statement in [*statements(SCHEMA), *statements(MIGRATIONS[3])]:
            db.execute(postgres_ddl(statement))
        db.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    with pytest.raises(StoreError, match="farm store migrate") as info:
        open_store(url)
    assert info.value.exit_code == 3
    code, output = _farm(url, tmp_path, "runs")
    assert code == 3 and "has schema 3" in output, output
    code, output = _farm(url, tmp_path, "store", "migrate")
    assert code == 0 and f"at store schema {SCHEMA_VERSION}" in output, output
    start(open_store(url), "after")  # schema 4's controller columns and attempts exist now
    assert [a.attempt for a in open_store(url, readonly=True).attempts("after")] == [1]


@pytest.mark.slow
def test_a_farm_run_survives_a_database_restart_mid_run_with_every_job_stored(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    url = pg_cluster.create_db()
    open_store(url).close()
    env = os.environ | {"PYTHONPATH": str(ROOT), "FARM_STORE": url, "FARM_STATE": str(tmp_path / "state"),
                        "FARM_INVENTORY": str(ROOT / "devices.yaml")}  # fmt: skip
    argv = [sys.executable, "-m", "farm", "run", suite(tmp_path), *bundle_args(), "--json", str(tmp_path / "r.json")]
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def jobs_stored() -> int:
        with psycopg.connect(url) as db:
            row = db.execute("SELECT COUNT(*) FROM jobs").fetchone()
        return int(row[0]) if row else 0

    assert wait_for(lambda: jobs_stored() >= 1, 120), proc.communicate()[0]
    pg_cluster.restart()
    at_restart = jobs_stored()
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    run_id = json.loads((tmp_path / "r.json").read_text())["run"]["id"]
    store = open_store(url, readonly=True)
    planned = json.loads(store.run(run_id)["plan_json"])
    jobs = store.jobs(run_id)
    assert store.run(run_id)["status"] == "complete" and jobs_stored() == len(jobs)
    keys = [(j["device_id"], j["role"], j["sequence"], j["rate_kbps"], j["repeat"]) for j in jobs]
    assert len(keys) == len(set(keys)), "a job was stored twice"
    assert planned and len(jobs) >= 12  # 4 rates x 2 repeats of the test bundle, 4 anchor decodes
    assert at_restart < len(jobs), "the restart came after the last job: nothing was tested"


def test_a_real_prometheus_scrapes_farm_serve_over_postgresql(pg_url: str, tmp_path: Path) -> None:
    """A lab's Prometheus reads the lab store through `farm serve`: the run's frame rate arrives in Prometheus."""
    from tests.prom_fixtures import Prometheus, Serve

    code, output = _farm(pg_url, tmp_path, "run", suite(tmp_path), *bundle_args())
    assert code == 0, output
    inventory = tmp_path / "devices.yaml"
    inventory.write_text("devices: []\n")
    serve = Serve(pg_url, inventory, tmp_path / "serve.log")  # a URL where the fixture takes a path: str() of it
    try:
        prom = Prometheus(tmp_path / "prom", {"farm": [serve.address]})
        try:
            assert wait_for(lambda: bool(prom.query('farm_decode_frames_per_second{role="test"}')), 30), (
                serve.log.read_text()
            )
            fps = prom.values('farm_decode_frames_per_second{role="test"}')
            assert fps and all(v > 0 for v in fps.values()) and all(("suite", "tiny") in k for k in fps)
        finally:
            prom.stop()
    finally:
        serve.stop()
