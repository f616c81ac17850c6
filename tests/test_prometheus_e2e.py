"""The whole path on a real Prometheus: two real runs (this machine and the virtual SSH boards), ``farm serve``
as its own process, Prometheus scraping it every second with the alert rules loaded, and every panel query of
every dashboard sent to Prometheus's HTTP API.

Slow (about half a minute), kept in the default run: it is the only proof that exporter, dashboards and
alerts fit together.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from farm.cluster.metrics import AgentCollector, DeviceState
from farm.sim.fleet import Fleet
from farm.store import Store
from tests.conftest import ROOT, wait_for, write
from tests.prom_fixtures import PROMTOOL, Prometheus, Serve
from tests.support.onnx_models import bundle_with_model
from tests.support.runs import TINY_SUITE, bundle_args, farm

pytestmark = pytest.mark.slow

DASHBOARDS = ROOT / "dashboards"
GATES = """  - {metric: fps, op: ">=", value: 1}
  - {metric: failures, op: "==", value: 0, scope: all}
  - {metric: energy_per_frame_j, op: "<=", value: 100}
  - {metric: fps, op: ">=", value: 1.0e+12, scope: "tag:sim"}"""
GRAFANA_BUILTINS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


@dataclass
class Stack:
    prometheus: Prometheus
    serve: Serve
    store: Store
    runs: list[str]


@pytest.fixture(scope="module")
def stack(ssh_fleet: Fleet, phone_fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prom-e2e")
    # this machine, with no power meter (power must then be absent), a thermal zone and a battery made of files
    zone = write(tmp / "sys" / "thermal_zone0" / "temp", "61500\n")
    supply = tmp / "sys" / "class" / "power_supply" / "BAT0"
    for name, value in (("type", "Battery"), ("capacity", "73"), ("status", "Discharging")):
        write(supply / name, value + "\n")
    inventory = yaml.safe_load(ssh_fleet.inventory_path.read_text())
    local = yaml.safe_load((ROOT / "devices.yaml").read_text())["devices"][0]
    local |= {"power": {"meter": "none", "sysfs_root": str(tmp / "sys")}, "thermal": {"zones": [str(zone)]}}
    inventory["devices"] += [*yaml.safe_load(phone_fleet.inventory_path.read_text())["devices"], local]
    inv = write(tmp / "devices.yaml", yaml.safe_dump(inventory))
    text = TINY_SUITE.format(gates=GATES).replace("power: {baseline_s: 0}", "power: {baseline_s: 0.5, sample_hz: 20}")
    suite = write(tmp / "tiny.yaml", text)
    store_path = tmp / "state" / "results.db"
    Store(store_path).close()
    serve = Serve(store_path, inv, tmp / "serve.log", "--poll-interval", "1")
    agent, _ = start_http_server(0, addr="127.0.0.1", registry=_agent_registry())
    prometheus = None
    try:
        targets = {"codec-farm": [serve.address], "farm-agent": [f"127.0.0.1:{agent.server_address[1]}"]}
        prometheus = Prometheus(tmp / "prometheus", targets, rule_files=[DASHBOARDS / "alerts.yml"])
        runs = []
        bundle = bundle_with_model(tmp)  # av1-svt declaring a decoder model: the complexity panel has data
        for _ in range(2):  # two runs, so the counters grow while Prometheus watches
            code, out = farm(
                tmp, "run", str(suite), *bundle_args(bundle), "--inventory", str(inv), "--store", str(store_path)
            )
            assert code == 1, out  # the deliberately impossible fps gate on the boards
            runs.append(out.split("run ")[-1].split(":")[0])
        returned = time.time()  # the second run's process has exited: its gate evaluation is stored
        store = Store(store_path)
        finished = store.run(runs[-1])["finished_at"]
        # a scrape between the run's finish and its stored gate evaluation shows the run without gates: wait for
        # one taken after the process returned
        assert wait_for(
            lambda: any(abs(v - finished) < 1e-3 for v in prometheus.values("farm_device_last_run_timestamp_seconds")
                        .values())
            and any(v > returned for v in prometheus.values("timestamp(farm_device_last_run_timestamp_seconds)")
                    .values()),
            seconds=30,
        ), "Prometheus never scraped the second run"  # fmt: skip
        yield Stack(prometheus, serve, store, runs)
        store.close()
    finally:
        if prometheus is not None:
            prometheus.stop()
        agent.shutdown()
        agent.server_close()
        assert serve.stop() == 0, serve.log.read_text()


def _agent_registry() -> CollectorRegistry:
    """A farm agent's device-state families (the real collector; its Dask path is tests/test_cluster_metrics.py)."""
    rows = [DeviceState("board-1", "agent-e2e", "leased", "run-e2e", 1.7e9),
            DeviceState("local", "agent-e2e", "idle", None, None)]  # fmt: skip
    registry = CollectorRegistry()
    registry.register(AgentCollector(lambda: rows))
    return registry


