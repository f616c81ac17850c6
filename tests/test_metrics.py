"""The exporter's store reader and collectors against a real SQLite store, read back through the text format.

Every store here is written through the farm's own Store API (the same calls a run makes), and every assertion
reads the exposition Prometheus would scrape, parsed by prometheus_client's own parser.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from farm.cluster.metrics import AgentCollector, DeviceState
from farm.metrics import names
from farm.metrics.collector import HealthCollector, StoreCollector
from farm.metrics.poller import Health
from farm.metrics.results import ResultIndex, open_readonly
from farm.store import Measurement, Store
from tests.conftest import require_tool

PROMTOOL = Path("/usr/bin/promtool")
Labels = tuple[tuple[str, str], ...]


# -- writing stores the way a run does ----------------------------------------------------------------
class Farm:
    """Writes runs into a real store through the Store API; ``scrape()`` reads them back as Prometheus would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = Store(path)
        self.index = ResultIndex(open_readonly(path))
        self.registry = CollectorRegistry()
        self.registry.register(StoreCollector(self.index))
        self._n = 0

    def start(self, suite: str = "smoke", bundle: str = "av1-svt", anchor: str | None = None, warmup: int = 0) -> str:
        self._n += 1
        run_id = f"2026010{self._n}-000000-{self._n:06x}"
        self.store.start_run(
            run_id, suite_name=suite, suite_digest="d", suite_json=json.dumps({"warmup_frames": warmup}),
            bundle_name=bundle, bundle_version=f"1.{self._n}", bundle_digest="x" * 64, anchor_name=anchor,
            anchor_digest="y" * 64 if anchor else None, host="h", farm_version="0", conventions={},
        )  # fmt: skip
        time.sleep(0.002)  # distinct started_at, as two real runs have
        return run_id

    def job(
        self, run_id: str, *, device: str = "local", role: str = "test", sequence: str = "s1", rate: float = 150,
        repeat: int = 0, status: str = "ok", frames: int | None = 10, times: Sequence[int] | None = None,
        **values: float | None,
    ) -> int:  # fmt: skip
        row = {
            "device_id": device, "role": role, "sequence": sequence, "rate_kbps": rate, "repeat": repeat,
            "status": status, "bitstream_sha": "b", "bitstream_bytes": 100, "source_sha": "s", "frames": frames,
            "frame_times_ns": list(times) if times else None, "started_at": 0.0, "finished_at": 1.0,
        }  # fmt: skip
        ms = [
            Measurement(name, value, "", "", None if value is not None else "not measured")
            for name, value in values.items()
        ]
        return self.store.add_job(run_id, row, ms)

    def finish(self, run_id: str, devices: Sequence[str] = ("local",)) -> None:
        for device in devices:
            self.store.add_device(run_id, device, "linux", "linux-x86_64", [], {}, "ok", None)
        self.store.finish_run(run_id, "complete", {})

    def scrape(self) -> dict[str, dict[Labels, float]]:
        return parse(generate_latest(self.registry).decode())


def parse(text: str) -> dict[str, dict[Labels, float]]:
    """sample name -> {sorted label pairs: value}, from the text exposition."""
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def key(device: str = "local", suite: str = "smoke", bundle: str = "av1-svt", role: str = "test",
        sequence: str = "s1", rate: str = "150", **extra: str) -> Labels:  # fmt: skip
    labels = {"device": device, "suite": suite, "bundle": bundle, "role": role, "sequence": sequence,
              "rate_kbps": rate, **extra}  # fmt: skip
    return tuple(sorted(labels.items()))


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    f = Farm(tmp_path / "results.db")
    yield f
    f.store.close()


# -- results ------------------------------------------------------------------------------------------
def test_latest_finished_run_per_key_with_medians_over_repeats(farm: Farm) -> None:
    old = farm.start()
    farm.job(old, fps=10.0, power_w=1.0)
    farm.finish(old)
    new = farm.start()
    for repeat, fps in enumerate((30.0, 50.0, 40.0)):
        farm.job(new, repeat=repeat, fps=fps, power_w=2.0 + repeat, psnr_yuv=40.0, vmaf=90.0, ssim=0.95)
    farm.job(new, rate=300, fps=99.0)  # another key of the same run
    farm.finish(new)
    got = farm.scrape()
    assert got["farm_decode_frames_per_second"] == {key(): 40.0, key(rate="300"): 99.0}
    assert got["farm_power_watts"] == {key(): 3.0}
    assert got["farm_psnr_decibels"] == {key(plane="yuv"): 40.0}
    assert got["farm_vmaf_score"][key()] == 90.0 and got["farm_ssim_score"][key()] == 0.95
    text = generate_latest(farm.registry).decode()
    assert old not in text and new not in text and "1.2" not in text  # no run ids, no versions


