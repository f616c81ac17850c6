"""Start-up: ``farm --help`` and a warm ``farm run`` up to its first device command, against a bare Typer app.

What a user waits for before anything happens on a device: the interpreter, the imports, loading the inventory,
suite and bundle, planning, the encode cache lookups and opening the store. The peers, measured in the same run
and interleaved with the farm (floor, peer, farm, floor, peer, farm, ...):

- the floor: ``python3 -c pass`` with the same interpreter and ``site`` (what no Python CLI can beat here);
- a bare Typer app of two commands with rich help (Typer 's default), printing ``--help``: what a Python CLI
  built on the same library costs before it does anything.

``farm run`` is measured on a small suite after one full run filled the encode cache (warm), from the spawn
of the process to the first call on the device's transport (run, spawn, hold, push or pull), which a probe
(tests/support/startup.py) records on the system-wide monotonic clock and then ends the process.

Targets (issue 17): ``farm --help`` <= 0.3 s and ``farm run`` to its first device command <= 1 s (medians).

    python3 bench/bench_startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import machine  # noqa: E402

from tests.support.startup import INVENTORY, until_first_command  # noqa: E402

HELP_TARGET_S = 0.3
RUN_TARGET_S = 1.0

BARE_TYPER = """
import typer
app = typer.Typer()
@app.command()
def run(suite: str) -> None:
    "Run a suite."
@app.command()
def runs() -> None:
    "List runs."
app()
"""

SUITE = """name: startup
sequences:
  - id: a
    generate: {source: testsrc2, width: 64, height: 64, fps: 30, frames: 3}
rates_kbps: [100, 200, 300, 400]
repeats: 1
power: {baseline_s: 0}
gates:
  - {metric: failures, op: "==", value: 0, scope: all}
"""


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Wall seconds of one process from spawn to exit (it must exit 0)."""
    began = time.monotonic()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - began


def to_first_command(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds from spawning ``farm run`` to its first device command."""
    began = time.monotonic()
    return until_first_command(argv, env, cwd).at - began


def spread(name: str, times: list[float]) -> str:
    return f"{name:<34} s: min {min(times):.3f}  median {statistics.median(times):.3f}  max {max(times):.3f}"


def verdict(name: str, median: float, target: float) -> bool:
    ok = median <= target
    print(f"target: {name} median <= {target:.2f} s -> {median:.3f} s: {'PASS' if ok else 'FAIL'}")
    return ok


def prepare(tmp: Path) -> tuple[list[str], dict[str, str]]:
    """A suite, an inventory and a store in ``tmp``, and one full run so the encode cache is warm."""
    (tmp / "suite.yaml").write_text(SUITE, encoding="utf-8")
    (tmp / "devices.yaml").write_text(INVENTORY, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT), FARM_STORE=str(tmp / "results.db"))
    argv = ["run", str(tmp / "suite.yaml"), "--bundle", str(ROOT / "examples/bundles/av1-svt")]
    argv += ["--inventory", str(tmp / "devices.yaml")]
    warm = subprocess.run([sys.executable, "-m", "farm", *argv], env=env, cwd=tmp, capture_output=True, text=True)
    if warm.returncode not in (0, 1):
        raise SystemExit(f"the warm-up run failed (exit {warm.returncode}):\n{warm.stdout}{warm.stderr}")
    return argv, env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats of each (at least 5 to judge)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        (tmp / "bare.py").write_text(BARE_TYPER, encoding="utf-8")
        run_argv, env = prepare(tmp)
        py = sys.executable
        floor, bare, helps, runs = [], [], [], []
        for _ in range(args.repeats):
            floor.append(timed([py, "-c", "pass"], env, tmp))
            bare.append(timed([py, str(tmp / "bare.py"), "--help"], env, tmp))
            helps.append(timed([py, "-m", "farm", "--help"], env, tmp))
            runs.append(to_first_command(run_argv, env, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report(args.repeats, floor, bare, helps, runs)


def report(repeats: int, floor: list[float], bare: list[float], helps: list[float], runs: list[float]) -> int:
    import typer

    print(f"python {sys.version.split()[0]} ({sys.executable}); typer {typer.__version__}; {repeats} repeats")
    print(machine())
    print("peer: bare Typer app (2 commands, Typer's default rich help) `--help`; floor: `python3 -c pass`")
    print(spread("floor: python3 -c pass", floor))
    print(spread("peer: bare Typer app --help", bare))
    print(spread("farm --help", helps))
    print(spread("farm run -> first device command", runs))
    peer = statistics.median(bare)
    print(f"ratio farm --help / bare Typer --help (time, median): {statistics.median(helps) / peer:.2f}")
    print(f"ratio farm run / bare Typer --help (time, median): {statistics.median(runs) / peer:.2f}")
    ok = verdict("farm --help", statistics.median(helps), HELP_TARGET_S)
    ok = verdict("farm run -> first device command", statistics.median(runs), RUN_TARGET_S) and ok
    if repeats < 5:
        print(f"only {repeats} repeats: too few to judge (at least 5)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
