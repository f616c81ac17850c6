"""Every benchmark in bench/ still runs to its printed ratio, at a size small enough for CI.

The benchmarks are not timed here (speed is their job, not the tests'), but nothing else runs them: a config
key renamed under one of them broke ``bench_scrape.py`` once without any test noticing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool
from tests.pg_fixtures import pg_bin
from tests.sim_fixtures import require_sshd

BENCH = ROOT / "bench"

CASES = {
    "bench_scrape.py": (["--devices", "3", "--keys", "2", "--runs", "1", "--scrapes", "1"], "ratio farm / plain:"),
    "bench_quality.py": (["--frames", "5", "--runs", "1"], "ratio farm/ffmpeg (throughput):"),
    "bench_adb_push.py": (["--mib", "1", "--repeats", "1"], "ratio farm/adb (throughput):"),
    "bench_ssh_push.py": (["--mib", "1", "--repeats", "1"], "ratio farm/scp (throughput):"),
    "bench_gates.py": (["--trials", "300", "--other-trials", "50"], "summary: false alarms"),
    "bench_store.py": (["--jobs", "20", "--repeats", "1"], "ratio postgresql/sqlite (time, median):"),
    "bench_startup.py": (["--repeats", "1"], "ratio farm --help / bare Typer --help (time, median):"),
    "bench_dispatch.py": (
        ["--devices", "4", "--agents", "2", "--jobs", "1", "--sleep", "0.2", "--repeats", "1"],
        "ratio dask/threads (efficiency, median):",
    ),
    "bench_pipeline.py": (
        ["--repeats", "1", "--width", "128", "--height", "96", "--frames", "10"],
        "ratio pipelined wall / its longest lane (median):",
    ),
    "bench_job_overhead.py": (
        ["--repeats", "1", "--jobs", "2", "--decode-s", "0.05"],
        "ratio separate verbs / one round trip (overhead, median):",
    ),
}


def test_every_benchmark_has_a_case() -> None:
    assert sorted(p.name for p in BENCH.glob("bench_*.py")) == sorted(CASES)


@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs_to_its_report(script: str) -> None:
    if script == "bench_adb_push.py":
        require_tool(Path("/usr/bin/adb"), "adb")
    if script == "bench_dispatch.py":
        pytest.importorskip("distributed")
    if script in ("bench_ssh_push.py", "bench_job_overhead.py"):
        require_sshd()
    if script == "bench_store.py":
        require_tool(pg_bin() / "initdb", "postgresql")
    args, expected = CASES[script]
    res = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    # every bench exits 1 when its target is missed, which a tiny size, one repeat or a busy CI does; a crash
    # exits 1 too, but before the report line checked below
    assert res.returncode in (0, 1), res.stdout + res.stderr
    assert "target: " in res.stdout and ("PASS" in res.stdout or "FAIL" in res.stdout), res.stdout
    assert expected in res.stdout, res.stdout + res.stderr