def test_missing_is_absent_never_zero(farm: Farm) -> None:
    run = farm.start()
    farm.job(run, fps=25.0, power_w=None, energy_j=None, energy_per_frame_j=None)  # no meter
    farm.job(run, rate=300, repeat=0, fps=25.0, power_w=2.0)
    farm.job(run, rate=300, repeat=1, fps=26.0, power_w=None)  # one repeat lost its samples
    farm.finish(run)
    got = farm.scrape()
    assert key() in got["farm_decode_frames_per_second"]
    assert "farm_power_watts" not in got  # neither key: one has no meter, one has a repeat without power
    assert "farm_decode_energy_per_frame_joules" not in got
    assert "farm_decode_energy_joules_total" not in got  # no energy was ever measured: no counter, not a 0
    assert got["farm_decoded_frames_total"][key()] == 10


def test_a_key_whose_latest_jobs_all_failed_shows_nothing_not_the_older_values(farm: Farm) -> None:
    good = farm.start()
    farm.job(good, fps=30.0, psnr_yuv=40.0)
    farm.finish(good)
    assert farm.scrape()["farm_decode_frames_per_second"][key()] == 30.0
    bad = farm.start()
    farm.job(bad, status="failed", frames=None)
    farm.finish(bad)
    got = farm.scrape()
    assert key() not in got.get("farm_decode_frames_per_second", {})
    assert key(plane="yuv") not in got.get("farm_psnr_decibels", {})


def test_a_running_run_feeds_counters_but_not_gauges(farm: Farm) -> None:
    done = farm.start()
    farm.job(done, fps=30.0, energy_j=2.0, frames=10)
    farm.finish(done)
    running = farm.start()
    farm.job(running, fps=5.0, energy_j=3.0, frames=12)
    got = farm.scrape()
    assert got["farm_decode_frames_per_second"][key()] == 30.0  # still the finished run's
    assert got["farm_decode_energy_joules_total"][key()] == 5.0  # both runs' jobs
    assert got["farm_decoded_frames_total"][key()] == 22
    farm.job(running, repeat=1, fps=7.0, energy_j=1.5, frames=12)
    farm.job(running, repeat=2, status="failed", frames=None)  # failed jobs decode nothing countable
    got = farm.scrape()
    assert got["farm_decode_energy_joules_total"][key()] == 6.5 and got["farm_decoded_frames_total"][key()] == 34
    farm.finish(running)
    assert farm.scrape()["farm_decode_frames_per_second"][key()] == 6.0


def test_a_run_that_finishes_after_a_newer_one_does_not_replace_it(farm: Farm) -> None:
    older = farm.start()
    farm.job(older, fps=10.0)
    newer = farm.start()
    farm.job(newer, fps=20.0)
    farm.finish(newer)
    assert farm.scrape()["farm_decode_frames_per_second"][key()] == 20.0
    farm.finish(older)
    assert farm.scrape()["farm_decode_frames_per_second"][key()] == 20.0


def test_frame_time_quantiles_come_from_the_pooled_raw_steady_frames(farm: Farm) -> None:
    run = farm.start(warmup=2)
    first = [9_000_000, 8_000_000, 1_000_000, 2_000_000, 3_000_000, 4_000_000]
    second = [9_000_000, 9_000_000, 5_000_000, 6_000_000, 7_000_000, 20_000_000]
    farm.job(run, repeat=0, times=first, fps=1.0)
    farm.job(run, repeat=1, times=second, fps=1.0)
    farm.job(run, rate=300, times=first, fps=1.0)
    farm.job(run, rate=300, repeat=1, times=None, fps=1.0)  # a repeat without per-frame times
    farm.finish(run)
    got = farm.scrape()
    steady = np.asarray(first[2:] + second[2:]) / 1e9
    for q in names.QUANTILES:
        want = float(np.percentile(steady, q * 100))
        assert got["farm_frame_decode_seconds"][key(quantile=f"{q:g}")] == pytest.approx(want)
    assert got["farm_frame_decode_seconds_count"][key()] == 8
    assert got["farm_frame_decode_seconds_sum"][key()] == pytest.approx(steady.sum())
    assert key(rate="300", quantile="0.5") not in got["farm_frame_decode_seconds"]  # missing, not pooled from one


