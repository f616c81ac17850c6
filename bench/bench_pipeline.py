"""A pipelined run against the same farm run serially (``--serial``): each lane, the wall, and their ratio.

The run is the HD suite (suites/hd.yaml: one 1280x720 sequence of 60 frames, four rates, av1-svt against the
hevc-x265 anchor) on the ``local`` device, through the real CLI in a process of its own. Lanes, as the run
measures them itself (its summary in the store, farm/lanes/):

- encode: while at least one encode (or the render) runs;
- devices: the busiest device's session, less the time it was blocked on a bitstream still encoding;
- scoring: while at least one decoded output is being scored.

The peer is the same farm, same suite, bundles, device and machine, with ``farm run --serial``: every encode,
then every decode, then every score. Cold: the encode lane only exists when the bitstreams are not cached, so
before every repeat of either mode the host's encode cache (bitstreams), score cache and decoded outputs are
emptied (the rendered source is kept: both modes render nothing after the first repeat). Repeats interleave
serial, pipelined, serial, pipelined ...

Target (issue 17 part 1): the pipelined run's wall <= 1.25 x its longest lane (median over repeats).

    python3 bench/bench_pipeline.py [--repeats 5] [--width 1280 --height 720 --frames 60]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import machine, spread, verdict  # noqa: E402

TARGET = 1.25
LANES = ("encode", "devices", "scoring")
EMPTIED = ("bitstreams", "scores", "decoded")
BUNDLE = ROOT / "examples" / "bundles" / "av1-svt"
ANCHOR = ROOT / "examples" / "bundles" / "hevc-x265"


def suite_file(folder: Path, width: int, height: int, frames: int) -> Path:
    """suites/hd.yaml, at another size when asked (the tests run this bench tiny)."""
    suite = yaml.safe_load((ROOT / "suites" / "hd.yaml").read_text())
    suite["sequences"][0]["generate"].update(width=width, height=height, frames=frames)
    path = folder / "hd.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def one_run(state: Path, suite: Path, serial: bool) -> dict[str, Any]:
    """One cold run; its lanes and wall from the run's own summary, plus the process's wall."""
    for name in EMPTIED:
        shutil.rmtree(state / "cache" / name, ignore_errors=True)
    argv = [sys.executable, "-m", "farm", "run", str(suite), "--bundle", str(BUNDLE), "--anchor", str(ANCHOR),
            "--inventory", str(ROOT / "devices.yaml"), "--store", str(state / "results.db")]  # fmt: skip
    began = time.monotonic()
    res = subprocess.run([*argv, *(["--serial"] if serial else [])], cwd=ROOT, capture_output=True, text=True)
    took = time.monotonic() - began
    if res.returncode not in (0, 1):
        raise SystemExit(f"farm run exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    with sqlite3.connect(state / "results.db") as db:
        (summary,) = db.execute("SELECT summary_json FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
    lanes = json.loads(summary)["lanes"]
    assert lanes["pipelined"] is not serial and lanes["encode"]["done"] == lanes["encode"]["total"] > 0
    return {**{n: lanes[n]["busy_s"] for n in LANES}, "wall": lanes["wall_s"], "process": took}


def report(name: str, runs: list[dict[str, Any]]) -> None:
    for key in (*LANES, "wall", "process"):
        label = {"wall": "run wall (plan to gates)", "process": "process wall (farm run)"}.get(key, f"lane {key}")
        print(f"{name:<10} {label:<26} s: {spread([r[key] for r in runs])}")
    ratios = [r["wall"] / max(r[n] for n in LANES) for r in runs]
    print(f"{name:<10} {'wall / longest lane':<26}  : {spread(ratios, '.2f')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args()
    print(machine())
    print(f"suite: suites/hd.yaml at {args.width}x{args.height}, {args.frames} frames, 4 rates; "
          f"bundle {BUNDLE.name}, anchor {ANCHOR.name}; device local; {args.repeats} interleaved repeats")  # fmt: skip
    print("peer: the same farm with `farm run --serial` (encode all, then decode all, then score all)")
    print(f"cold cache: before every repeat of both modes the host's {', '.join(EMPTIED)} caches are emptied")
    runs: dict[str, list[dict[str, Any]]] = {"serial": [], "pipelined": []}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        suite = suite_file(Path(tmp), args.width, args.height, args.frames)
        for i in range(args.repeats):
            for mode in runs:
                runs[mode].append(one_run(Path(tmp) / mode, suite, serial=mode == "serial"))
                r = runs[mode][-1]
                print(f"repeat {i + 1} {mode:<9} " + " ".join(f"{k} {v:.1f}" for k, v in r.items()), flush=True)
    for mode, got in runs.items():
        report(mode, got)
    serial, piped = (statistics.median(r["wall"] for r in runs[m]) for m in ("serial", "pipelined"))
    print(f"ratio pipelined/serial (run wall, median): {piped / serial:.2f}")
    alone = statistics.median(max(r[n] for n in LANES) for r in runs["serial"])
    # lanes that share two cores stretch each other: the serial run's longest lane is each lane alone
    print(f"ratio pipelined wall / serial run's longest lane (lanes alone, median): {piped / alone:.2f}")
    ratio = statistics.median(r["wall"] / max(r[n] for n in LANES) for r in runs["pipelined"])
    print(f"ratio pipelined wall / its longest lane (median): {ratio:.2f}")
    ok = verdict("pipelined wall / longest lane (median)", ratio, "<=", TARGET, args.repeats)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
