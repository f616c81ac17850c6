"""How long does a scrape of ``farm serve`` take with a big farm, against plain prometheus_client?

The farm: 500 devices x 20 stored result keys each (2 sequences x 10 rate points, 2 repeats of 30 frames with
raw frame times, every measurement a real run stores), written through the Store API as 10 runs of 50
devices, plus gates and BD-rates; the inventory lists the 500 devices, so health series are exported too.

The peer: prometheus_client's plain text exposition of exactly the same samples, built directly as Gauge and
Counter objects (set once, created series off) and served by the same prometheus_client HTTP server. Both run
as their own processes and are scraped alternately over loopback in text format.

Each repeat is what Prometheus sees around a finished run: a new run is written to the store, then the first
scrape after it (the slow one: the exporter refreshes incrementally), then a steady scrape, each followed by a
scrape of the peer. Both farm series are reported and the target is on all farm scrapes together (after-run and
steady alike: that is what a Prometheus scraping every 15 s sees when a run ends between two of its scrapes).
The very first scrape of ``farm serve`` (cold: the whole store is read) is printed separately.

Target: farm scrape time <= 1.5x the plain peer's (medians, >= 5 repeats).

Run: python3 bench/bench_scrape.py [--devices 500 --keys 20 --scrapes 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import machine, spread, verdict  # noqa: E402

from farm.store import Measurement, Store, open_store  # noqa: E402

TARGET = 1.5

SEQUENCES = ("s1", "s2")
REPEATS = 2
FRAMES = 30
WARMUP = 5


def fill(store: Store, devices: list[str], keys: int, runs: int, seed: int = 1) -> list[str]:
    """Write ``runs`` finished runs covering ``devices`` between them, as a farm would have stored them."""
    rates = [100.0 * (i + 1) for i in range(keys // len(SEQUENCES))]
    per_run = -(-len(devices) // runs)
    ids = []
    for r in range(runs):
        chunk = devices[r * per_run : (r + 1) * per_run]
        run_id = f"bench-{seed}-{r:03d}"
        store.start_run(
            run_id, suite_name="smoke", suite_digest="d", suite_json=json.dumps({"warmup_frames": WARMUP}),
            bundle_name="av1-svt", bundle_version="1.0.0", bundle_digest="x" * 64, anchor_name="hevc-x265@1.0.0",
            anchor_digest="y" * 64, host="bench", farm_version="0", conventions={},
        )  # fmt: skip
        for d, device in enumerate(chunk):
            for s, sequence in enumerate(SEQUENCES):
                for k, rate in enumerate(rates):
                    for repeat in range(REPEATS):
                        base = 2_000_000 + 10_000 * (d + s + k + repeat)
                        times = [base + 997 * ((i * 7919) % 101) for i in range(FRAMES)]
                        store.add_job(run_id, job_row(device, sequence, rate, repeat, times), measurements(times, k))
            store.add_device(run_id, device, "linux", "linux-x86_64", ["bench"], {}, "ok", None)
            store.add_run_metric(run_id, device, "bd_rate.psnr_yuv", -0.2, "ratio", "", "")
            store.add_run_metric(run_id, device, "bd_rate.vmaf", -0.25, "ratio", "", "")
        store.finish_run(run_id, "complete", {})
        verdicts = [
            {"gate_index": g, "metric": metric, "op": ">=", "threshold": 30, "scope": "each", "scope_key": device,
             "stat": "median", "value": 100.0, "verdict": "pass", "detail": "", "inputs": {}}
            for g, metric in enumerate(("fps.p50", "psnr_yuv")) for device in chunk
        ]  # fmt: skip
        store.add_gate_evaluation(run_id, verdicts)
        ids.append(run_id)
    return ids


def job_row(device: str, sequence: str, rate: float, repeat: int, times: list[int]) -> dict[str, object]:
    return {
        "device_id": device, "role": "test", "sequence": sequence, "rate_kbps": rate, "repeat": repeat,
        "status": "ok", "bitstream_sha": "b" * 64, "bitstream_bytes": 4000, "source_sha": "s" * 64,
        "output_sha": "o" * 64, "frames": FRAMES, "frame_times_ns": times, "started_at": 0.0, "finished_at": 1.0,
    }  # fmt: skip


def measurements(times: list[int], k: int) -> list[Measurement]:
    steady = times[WARMUP:]
    fps = len(steady) / (sum(steady) / 1e9)
    values = {
        "fps": fps, "fps.p50": fps, "fps.p90": fps * 0.9, "fps.p99": fps * 0.8, "frame_time_ms.p50": 2.0,
        "frame_time_ms.p90": 2.2, "frame_time_ms.p99": 2.5, "deadline_misses": 0.0, "wall_s": 0.1,
        "power_w": 3.0 + k / 10, "energy_j": 0.2, "energy_per_frame_j": 0.005, "baseline_w": 1.5,
        "temp_start_c": 40.0, "temp_end_c": 42.0, "temp_max_c": 43.0, "throttled": 0.0, "bpp": 0.1 + k / 100,
        "psnr_y": 40.0, "psnr_u": 42.0, "psnr_v": 42.0, "psnr_yuv": 40.5, "ssim": 0.98, "vmaf": 95.0,
    }  # fmt: skip
    return [Measurement(name, value, "", "") for name, value in values.items()]


def get(url: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        body = response.read()
    return time.perf_counter() - start, body


def started(argv: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("serving "):
        proc.kill()
        raise SystemExit(f"{argv[:4]} did not start: {line!r}")
    return proc, line.split()[1]


def serve_plain(samples_file: Path) -> None:
    """The peer process: the same samples as Gauge and Counter objects, on prometheus_client's HTTP server."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

    registry = CollectorRegistry()
    families: dict[str, Gauge | Counter] = {}
    for name, kind, labels, value in json.loads(samples_file.read_text()):
        metric = families.get(name)
        if metric is None:
            cls = Counter if kind == "counter" else Gauge
            metric = families[name] = cls(name, "help", sorted(labels), registry=registry)
        child = metric.labels(**labels) if labels else metric
        if isinstance(child, Counter):
            child.inc(value)
        else:
            child.set(value)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(f"serving http://127.0.0.1:{server.server_port}/metrics", flush=True)
    while True:
        time.sleep(3600)


