"""Dispatch efficiency: 64 devices whose decoder only sleeps, through threads on one host vs Dask over 4 agents.

Devices: ``local``-transport entries with distinct ids and workdirs (this machine, honestly: every session runs
the full farm session - connect, stage by digest, tether, decode, hash, pull, clean), no power meter and no
thermal zones, so only dispatch and the session's own work are measured. The decoder is ``sleep S`` then a copy
of its 1-frame Y4M input as output, so devices do not compete for this machine's cores while "decoding".
The Dask side is real: ``farm scheduler`` and 4 ``farm agent`` processes on loopback with mutual TLS.

ideal = the slowest device's total sleep (jobs x S); efficiency = ideal / wall. Controller CPU per job is the
controller process's CPU time over the run divided by the jobs (for threads that process also runs every
session; for Dask the sessions run in the agents).

The devices' own work shares this machine's two cores with the farm, so the bench also measures its floor: the
same jobs through ``PosixDevice.decode`` alone (the decode script and the decoder, one thread per device, no
session set-up, no dispatch, nothing stored). No executor can beat it here; on a real lab that work runs on the
devices.

Then the scoring decision of docs/scale-out.md: pulling one decoded output (640x360, --pull-frames frames of
Y4M) from an agent over Dask TLS, against scoring it (farm.quality.score: PSNR, SSIM, VMAF through ffmpeg), the
same file, interleaved repeats.

    python3 bench/bench_dispatch.py [--devices 64] [--agents 4] [--jobs 3] [--sleep 2] [--repeats 5]
                                    [--pull-frames 60]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import operator
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farm.artifacts import DecodedCache  # noqa: E402
from farm.cluster.certs import write_certs  # noqa: E402
from farm.cluster.client import connect  # noqa: E402
from farm.cluster.controller import agents_by_device  # noqa: E402
from farm.config.inventory import load_inventory  # noqa: E402
from farm.config.suite import load_suite  # noqa: E402
from farm.executors.dask import DaskExecutor  # noqa: E402
from farm.executors.threads import ThreadExecutor  # noqa: E402
from farm.session.cancel import Cancel  # noqa: E402
from farm.session.events import DeviceDone, Event  # noqa: E402
from farm.session.spec import BundleRef, FileRef, JobKey, JobSpec, SessionSpec  # noqa: E402

SUITE = """name: dispatch
sequences:
  - {id: tiny, generate: {source: testsrc2, width: 16, height: 16, fps: 30, frames: 1}}
rates_kbps: [100]
warmup_frames: 0
timeout_s: 120
power: {baseline_s: 0}
gates: [{metric: failures, op: "==", value: 0, scope: all}]
"""
Y4M = b"YUV4MPEG2 W16 H16 F30:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(16 * 16 * 3 // 2)
TARGET_EFF = 0.90
TARGET_CPU_MS = 20.0


def sleeper(sleep_s: float) -> tuple[str, ...]:
    """The decoder of every job here, sessions and floor alike: sleep, then copy the input as the output."""
    return ("sh", "-c", f'sleep {sleep_s:g}; cp "$1" "$2"', "decoder")


def write_inventory(path: Path, devices: int, agents: int, work: Path) -> Path:
    lines = ["devices:"]
    for i in range(devices):
        lines.append(
            f"  - {{id: dev-{i:03d}, platform: linux, transport: {{kind: local}}, target: auto, "
            f"host: agent-{i % agents}, workdir: {work}/dev-{i:03d}, power: {{meter: none}}, thermal: {{zones: []}}}}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def specs_for(inv: Path, suite_path: Path, y4m: Path, jobs: int, sleep_s: float, run: str) -> list[SessionSpec]:
    suite = load_suite(suite_path)
    digest = hashlib.sha256(Y4M).hexdigest()
    ref = FileRef(digest, f"{digest}.y4m", len(Y4M))
    decode = (*sleeper(sleep_s), "{input}", "{output}")
    bundle = BundleRef("b" * 64, "sleeper@1", (), decode)
    job_specs = tuple(
        JobSpec(i, JobKey("test", "tiny", 100.0, i), bundle.digest, ref, digest, 30.0, len(Y4M)) for i in range(jobs)
    )
    return [SessionSpec(run, d, suite, (bundle,), job_specs) for d in load_inventory(inv).devices]


def device_floor(work: Path, y4m: Path, devices: int, jobs: int, sleep_s: float) -> float:
    """Wall seconds of every device's jobs as bare decodes (the decode script and the decoder), all devices at once."""
    import threading

    from farm.devices.posix import PosixDevice
    from farm.transports.local import LocalTransport

    decoder = (*sleeper(sleep_s), str(y4m))
    failed: list[str] = []

    def one(i: int) -> None:
        dev = PosixDevice(f"floor-{i:03d}", LocalTransport(), f"{work}/floor-{i:03d}")
        for j in range(jobs):
            job_dir = f"{dev.workdir}/{j}"
            out = dev.decode([*decoder, f"{job_dir}/out.y4m"], job_dir, 120.0)
            if out.exit_status != 0 or out.output_sha is None:
                failed.append(dev.device_id)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(devices)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failed:
        raise SystemExit(f"device floor: {len(failed)} decodes failed, e.g. on {failed[0]}")
    return wall