def test_a_scrape_passes_promtool_check_metrics(stack: Stack) -> None:
    text = stack.serve.scrape()
    assert "farm_decode_frames_per_second{" in text and "farm_device_up{" in text
    res = subprocess.run([str(PROMTOOL), "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert res.returncode == 0 and not res.stdout and not res.stderr, res.stdout + res.stderr


def test_prometheus_holds_the_stored_results_and_the_live_health(stack: Stack) -> None:
    prom, store, run = stack.prometheus, stack.store, stack.runs[-1]
    assert prom.values('up{job="codec-farm"}') == {(): 1.0}
    # fps per key equals the median over the run's repeats, read from the store through another path
    measurements = store.measurements(run)
    fps: dict[tuple[str, str], list[float]] = {}
    for job in store.jobs(run):
        if job["role"] == "test" and job["status"] == "ok":
            fps.setdefault((job["device_id"], f"{job['rate_kbps']:g}"), []).append(
                measurements[job["id"]]["fps"]["value"]
            )
    got = prom.values('farm_decode_frames_per_second{role="test"}')
    assert len(got) == len(fps) == 20  # 5 devices x 4 rate points
    for labels, value in got.items():
        d = dict(labels)
        assert value == pytest.approx(statistics.median(fps[(d["device"], d["rate_kbps"])]))
        assert set(d) == {"device", "suite", "bundle", "role", "sequence", "rate_kbps"}  # no run, no version
    # power: measured (simulated) on the boards and phones, absent (not 0) on the machine without a meter
    power = {dict(k)["device"] for k in prom.values("farm_power_watts")}
    assert power == {"board-1", "board-2", "phone-1", "phone-2"}
    assert all(v > 0 for v in prom.values("farm_power_watts").values())
    # counters: two runs x (2 repeats x 12 frames) for each test key on this machine
    frames = prom.values('farm_decoded_frames_total{device="local", role="test", rate_kbps="60"}')
    assert list(frames.values()) == [48.0]
    # live health from the poller
    devices = ("board-1", "board-2", "phone-1", "phone-2", "local")
    assert set(prom.values("farm_device_up == 1")) == {(("device", d),) for d in devices}
    battery = {dict(k)["device"]: v for k, v in prom.values("farm_device_battery_ratio").items()}
    assert battery["local"] == 0.73 and set(battery) == {"local", "phone-1", "phone-2"}  # boards have none
    # the emulated phones' simulated batteries, read over ADB as a ratio (they start at 0.8 and charge between
    # runs, for as long as the session-wide phones have been up)
    assert 0.5 < battery["phone-1"] <= 1.0 and 0.5 < battery["phone-2"] <= 1.0
    # the farm gave the phones their charger back; the health probe that saw it may trail the run by a poll and a
    # scrape, during which Prometheus still holds the probe taken while the run had the chargers suspended
    expected = {"local": 0.0, "phone-1": 1.0, "phone-2": 1.0}

    def charging() -> dict[str, float]:
        return {dict(k)["device"]: v for k, v in prom.values("farm_device_battery_charging").items()}

    assert wait_for(lambda: charging() == expected, seconds=15), charging()
    temps = {dict(k)["device"]: v for k, v in prom.values("farm_device_temperature_celsius").items()}
    assert temps["local"] == 61.5 and set(temps) == set(devices)


def _variables(board: dict[str, Any], prom: Prometheus) -> dict[str, str]:
    """Each query variable resolved through Prometheus, as Grafana would; substituted as every value selected."""
    out: dict[str, str] = {}
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
        assert match, f"{board['uid']}: variable {var['name']} is not label_values(selector, label)"
        values = prom.api(f"label/{match.group(2)}/values", **{"match[]": match.group(1)})
        assert values, f"{board['uid']}: variable {var['name']} has no values"
        out[var["name"]] = "(" + "|".join(_regex_value(v) for v in values) + ")"
    return out


def _regex_value(value: str) -> str:
    """As Grafana formats a multi-value variable: RE2 metacharacters escaped, inside a PromQL string literal."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


def _substitute(expr: str, variables: dict[str, str]) -> str:
    for name, value in GRAFANA_BUILTINS.items():
        expr = expr.replace(name, value)
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def test_every_panel_query_of_every_dashboard_parses_and_returns_data(stack: Stack) -> None:
    checked, failures = 0, []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        variables = _variables(board, stack.prometheus)
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = _substitute(target["expr"], variables)
                try:
                    result = stack.prometheus.query(expr)
                except AssertionError as exc:
                    failures.append(f"{path.name} / {panel['title']}: {exc}")
                    continue
                checked += 1
                if not result:
                    failures.append(f"{path.name} / {panel['title']}: no data for {expr}")
    assert not failures, "\n".join(failures)
    assert checked >= 30


def test_the_alert_rules_load_and_the_failing_gate_fires(stack: Stack) -> None:
    prom = stack.prometheus

    def rules() -> list[dict[str, Any]]:
        groups = prom.api("rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def evaluated() -> bool:
        found = rules()
        return len(found) == 5 and all(r["health"] == "ok" and r["lastEvaluation"] >= "2" for r in found)

    assert wait_for(evaluated, seconds=20), rules()

    def firing() -> set[tuple[str, str, str, str]]:
        return {
            (a["labels"]["alertname"], a["labels"].get("gate", ""), a["labels"].get("scope", ""),
             a["labels"].get("verdict", ""))
            for a in prom.api("alerts")["alerts"] if a["state"] == "firing"
        }  # fmt: skip

    want = {("FarmGateFailing", "fps >= 1e+12", "tag:sim", "fail"),
            ("FarmGateFailing", "energy_per_frame_j <= 100", "local", "missing")}  # fmt: skip
    assert wait_for(lambda: want <= firing(), seconds=20), firing()
    assert not any(name in ("FarmGateFailing", "FarmDeviceDown") and (gate, scope, verdict) not in
                   {(g, s, v) for _, g, s, v in want} for name, gate, scope, verdict in firing())  # fmt: skip
