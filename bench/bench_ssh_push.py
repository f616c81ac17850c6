"""Push throughput through the farm's SSH transport vs OpenSSH scp with the same cipher, to the same real sshd.

Like with like: scp is forced onto the cipher the farm's paramiko link negotiated (AES-GCM), and both print it;
scp on OpenSSH's default cipher (chacha20-poly1305) is printed beside as a second peer, not as the target. All
transfers push the same random payload to the same loopback OpenSSH board (farm.sim), interleaved (farm, scp
same cipher, scp default, paramiko SFTP, farm, ...) so machine load hits each alike. paramiko's pipelined SFTP
is timed too, so the choice of exec+cat over SFTP stays measured. scp connects and authenticates on each call,
the farm's link is already up: scp of an empty file in the same repeat is subtracted from each scp, so the
peer's number is its transfer alone (stricter on the farm than scp's raw time). The sshd and the client share
this host's cores: on loopback both ends' crypto competes for the same CPUs, which a real board does not.

Then the orchestration overhead of a warm re-run on a board: per job, the host's wall time for the job minus
the decoder's own wall time on the board. A warm run has nothing to encode, push or pull (every output digest is
already on the host), so this is commands, timing and bookkeeping only.

Target (issue 17): farm push >= 1.0x the throughput of scp with the same cipher (median of >= 5 repeats).

    python3 bench/bench_ssh_push.py [--mib 256] [--repeats 5] [--no-overhead]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import machine, rates, spread, timed, verdict  # noqa: E402

from farm.config.inventory import SshTransport, load_inventory  # noqa: E402
from farm.sim.fleet import Fleet, start_fleet  # noqa: E402
from farm.transports.ssh import SshLink  # noqa: E402

TARGET = 1.0
FARM = "farm (exec cat stream)"
SCP_SAME = "scp, same cipher"
SCP_DEFAULT = "scp, OpenSSH default cipher"
SFTP = "paramiko SFTP (pipelined)"
SETUP = "scp setup"


def scp_argv(fleet: Fleet, src: Path, name: str, cipher: str | None) -> list[str]:
    board = fleet.boards[0]
    argv = ["scp", "-q", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "Compression=no"]
    argv += ["-o", f"UserKnownHostsFile={fleet.known_hosts_path}", "-o", "StrictHostKeyChecking=yes"]
    argv += ["-c", cipher] if cipher else []
    argv += ["-i", str(fleet.key_path), "-P", str(board.port), str(src), f"{board.user}@{board.host}:{name}"]
    return argv


def scp_cipher(argv: list[str]) -> str:
    """The cipher scp really negotiated, from ``-v`` (the client prints ``cipher: X`` per direction)."""
    res = subprocess.run(
        [argv[0], "-v", *(a for a in argv[1:] if a != "-q")], capture_output=True, text=True, check=True
    )
    for line in res.stderr.splitlines():
        if "cipher:" in line and "client->server" in line:
            return line.split("cipher:")[1].split()[0]
    return "unknown (scp -v did not say)"


def payload(path: Path, mib: int) -> int:
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    return path.stat().st_size


def measure(fleet: Fleet, tmp: Path, mib: int, repeats: int) -> int:
    board = fleet.boards[0]
    device = load_inventory(fleet.inventory_path).devices[0]
    assert isinstance(device.transport, SshTransport)
    src = tmp / "payload.bin"
    size = payload(src, mib)
    link = SshLink(device.id, device.transport)
    link.connect()
    client = link._client
    assert client is not None
    transport = client.get_transport()
    assert transport is not None
    farm_cipher = transport.local_cipher
    same = scp_argv(fleet, src, f"{board.workdir}/scp-same.bin", farm_cipher)
    default = scp_argv(fleet, src, f"{board.workdir}/scp-default.bin", None)
    (tmp / "empty.bin").write_bytes(b"")
    empty = scp_argv(fleet, tmp / "empty.bin", f"{board.workdir}/empty.bin", farm_cipher)
    sftp = client.open_sftp()
    runs: dict[str, Callable[[], object]] = {
        FARM: lambda: link.push(src, f"{board.workdir}/farm.bin"),
        SCP_SAME: lambda: subprocess.run(same, check=True),
        SCP_DEFAULT: lambda: subprocess.run(default, check=True),
        SFTP: lambda: sftp.put(str(src), f"{board.workdir}/sftp.bin", confirm=True),
        SETUP: lambda: subprocess.run(empty, check=True),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):  # interleaved, so machine load hits all alike
        for name, run in runs.items():
            times[name].append(timed(run))
    sftp.close()
    window, packet = transport.default_window_size, transport.default_max_packet_size
    link.close()
    print(f"push of {mib} MiB to a loopback OpenSSH board (farm.sim), {repeats} interleaved repeats")
    print(machine())
    print(f"farm: paramiko, cipher {farm_cipher}, window {window >> 20} MiB, max packet {packet >> 10} KiB")
    print(f"peer: scp -c {farm_cipher} (negotiated: {scp_cipher(same)}); scp default: {scp_cipher(default)}")
    # scp connects and authenticates on every call while the farm's link is already up: subtract scp's setup
    # (an empty file's scp in the same repeat) so the peer is measured at the wire's speed, as the farm is
    setup = times.pop(SETUP)
    print(f"scp connection setup (empty file) s: {spread(setup)}; subtracted from each scp of the same repeat")
    for name in (SCP_SAME, SCP_DEFAULT):
        times[name] = [max(t - s, 1e-6) for t, s in zip(times[name], setup, strict=True)]
    mibs = {name: rates(size, t) for name, t in times.items()}
    for name, series in mibs.items():
        print(f"  {name:30s} MiB/s: {spread(series, '.1f')}")
    ratio = statistics.median(mibs[FARM]) / statistics.median(mibs[SCP_SAME])
    print(f"ratio farm/scp (throughput): {ratio:.2f} (same cipher, {farm_cipher}; median)")
    farm = statistics.median(mibs[FARM])
    print(f"ratio farm/scp-default (throughput): {farm / statistics.median(mibs[SCP_DEFAULT]):.2f}")
    print(f"ratio sftp/scp (throughput): {statistics.median(mibs[SFTP]) / statistics.median(mibs[SCP_SAME]):.2f}")
    return 0 if verdict("farm/scp same cipher (throughput)", ratio, ">=", TARGET, repeats) else 1


def overhead(tmp: Path, inventory: Path) -> None:
    """Warm re-run on one board: per job, wall time on the host minus the decoder's wall time on the board."""
    from tests.support.runs import TINY_SUITE

    suite = tmp / "tiny.yaml"
    suite.write_text(TINY_SUITE.format(gates='  - {metric: failures, op: "==", value: 0, scope: all}'))
    env = {**os.environ, "FARM_STORE": str(tmp / "state" / "results.db")}
    cmd = [sys.executable, "-m", "farm", "run", str(suite), "--bundle", str(ROOT / "examples/bundles/av1-svt"),
           "--inventory", str(inventory)]  # fmt: skip
    for _ in range(2):  # the second run is warm: nothing to encode, push or pull
        subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=ROOT)
    db = sqlite3.connect(tmp / "state" / "results.db")
    (run_id,) = db.execute("SELECT id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
    rows = db.execute(
        "SELECT j.finished_at - j.started_at, m.value FROM jobs j JOIN measurements m ON m.job_id = j.id"
        " WHERE j.run_id = ? AND m.name = 'wall_s'",
        (run_id,),
    ).fetchall()
    db.close()
    over = [(total - decode) * 1000 for total, decode in rows if decode is not None]
    print(
        f"warm re-run on one board: {len(over)} jobs; per job, host wall minus decoder wall (ms): {spread(over, '.1f')}"
    )
    print("  (commands, on-device timing, power window, hashing and bookkeeping; a warm run pulls nothing)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (at least 5 to judge)")
    parser.add_argument("--no-overhead", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fleet = start_fleet(1, Path(tmp) / "sim", exit_with_parent=True)
        try:
            code = measure(fleet, Path(tmp), args.mib, args.repeats)
            if not args.no_overhead:
                overhead(Path(tmp), fleet.inventory_path)
        finally:
            fleet.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
