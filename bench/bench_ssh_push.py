"""Push throughput through the farm's SSH transport vs OpenSSH scp, to the same real sshd board, same run.

Also times paramiko's pipelined SFTP (the other design the issue names) so the choice stays measured, and
the orchestration overhead of a warm re-run on a board (wall time per job minus the decoder's own wall time).

    python3 bench/bench_ssh_push.py [--mib 256] [--repeats 3] [--no-overhead]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farm.config.inventory import SshTransport, load_inventory  # noqa: E402
from farm.sim.fleet import start_fleet  # noqa: E402
from farm.transports.ssh import SshLink  # noqa: E402


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-overhead", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fleet = start_fleet(1, Path(tmp) / "sim", exit_with_parent=True)
        try:
            board = fleet.boards[0]
            device = load_inventory(fleet.inventory_path).devices[0]
            assert isinstance(device.transport, SshTransport)
            src = Path(tmp) / "payload.bin"
            with src.open("wb") as f:
                for _ in range(args.mib):
                    f.write(os.urandom(1 << 20))
            size = src.stat().st_size
            link = SshLink(device.id, device.transport)
            link.connect()
            dest = f"{board.workdir}/payload.bin"
            scp = [
                "scp", "-q", "-F", "/dev/null", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={fleet.known_hosts_path}", "-o", "StrictHostKeyChecking=yes",
                "-i", str(fleet.key_path), "-P", str(board.port),
                str(src), f"{board.user}@{board.host}:{board.workdir}/scp.bin",
            ]  # fmt: skip
            client = link._client
            assert client is not None
            sftp = client.open_sftp()
            results: dict[str, list[float]] = {"farm (exec cat stream)": [], "paramiko SFTP (pipelined)": [], "scp": []}
            for _ in range(args.repeats):  # interleaved, so machine load hits all three alike
                results["farm (exec cat stream)"].append(timed(lambda: link.push(src, dest)))
                results["paramiko SFTP (pipelined)"].append(
                    timed(lambda: sftp.put(str(src), f"{board.workdir}/sftp.bin", confirm=True))
                )
                results["scp"].append(timed(lambda: subprocess.run(scp, check=True)))
            sftp.close()
            print(f"push of {args.mib} MiB to a loopback OpenSSH board, median of {args.repeats}")
            rates = {name: size / statistics.median(times) / (1 << 20) for name, times in results.items()}
            for name, rate in rates.items():
                print(f"  {name:28s} {rate:8.1f} MiB/s")
            print(f"ratio farm/scp (throughput): {rates['farm (exec cat stream)'] / rates['scp']:.2f}")
            print(f"ratio sftp/scp (throughput): {rates['paramiko SFTP (pipelined)'] / rates['scp']:.2f}")
            link.close()
            if not args.no_overhead:
                overhead(Path(tmp), fleet.inventory_path)
        finally:
            fleet.stop()


def overhead(tmp: Path, inventory: Path) -> None:
    """Warm re-run on one board: per job, wall time on the host minus the decoder's wall time on the board."""
    import sqlite3

    from tests.support.runs import TINY_SUITE

    suite = tmp / "tiny.yaml"
    suite.write_text(TINY_SUITE.format(gates='  - {metric: failures, op: "==", value: 0, scope: all}'))
    env = {**os.environ, "FARM_STORE": str(tmp / "state" / "results.db")}
    cmd = [sys.executable, "-m", "farm", "run", str(suite), "--bundle", str(ROOT / "examples/bundles/av1-svt"),
           "--inventory", str(inventory)]  # fmt: skip
    for _ in range(2):  # the second run is warm: nothing to encode or push
        subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=ROOT)
    db = sqlite3.connect(tmp / "state" / "results.db")
    (run_id,) = db.execute("SELECT id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
    rows = db.execute(
        "SELECT j.finished_at - j.started_at, m.value FROM jobs j JOIN measurements m ON m.job_id = j.id"
        " WHERE j.run_id = ? AND m.name = 'wall_s'",
        (run_id,),
    ).fetchall()
    over = [(total - decode) * 1000 for total, decode in rows if decode is not None]
    print(
        f"warm re-run on one board: {len(over)} jobs, orchestration overhead per job "
        f"median {statistics.median(over):.1f} ms, max {max(over):.1f} ms (includes output pull and y4m check)"
    )


if __name__ == "__main__":
    main()
