"""The lab store on a real PostgreSQL: a whole `farm run` and the commands that read it, and its failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm.cli import app
from farm.store import StoreError, open_store
from farm.store.postgres import redact
from tests.conftest import ROOT
from tests.pg_fixtures import PgCluster, _free_port
from tests.support.runs import bundle_args, suite


def _farm(url: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"FARM_STORE": url, "FARM_INVENTORY": str(ROOT / "devices.yaml"), "FARM_STATE": str(tmp_path / "state")}
    res = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return res.exit_code, res.output


@pytest.mark.slow
def test_a_run_on_postgresql_then_runs_report_and_gate_read_it(pg_url: str, tmp_path: Path) -> None:
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