def dump_samples(text: str, path: Path) -> int:
    """The farm's exposition as (family, kind, labels, value) rows the peer rebuilds as plain metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    rows = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = s.name.removesuffix("_total") if family.type == "counter" else s.name
            rows.append((name, "counter" if family.type == "counter" else "gauge", s.labels, s.value))
    path.write_text(json.dumps(rows))
    return len(rows)


def sample_lines(body: bytes) -> set[bytes]:
    return {line for line in body.splitlines() if line and not line.startswith(b"#")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--keys", type=int, default=20, help="stored result keys per device (even)")
    parser.add_argument("--runs", type=int, default=10, help="runs the devices are spread over")
    parser.add_argument("--scrapes", type=int, default=7, help="repeats: a new run, then two scrapes of each")
    parser.add_argument("--store", help="a lab's store to fill and serve instead (postgresql://...; a new database)")
    parser.add_argument("--serve-plain", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_plain:
        serve_plain(args.serve_plain)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
        work = Path(tmp)
        devices = [f"dev-{i:03d}" for i in range(args.devices)]
        store_path = args.store or str(work / "results.db")
        t0 = time.perf_counter()
        store = open_store(store_path)
        fill(store, devices, args.keys, args.runs)
        size = "" if args.store else f" ({Path(store_path).stat().st_size / 1e6:.0f} MB)"
        print(f"store {store.where}: {args.devices} devices x {args.keys} keys x {REPEATS} repeats = "
              f"{args.devices * args.keys * REPEATS} jobs in {args.runs} runs, written in "
              f"{time.perf_counter() - t0:.1f}s{size}")  # fmt: skip
        inventory = work / "devices.yaml"
        inventory.write_text("devices:\n" + "".join(
            f"  - id: {d}\n    platform: linux\n    transport: {{kind: local}}\n    target: auto\n"
            "    power: {meter: none}\n    thermal: {zones: []}\n" for d in devices))  # fmt: skip

        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        farm, farm_url = started([sys.executable, "-m", "farm", "serve", "--port", "0", "--store", str(store_path),
                                  "--inventory", str(inventory), "--poll-interval", "3600"], env)  # fmt: skip
        plain = None
        try:
            cold, body = get(farm_url)
            print(f"farm serve, first scrape (cold, whole store read): {cold * 1000:.0f} ms")
            deadline = time.monotonic() + 300
            while body.count(b"farm_device_up{") < args.devices and time.monotonic() < deadline:
                time.sleep(1)  # the first health round (500 local probes) must be done before timing
                body = get(farm_url)[1]
            samples = dump_samples(body.decode(), work / "samples.json")
            from importlib.metadata import version as package_version

            version = package_version("prometheus_client")
            print(f"peer: prometheus_client {version}: the same samples as Gauge/Counter objects, created series "
                  "off, on its own start_http_server, in its own process")  # fmt: skip
            plain_env = {**env, "PROMETHEUS_DISABLE_CREATED_SERIES": "True"}
            plain, plain_url = started([sys.executable, __file__, "--serve-plain", str(work / "samples.json")],
                                       plain_env)  # fmt: skip
            same = sample_lines(get(plain_url)[1]) == sample_lines(body)
            print(f"exposition: {samples} samples, {len(body) / 1e6:.1f} MB; plain peer serves the same sample lines: "
                  f"{'yes' if same else 'NO'}")  # fmt: skip
            for url in (farm_url, plain_url, farm_url, plain_url):
                get(url)  # warm both
            after_run, steady, plain_times = [], [], []
            for i in range(args.scrapes):
                fill(store, devices[:1], args.keys, 1, seed=2 + i)  # a run finishes while the exporter serves
                after_run.append(get(farm_url)[0] * 1000)
                plain_times.append(get(plain_url)[0] * 1000)
                steady.append(get(farm_url)[0] * 1000)
                plain_times.append(get(plain_url)[0] * 1000)
            print(machine())
            print(f"farm serve, first scrape after a new run ms: {spread(after_run, '.0f')}")
            print(f"farm serve, steady scrape ms:                {spread(steady, '.0f')}")
            print(f"peer, plain prometheus_client ms:            {spread(plain_times, '.0f')}")
            farm_all, peer = statistics.median(after_run + steady), statistics.median(plain_times)
            print(f"ratio farm / plain: {farm_all / peer:.2f}x (all farm scrapes, after-run and steady; medians)")
            print(f"ratio farm after a run / plain: {statistics.median(after_run) / peer:.2f}x")
            code = 0 if verdict("farm / plain scrape time", farm_all / peer, "<=", TARGET, args.scrapes) else 1
        finally:
            for proc in (farm, plain):
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)
            store.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