def test_bits_per_pixel_is_exported_in_bytes_the_base_unit(farm: Farm) -> None:
    run = farm.start()
    farm.job(run, bpp=0.4)
    farm.finish(run)
    assert farm.scrape()["farm_bitstream_bytes_per_pixel"][key()] == pytest.approx(0.05)


def test_anchor_jobs_are_exported_under_the_runs_bundle_with_role_anchor(farm: Farm) -> None:
    run = farm.start(anchor="hevc-x265@1.0.0")
    farm.job(run, fps=50.0)
    farm.job(run, role="anchor", fps=100.0)
    farm.store.add_run_metric(run, "local", "bd_rate.psnr_yuv", -0.25, "ratio", "", "s1 -25%")
    farm.store.add_run_metric(run, "local", "bd_rate.vmaf", None, "ratio", "", "curves do not overlap")
    farm.finish(run)
    got = farm.scrape()
    assert got["farm_decode_frames_per_second"] == {key(): 50.0, key(role="anchor"): 100.0}
    bd = {"device": "local", "suite": "smoke", "bundle": "av1-svt", "anchor": "hevc-x265"}
    assert got["farm_bd_rate_ratio"] == {tuple(sorted({**bd, "quality": "psnr_yuv"}.items())): -0.25}  # vmaf missing


def test_bd_rate_per_anchor_and_decoder_complexity_are_exported(farm: Farm) -> None:
    """A run with two anchors exports one BD-rate series per anchor name (the bd_rate.METRIC alias row of the
    first is not exported again); an older single-anchor run of another suite keeps its bundle-named series."""
    old = farm.start(suite="old", anchor="hevc-x265@1.0.0")
    farm.store.add_run_metric(old, "local", "bd_rate.psnr_yuv", -0.5, "ratio", "", "")
    farm.finish(old)
    run = farm.start(anchor="hevc-x265@1.0.0")
    for name, value in (("bd_rate.psnr_yuv", -0.25), ("bd_rate[x265].psnr_yuv", -0.25),
                        ("bd_rate[fp32].psnr_yuv", 0.01), ("complexity.kmac_per_pixel", 1.5),
                        ("complexity.params", 1234.0), ("complexity.model_bytes", None)):  # fmt: skip
        farm.store.add_run_metric(run, "local", name, value, "", "", "")
    farm.finish(run)
    got = farm.scrape()
    bd = {"device": "local", "bundle": "av1-svt", "quality": "psnr_yuv"}
    assert got["farm_bd_rate_ratio"] == {
        tuple(sorted({**bd, "suite": "smoke", "anchor": "x265"}.items())): -0.25,
        tuple(sorted({**bd, "suite": "smoke", "anchor": "fp32"}.items())): 0.01,
        tuple(sorted({**bd, "suite": "old", "anchor": "hevc-x265"}.items())): -0.5,
    }
    labels = (("bundle", "av1-svt"), ("device", "local"), ("suite", "smoke"))
    assert got["farm_decoder_kilo_macs_per_pixel"] == {labels: 1.5}
    assert got["farm_decoder_parameters"] == {labels: 1234.0}
    assert "farm_decoder_model_bytes" not in got  # missing is absent, never 0


