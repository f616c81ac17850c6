"""``farm serve`` as a real process, and ``--pushgateway`` failures that must cost no run or no result."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm.cli import app
from farm.errors import InfraError, InputError
from farm.metrics.push import check_url, group_path, push_run
from farm.store import Store
from tests.conftest import ROOT, wait_for, write
from tests.prom_fixtures import Serve, free_port
from tests.test_metrics import Farm, parse

LOCAL_INVENTORY = "devices:\n  - id: local\n    platform: linux\n    transport: {kind: local}\n    target: auto\n"


def farm_cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def test_serve_exports_the_store_and_health_on_loopback_and_stops_on_sigterm(tmp_path: Path) -> None:
    farm = Farm(tmp_path / "results.db")
    run = farm.start()
    farm.job(run, fps=42.0)
    farm.finish(run)
    inventory = write(tmp_path / "devices.yaml", LOCAL_INVENTORY)
    serve = Serve(farm.path, inventory, tmp_path / "serve.log", "--poll-interval", "1")
    try:
        assert serve.url.startswith("http://127.0.0.1:")  # never opened to the network unless asked
        assert wait_for(lambda: "farm_device_up" in parse(serve.scrape()), seconds=10)
        got = parse(serve.scrape())
        assert got["farm_device_up"] == {(("device", "local"),): 1.0}
        assert [v for labels, v in got["farm_decode_frames_per_second"].items()] == [42.0]
        # a run finishing while the exporter runs shows up on the next scrape
        newer = farm.start()
        farm.job(newer, fps=43.0)
        farm.finish(newer)
        assert list(parse(serve.scrape())["farm_decode_frames_per_second"].values()) == [43.0]
    finally:
        code = serve.stop()
    assert code == 0, serve.log.read_text()


def test_serve_on_a_port_in_use_exits_3(tmp_path: Path) -> None:
    inventory = write(tmp_path / "devices.yaml", LOCAL_INVENTORY)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run(
            [sys.executable, "-m", "farm", "serve", "--port", str(port), "--store", str(tmp_path / "r.db"),
             "--inventory", str(inventory)],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
    assert res.returncode == 3 and f"cannot listen on 127.0.0.1:{port}" in res.stderr


def test_serve_refuses_bad_input_with_exit_2(tmp_path: Path) -> None:
    bad = write(tmp_path / "devices.yaml", LOCAL_INVENTORY + "    power: {sysfs_root: sys}\n")
    code, out = farm_cli("serve", "--inventory", str(bad), "--store", str(tmp_path / "r.db"))
    assert code == 2 and f"{bad}:6: devices[0].power.sysfs_root" in out
    good = write(tmp_path / "ok.yaml", LOCAL_INVENTORY)
    for interval in ("0.5", "7200"):
        code, out = farm_cli("serve", "--inventory", str(good), "--poll-interval", interval)
        assert code == 2 and "--poll-interval" in out


@pytest.mark.parametrize(
    "url", ["localhost:9091", "ftp://gw:9091", "http://", "http://gw:notaport", "http://gw:9091/?x=1", "gw"]
)
def test_malformed_pushgateway_urls_are_input_errors(url: str) -> None:
    with pytest.raises(InputError):
        check_url(url)


def test_a_malformed_pushgateway_url_exits_2_before_anything_runs(tmp_path: Path) -> None:
    store = tmp_path / "results.db"
    code, out = farm_cli(
        "run", str(ROOT / "suites/smoke.yaml"), "--bundle", str(ROOT / "examples/bundles/av1-svt"),
        "--store", str(store), "--pushgateway", "pushgateway:9091",
    )  # fmt: skip
    assert code == 2 and "--pushgateway 'pushgateway:9091' is not an http:// or https:// URL" in out
    assert not store.exists() or not Store(store).runs()


def test_a_push_to_nowhere_is_an_infrastructure_error(tmp_path: Path) -> None:
    farm = Farm(tmp_path / "results.db")
    run = farm.start()
    farm.job(run, fps=1.0)
    farm.finish(run)
    with pytest.raises(InfraError, match="cannot push to Pushgateway"):
        push_run(farm.path, run, f"http://127.0.0.1:{free_port()}", timeout_s=5)


def test_the_group_path_is_the_one_a_ci_job_deletes() -> None:
    assert group_path("smoke", "av1-svt") == "/metrics/job/codec-farm/suite/smoke/bundle/av1-svt"
