"""A real ``farm run`` on the local device where an adaptive baseline gate is undecided, gets more repeats, and fails.

The baseline decodes the av1-svt example as it is; the run decodes it behind a wrapper that sleeps first, so its
``wall_s`` is worse than every baseline value. With 4 baseline values the early looks cannot reach their nominal
level (the U test's smallest p is too large), so the farm adds repeats until the first look that can.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from farm.sequential import look_at, schedule
from farm.stats import min_possible_p
from tests.conftest import write
from tests.support.runs import TINY_SUITE, farm, variant

MIN, MAX, BASE_REPEATS = 2, 8, 4


def one_rate_suite(folder: Path, name: str, gates: str, repeats: int) -> Path:
    text = TINY_SUITE.format(gates=gates).replace("rates_kbps: [60, 120, 240, 480]", "rates_kbps: [120]")
    return write(folder / f"{name}.yaml", text.replace("repeats: 2", f"repeats: {repeats}"))


def run_id_of(out: str) -> str:
    found = re.search(r"run (\d{8}-\d{6}-[0-9a-f]{6}): (PASSED|FAILED)", out)
    assert found is not None, out
    return found.group(1)


def first_deciding_look() -> int:
    """The first look at which a run worse than every baseline value can reach that look's nominal level."""
    for k, n in enumerate(schedule(MIN, MAX), start=1):
        if min_possible_p(n, BASE_REPEATS) < look_at(n, MIN, MAX, 0.01, 1, BASE_REPEATS).alpha:
            return k
    raise AssertionError("no look can decide")


def test_an_undecided_adaptive_gate_gets_more_repeats_then_fails(tmp_path: Path) -> None:
    base_suite = one_rate_suite(tmp_path, "base", '  - {metric: failures, op: "==", value: 0, scope: all}', 4)
    code, out = farm(tmp_path, "run", str(base_suite), "--bundle", str(Path(__file__).parents[1] / "examples" /
                                                                     "bundles" / "av1-svt"))  # fmt: skip
    assert code == 0, out
    baseline = run_id_of(out)
    gate = f'  - {{metric: wall_s, op: "<=", baseline: {baseline}, repeats: {{min: {MIN}, max: {MAX}}}}}'
    suite = one_rate_suite(tmp_path, "adaptive", gate, MIN)
    slow = variant(tmp_path, "slow", ["sh", "-c", 'sleep 0.8; exec "$@"', "w"])
    report = tmp_path / "r.json"
    code, out = farm(tmp_path, "run", str(suite), "--bundle", str(slow), "--json", str(report))
    assert code == 1, out
    run_id = run_id_of(out)
    k = first_deciding_look()
    assert k > 1  # the point of the test: the first look cannot decide
    used = schedule(MIN, MAX)[k - 1]
    assert "baseline gates undecided" in out
    verdict = json.loads(report.read_text())["gates"][0]
    assert verdict["verdict"] == "fail", out
    seq = verdict["inputs"]["sequential"]
    assert (seq["look"], seq["repeats"], seq["stopped"]) == (k, used, f"decided at look {k}")
    assert f"look {k} of {len(schedule(MIN, MAX))}, {used} repeats" in verdict["detail"]
    assert verdict["gate"]["repeats"] == {"min": MIN, "max": MAX}
    db = sqlite3.connect(tmp_path / "state" / "results.db")
    reps = sorted(r[0] for r in db.execute("SELECT repeat FROM jobs WHERE run_id=? AND role='test'", (run_id,)))
    assert reps == list(range(used)), "one job per repeat, new repeat indices, none run twice"
    attempts = db.execute("SELECT COUNT(*) FROM run_attempts WHERE run_id=?", (run_id,)).fetchone()[0]
    assert attempts == k, "each further look is one more attempt of the same run"
    assert db.execute("SELECT status FROM runs WHERE id=?", (run_id,)).fetchone()[0] == "complete"
    # re-decided from the store alone: the same look, the same verdict
    code, again = farm(tmp_path, "gate", run_id)
    assert code == 1 and f"look {k} of {len(schedule(MIN, MAX))}, {used} repeats" in again