def test_gates_of_the_latest_evaluation_as_passed_state_set_and_value(farm: Farm) -> None:
    run = farm.start()
    farm.job(run, fps=10.0)
    farm.finish(run)

    def verdict(index: int, metric: str, threshold: Any, scope: str, value: Any, outcome: str) -> dict[str, Any]:
        return {"gate_index": index, "metric": metric, "op": ">=", "threshold": threshold, "scope": "each",
                "scope_key": scope, "stat": "median", "value": value, "verdict": outcome, "detail": "",
                "inputs": {}}  # fmt: skip

    farm.store.add_gate_evaluation(run, [
        verdict(0, "fps", 30, "local", 10.0, "fail"),
        verdict(1, "energy_per_frame_j", 0.05, "local", None, "missing"),
        verdict(2, "consistency", "bitexact", "all", "bitexact", "pass"),
    ])  # fmt: skip
    got = farm.scrape()

    def g(gate: str, scope: str = "local", **extra: str) -> Labels:
        return tuple(sorted({"suite": "smoke", "bundle": "av1-svt", "gate": gate, "scope": scope, **extra}.items()))

    assert got["farm_gate_passed"] == {g("fps >= 30"): 0, g("energy_per_frame_j >= 0.05"): 0,
                                       g("consistency >= bitexact", "all"): 1}  # fmt: skip
    assert got["farm_gate_verdict"][g("energy_per_frame_j >= 0.05", verdict="missing")] == 1
    assert got["farm_gate_verdict"][g("energy_per_frame_j >= 0.05", verdict="fail")] == 0
    assert got["farm_gate_value"] == {g("fps >= 30"): 10.0}  # missing and non-numeric values are absent
    # `farm gate` appends an evaluation: the exporter follows the latest one
    farm.store.add_gate_evaluation(run, [verdict(0, "fps", 30, "local", 31.0, "pass")])
    got = farm.scrape()
    assert got["farm_gate_passed"] == {g("fps >= 30"): 1}
    assert got["farm_run_duration_seconds"][(("bundle", "av1-svt"), ("suite", "smoke"))] >= 0
    assert (("bundle", "av1-svt"), ("device", "local"), ("suite", "smoke")) in got[
        "farm_device_last_run_timestamp_seconds"
    ]


def test_two_identical_gates_keep_their_series_apart_and_each_scope_is_its_own(farm: Farm) -> None:
    run = farm.start()
    farm.finish(run, devices=("a", "b"))
    rows = [
        {"gate_index": i, "metric": "fps", "op": ">=", "threshold": 1, "scope": "each", "scope_key": dev,
         "stat": "median", "value": 2.0, "verdict": "pass", "detail": "", "inputs": {}}
        for i in (0, 1) for dev in ("a", "b")
    ]  # fmt: skip
    farm.store.add_gate_evaluation(run, rows)
    gates = {dict(labels)["gate"] + "|" + dict(labels)["scope"] for labels in farm.scrape()["farm_gate_passed"]}
    assert gates == {"fps >= 1 #0|a", "fps >= 1 #0|b", "fps >= 1 #1|a", "fps >= 1 #1|b"}


def test_an_unchanged_store_is_not_read_again(farm: Farm) -> None:
    run = farm.start()
    farm.job(run, fps=30.0)
    farm.finish(run)
    first = farm.scrape()
    statements: list[str] = []
    db: sqlite3.Connection = farm.index._db
    db.set_trace_callback(statements.append)
    assert farm.scrape() == first
    assert statements == ["PRAGMA data_version"]
    statements.clear()
    farm.job(farm.start(), fps=1.0)  # a new run starts: only its job is read (for the counters)
    farm.scrape()
    assert not any("frame_times_json" in s for s in statements)


def test_pushing_one_run_exports_only_that_run_and_no_counters(farm: Farm) -> None:
    first = farm.start(bundle="a")
    farm.job(first, fps=1.0, energy_j=1.0)
    farm.finish(first)
    second = farm.start(bundle="b")
    farm.job(second, fps=2.0, energy_j=1.0)
    farm.finish(second)
    registry = CollectorRegistry()
    registry.register(StoreCollector(ResultIndex(open_readonly(farm.path), run_id=second)))
    got = parse(generate_latest(registry).decode())
    assert got["farm_decode_frames_per_second"] == {key(bundle="b"): 2.0}
    assert "farm_decode_energy_joules_total" not in got and "farm_decoded_frames_total" not in got


# -- health -------------------------------------------------------------------------------------------
def health_registry(states: dict[str, Health]) -> CollectorRegistry:
    registry = CollectorRegistry()
    info = {d: ("linux", "linux-x86_64", "ssh", d.startswith("board")) for d in states}
    registry.register(HealthCollector(lambda: states, info))
    return registry


def test_health_of_a_down_device_keeps_last_seen_but_no_stale_readings() -> None:
    states = {
        "phone-1": Health(True, 41.5, 0.73, False, 1000.0),
        "board-1": Health(False, seen_at=900.0, error="connection refused"),
        "board-2": Health(False, error="never reached"),
        "local": Health(True, None, None, None, 1000.0),  # no zone, no battery: absent, not 0
    }
    got = parse(generate_latest(health_registry(states)).decode())
    assert got["farm_device_up"] == {(("device", d),): float(h.up) for d, h in states.items()}
    assert got["farm_device_temperature_celsius"] == {(("device", "phone-1"),): 41.5}
    assert got["farm_device_battery_ratio"] == {(("device", "phone-1"),): 0.73}
    assert got["farm_device_battery_charging"] == {(("device", "phone-1"),): 0.0}
    assert got["farm_device_last_seen_timestamp_seconds"] == {
        (("device", "phone-1"),): 1000.0, (("device", "board-1"),): 900.0, (("device", "local"),): 1000.0,
    }  # fmt: skip
    info = got["farm_device_info"]
    assert info[tuple(sorted({"device": "board-1", "platform": "linux", "target": "linux-x86_64",
                              "transport": "ssh", "simulated": "true"}.items()))] == 1  # fmt: skip


