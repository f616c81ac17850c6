"""``farm run --pushgateway`` against a real Pushgateway (Debian prometheus-pushgateway): what a CI job does."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from farm.bundle import write_sums
from farm.metrics.push import group_path
from farm.store import Store
from tests.conftest import EXAMPLES
from tests.prom_fixtures import Pushgateway, free_port, http
from tests.support.runs import farm, suite

pytestmark = pytest.mark.slow

GROUP_LABELS = {"job", "instance", "suite", "bundle"}

GATES = """  - {metric: fps, op: ">=", value: 1}
  - {metric: failures, op: "==", value: 0, scope: all}"""


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Pushgateway]:
    gw = Pushgateway(tmp_path / "pushgateway")
    yield gw
    gw.stop()


def renamed_bundle(tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(EXAMPLES / "av1-svt", dest)
    manifest = yaml.safe_load((dest / "bundle.yaml").read_text())
    manifest["name"] = name
    (dest / "bundle.yaml").write_text(yaml.safe_dump(manifest))
    write_sums(dest)
    return dest


Sample = tuple[str, tuple[tuple[str, str], ...]]


def pushed(gw: Pushgateway) -> dict[tuple[str, str], dict[Sample, float]]:
    """(suite, bundle) group -> {(name, labels other than the group's): value}, from the gateway's exposition."""
    status, body = http(f"{gw.url}/metrics")
    assert status == 200
    out: dict[tuple[str, str], dict[Sample, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name.startswith("farm_") and s.labels.get("job") == "codec-farm":
                rest = tuple(sorted((k, v) for k, v in s.labels.items() if k not in GROUP_LABELS))
                out.setdefault((s.labels["suite"], s.labels["bundle"]), {})[(s.name, rest)] = s.value
    return out


def run_id_of(out: str) -> str:
    return out.split("run ")[-1].split(":")[0]


def test_runs_push_into_one_group_per_suite_and_bundle_which_a_ci_job_can_delete(
    gateway: Pushgateway, tmp_path: Path
) -> None:
    tiny = suite(tmp_path, GATES)
    code, out = farm(tmp_path, "run", tiny, "--bundle", str(EXAMPLES / "av1-svt"), "--pushgateway", gateway.url)
    assert code == 0, out
    assert f"pushed to {gateway.url} (suite=tiny, bundle=av1-svt)" in out
    groups = gateway.groups()
    assert [g["labels"] for g in groups] == [{"job": "codec-farm", "suite": "tiny", "bundle": "av1-svt"}]
    first = pushed(gateway)[("tiny", "av1-svt")]
    store = Store(tmp_path / "state" / "results.db")
    run = run_id_of(out)
    fps = {(j["rate_kbps"], j["repeat"]): store.measurements(run)[j["id"]]["fps"]["value"] for j in store.jobs(run)}
    key = (("device", "local"), ("rate_kbps", "60"), ("role", "test"), ("sequence", "bars"))
    assert first[("farm_decode_frames_per_second", key)] == pytest.approx((fps[(60, 0)] + fps[(60, 1)]) / 2)
    gates = {dict(labels)["gate"]: v for (name, labels), v in first.items() if name == "farm_gate_passed"}
    assert gates == {"fps >= 1": 1.0, "failures == 0": 1.0}
    assert not any(name.endswith("_total") for name, _ in first)  # a CI store's counters would restart every push
    # the same suite and bundle again: the group is replaced, not added to
    code, out = farm(tmp_path, "run", tiny, "--bundle", str(EXAMPLES / "av1-svt"), "--pushgateway", gateway.url)
    assert code == 0, out
    assert len(gateway.groups()) == 1
    assert pushed(gateway)[("tiny", "av1-svt")] != first  # the second run's timings
    # another bundle is another group
    other = renamed_bundle(tmp_path, "av1-svt-next")
    code, out = farm(tmp_path, "run", tiny, "--bundle", str(other), "--pushgateway", gateway.url + "/")
    assert code == 0, out
    assert set(pushed(gateway)) == {("tiny", "av1-svt"), ("tiny", "av1-svt-next")}
    # the documented clean-up of a CI job: DELETE its group, the others stay
    status, _ = http(gateway.url + group_path("tiny", "av1-svt-next"), method="DELETE")
    assert status == 202
    assert set(pushed(gateway)) == {("tiny", "av1-svt")}


def test_an_unreachable_pushgateway_exits_3_after_the_run_is_stored(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out = farm(
        tmp_path, "run", suite(tmp_path, GATES), "--bundle", str(EXAMPLES / "av1-svt"), "--pushgateway", url
    )
    assert code == 3
    assert f"cannot push to Pushgateway {url}" in out and "but its results were NOT pushed (exit 3)" in out
    run = run_id_of(out)
    assert Store(tmp_path / "state" / "results.db").run(run)["status"] == "complete"