def measure(executor: object, specs: list[SessionSpec]) -> tuple[float, float, int]:
    """(wall s, controller CPU s, failed jobs) of one run of every spec."""
    failed = [0]

    def on_event(event: Event) -> None:
        if isinstance(event, DeviceDone) and event.status != "ok":
            failed[0] += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    results = executor.run(specs, on_event, Cancel())  # type: ignore[attr-defined]
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    bad = [r for r in results if r.status != "ok"]
    if bad:
        print(f"  {len(bad)} devices not ok, e.g. {bad[0].device_id}: {bad[0].status} {bad[0].error}")
    return wall, cpu, len(bad)


def start_cluster(tmp: Path, inv: Path, agents: int) -> tuple[list[subprocess.Popen[bytes]], str, Path]:
    certs = tmp / "certs"
    write_certs(certs)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tls://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    logs = (tmp / "cluster.log").open("ab")
    farm = [sys.executable, "-m", "farm"]
    procs = [subprocess.Popen([*farm, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--certs", str(certs)],
                              env=env, stdout=logs, stderr=subprocess.STDOUT)]  # fmt: skip
    for a in range(agents):
        argv = [*farm, "agent", "--scheduler", url, "--inventory", str(inv), "--host", f"agent-{a}", "--certs",
                str(certs), "--state", str(tmp / f"agent-{a}"), "--listen", "127.0.0.1"]  # fmt: skip
        procs.append(subprocess.Popen(argv, env=env, stdout=logs, stderr=subprocess.STDOUT))
    return procs, url, certs


def wait_ready(url: str, certs: Path, devices: int, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with connect(url, certs) as client:
                if len(agents_by_device(client)) >= devices:
                    return
        except Exception:
            pass
        time.sleep(0.5)
    raise SystemExit("cluster not ready")


def stats(values: list[float]) -> str:
    return f"min {min(values):.3f} median {statistics.median(values):.3f} max {max(values):.3f}"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--devices", type=int, default=64)
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--jobs", type=int, default=3)
    p.add_argument("--sleep", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--pull-frames", type=int, default=60)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        inv = write_inventory(tmp / "devices.yaml", a.devices, a.agents, tmp / "work")
        suite = tmp / "suite.yaml"
        suite.write_text(SUITE)
        y4m = tmp / "in.y4m"
        y4m.write_bytes(Y4M)
        digest = hashlib.sha256(Y4M).hexdigest()
        local = {digest: y4m}.__getitem__
        procs, url, certs = start_cluster(tmp, inv, a.agents)
        try:
            wait_ready(url, certs, a.devices)
            return run_bench(a, tmp, inv, suite, y4m, local, url, certs)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def run_bench(a: argparse.Namespace, tmp: Path, inv: Path, suite: Path, y4m: Path, local: object, url: str,
              certs: Path) -> int:  # fmt: skip
    ideal = a.jobs * a.sleep
    n_jobs = a.devices * a.jobs
    eff: dict[str, list[float]] = {"threads": [], "dask": [], "floor": []}
    cpu: dict[str, list[float]] = {"threads": [], "dask": []}
    failures = 0
    with connect(url, certs) as client:
        for r in range(a.repeats):
            wall = device_floor(tmp / f"floor-{r}", y4m, a.devices, a.jobs, a.sleep)
            eff["floor"].append(ideal / wall)
            print(f"repeat {r + 1} floor  : wall {wall:.2f}s efficiency {ideal / wall:.3f} (bare decodes); {load()}",
                  flush=True)  # fmt: skip
            for kind in ("threads", "dask"):
                outputs = DecodedCache(tmp / f"out-{kind}-{r}")
                ex: object = (
                    ThreadExecutor(tmp / f"state-{r}", local, outputs) if kind == "threads"  # type: ignore[arg-type]
                    else DaskExecutor(client, local, outputs, agent_wait_s=10)  # type: ignore[arg-type]
                )  # fmt: skip
                specs = specs_for(inv, suite, y4m, a.jobs, a.sleep, f"bench-{kind}-{r}")
                wall, used, bad = measure(ex, specs)
                failures += bad
                eff[kind].append(ideal / wall)
                cpu[kind].append(used * 1000 / n_jobs)
                print(f"repeat {r + 1} {kind:7s}: wall {wall:.2f}s efficiency {ideal / wall:.3f} "
                      f"controller CPU {used * 1000 / n_jobs:.1f} ms/job; {load()}", flush=True)  # fmt: skip
        report(a, eff, cpu, ideal, failures)
        start_floor(client, a.devices, a.repeats)
        pull_vs_score(client, tmp, a.pull_frames, a.repeats)
    ok = statistics.median(eff["dask"]) >= TARGET_EFF and statistics.median(cpu["dask"]) <= TARGET_CPU_MS
    return 0 if ok and not failures else 1


def load() -> str:
    """The machine's load average: on a shared host it moves every number here, so it is printed beside them."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def _now(_: int) -> float:
    return time.time()


def start_floor(client: object, devices: int, repeats: int) -> None:
    """Dask's own floor: how late a trivial task holding one device resource starts after a run's one-graph
    submit (the way DaskExecutor submits: one map, a per-key resources annotation)."""
    from farm.cluster.names import resource

    spreads = []
    for r in range(repeats):
        t0 = time.time()
        keys = [f"floor-{r}-{i}-{t0}" for i in range(devices)]
        need = {k: {resource(f"dev-{i:03d}"): 1} for i, k in enumerate(keys)}
        futs = client.map(_now, range(devices), key=keys, pure=False,  # type: ignore[attr-defined]
                          resources=functools.partial(operator.getitem, need))  # fmt: skip
        starts = sorted(f.result() - t0 for f in futs)
        spreads.append(starts[-1])
    print(f"\nDask floor: {devices} trivial tasks in one graph, one per device resource: last start after submit "
          f"(s): {stats(spreads)}; {load()}")  # fmt: skip


def pull_vs_score(client: object, tmp: Path, frames: int, repeats: int) -> None:
    import imageio_ffmpeg

    from farm.cluster.controller import pull_output
    from farm.quality.score import score

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    src = tmp / "decoded.y4m"
    lavfi = "testsrc2=size=640x360:rate=30"
    subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", lavfi,
                    "-frames:v", str(frames), "-pix_fmt", "yuv420p", str(src)], check=True)  # fmt: skip
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    (tmp / "agent-0" / "outputs").mkdir(parents=True, exist_ok=True)
    (tmp / "agent-0" / "outputs" / f"{digest}.y4m").write_bytes(src.read_bytes())
    addr = next(w for w, i in client.scheduler_info()["workers"].items() if i.get("name") == "farm-agent-agent-0")  # type: ignore[attr-defined]
    pulls, scores = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pull_output(client, addr, digest, tmp / "pulled.y4m")  # type: ignore[arg-type]
        pulls.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        score(tmp / "pulled.y4m", src, ffmpeg=ffmpeg)
        scores.append(time.perf_counter() - t0)
    mb = src.stat().st_size / 1e6
    print(f"\npull vs score of one decoded output ({mb:.1f} MB, 640x360, {frames} frames), {repeats} interleaved:")
    print(f"pull over Dask TLS (s): {stats(pulls)}; {mb / statistics.median(pulls):.0f} MB/s")
    print(f"score psnr+ssim+vmaf (s): {stats(scores)}")
    print(f"ratio score/pull (time, median): {statistics.median(scores) / statistics.median(pulls):.1f}")


def report(a: argparse.Namespace, eff: dict[str, list[float]], cpu: dict[str, list[float]], ideal: float,
           failures: int) -> None:  # fmt: skip
    print(f"\n{a.devices} local devices over {a.agents} agents (farm agent, TLS, loopback), {a.jobs} jobs x "
          f"sleep {a.sleep:g}s each: ideal {ideal:g}s; {a.repeats} interleaved repeats")  # fmt: skip
    print(f"at the end: {load()}")
    print("peer: ThreadExecutor (one thread per device, this process, per-device flock leases)")
    for kind in ("threads", "dask"):
        print(f"{kind:7s} efficiency {stats(eff[kind])}; controller CPU ms/job {stats(cpu[kind])}")
    print(f"floor   efficiency {stats(eff['floor'])} (the same jobs as bare decodes: the decode script and the "
          "decoder, one thread per device, no session, no dispatch)")  # fmt: skip
    ratio = statistics.median(eff["dask"]) / statistics.median(eff["threads"])
    print(f"ratio dask/threads (efficiency, median): {ratio:.3f}")
    floor = statistics.median(eff["dask"]) / statistics.median(eff["floor"])
    print(f"ratio dask/floor (efficiency, median): {floor:.3f}")
    e, c = statistics.median(eff["dask"]), statistics.median(cpu["dask"])
    verdict = "PASS" if e >= TARGET_EFF and c <= TARGET_CPU_MS and not failures else "FAIL"
    print(f"target: dask efficiency >= {TARGET_EFF:.0%} (median {e:.1%}) and controller CPU <= {TARGET_CPU_MS:g} "
          f"ms/job (median {c:.1f}); failed devices {failures}: {verdict}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