def test_every_exported_family_is_in_the_schema_and_the_docs(farm: Farm) -> None:
    run = farm.start(anchor="x@1")
    farm.job(run, fps=1.0, energy_j=1.0, times=[1, 2, 3], power_w=1.0, energy_per_frame_j=0.1, bpp=0.1,
             psnr_y=1.0, psnr_u=1.0, psnr_v=1.0, psnr_yuv=1.0, ssim=1.0, vmaf=1.0,
             **{"temporal.flicker": 0.5})  # fmt: skip
    farm.store.add_run_metric(run, "local", "bd_rate.psnr_yuv", -0.1, "ratio", "", "")
    for name in ("complexity.kmac_per_pixel", "complexity.params", "complexity.model_bytes"):
        farm.store.add_run_metric(run, "local", name, 2.5, "", "", "")
    farm.finish(run)
    farm.store.add_gate_evaluation(run, [
        {"gate_index": 0, "metric": "fps", "op": ">=", "threshold": 1, "scope": "each", "scope_key": "local",
         "stat": "median", "value": 1.0, "verdict": "pass", "detail": "", "inputs": {}}])  # fmt: skip
    exposed = set(farm.scrape()) | set(parse(generate_latest(health_registry({"d": Health(True, 1, 1, True, 1)}))
                                             .decode()))  # fmt: skip
    agent = CollectorRegistry()
    agent.register(AgentCollector(lambda: [DeviceState("d", "agent-a", "leased", "r1", 1.0)]))
    exposed |= set(parse(generate_latest(agent).decode()))
    assert exposed == names.sample_names()
    docs = (Path(__file__).resolve().parent.parent / "docs" / "prometheus.md").read_text()
    for spec in names.ALL_SPECS:
        assert f"`{spec.name}`" in docs, f"{spec.name} is not documented in docs/prometheus.md"
        for label in spec.labels:
            assert f"`{label}`" in docs, f"label {label} of {spec.name} is not documented"


def test_a_full_exposition_passes_promtool_check_metrics(farm: Farm) -> None:
    require_tool(PROMTOOL, "prometheus")
    run = farm.start(anchor="x@1")
    farm.job(run, fps=1.0, energy_j=1.0, times=[1, 2, 3], power_w=1.0, energy_per_frame_j=0.1, bpp=0.1,
             psnr_y=1.0, psnr_u=1.0, psnr_v=1.0, psnr_yuv=1.0, ssim=1.0, vmaf=1.0)  # fmt: skip
    farm.job(run, role="anchor", fps=2.0)
    farm.store.add_run_metric(run, "local", "bd_rate.psnr_yuv", -0.1, "ratio", "", "")
    farm.finish(run)
    farm.store.add_gate_evaluation(run, [
        {"gate_index": 0, "metric": "fps", "op": ">=", "threshold": 1, "scope": "each", "scope_key": "local",
         "stat": "median", "value": 1.0, "verdict": "pass", "detail": "", "inputs": {}}])  # fmt: skip
    text = generate_latest(farm.registry) + generate_latest(health_registry({"d": Health(True, 1, 0.5, True, 1)}))
    res = subprocess.run([str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert res.returncode == 0 and not res.stdout and not res.stderr, res.stdout + res.stderr
    # and promtool does complain about what the naming guide forbids, so the silence above means something
    bad = b"# HELP farm_bits_per_pixel x\n# TYPE farm_bits_per_pixel gauge\nfarm_bits_per_pixel 1\n"
    res = subprocess.run([str(PROMTOOL), "check", "metrics"], input=bad, capture_output=True, timeout=60)
    assert res.returncode != 0 and b"base unit" in res.stdout + res.stderr


def test_the_verdict_state_set_covers_every_verdict_the_gates_give() -> None:
    from farm.gates.verdict import VERDICTS
    from farm.metrics import names

    assert set(names.VERDICTS) == set(VERDICTS)  # an inconclusive gate must show up, not vanish from the board
