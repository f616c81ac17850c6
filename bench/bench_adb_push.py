"""Push throughput through the farm's ADB transport (adb-shell) vs the official ``adb push``, same emulated phone.

Both push the same random payload to the same emulated phone (a ``farm.sim.phoned`` process: the project's ADB
emulator in its own process, so its Python does not share a GIL with the farm's), interleaved so machine load
hits both alike. The emulator advertises the sync features it implements (farm.sim.adbd.FEATURES), and the
official client's own ``adb features`` output is printed: what it will use. With ``--profile`` it also prints
where the farm's push spends its time (cProfile, top entries).

Target (issue 17): farm push >= 1.0x the throughput of the official ``adb push`` (median of >= 5 repeats).

    python3 bench/bench_adb_push.py [--mib 64] [--repeats 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import machine, rates, spread, timed, verdict  # noqa: E402

from farm.config.inventory import AdbTransport, load_inventory  # noqa: E402
from farm.sim.adbd import FEATURES, MAX_PAYLOAD  # noqa: E402
from farm.sim.fleet import start_fleet  # noqa: E402
from farm.transports.adb import AdbLink  # noqa: E402

TARGET = 1.0

ADB = Path("/usr/bin/adb")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (at least 5 to judge)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if not ADB.exists():
        sys.exit(f"{ADB} not found: install the Debian adb package (scripts/system-deps)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        fleet = start_fleet(0, tmp / "sim", phones=1, exit_with_parent=True)
        adb_env: dict[str, str] = {}
        try:
            phone = fleet.phones[0]
            device = load_inventory(fleet.inventory_path).devices[0]
            assert isinstance(device.transport, AdbTransport) and fleet.adb_key_path is not None
            src = tmp / "payload.bin"
            with src.open("wb") as f:
                for _ in range(args.mib):
                    f.write(os.urandom(1 << 20))
            size = src.stat().st_size
            # the official client: a private adb server that holds the fleet's key as a vendor key
            (tmp / "home").mkdir()
            (tmp / "vendor").mkdir()
            shutil.copy(fleet.adb_key_path, tmp / "vendor" / "farm.adb_key")
            adb_env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp / "home"),
                "ADB_VENDOR_KEYS": str(tmp / "vendor"), "ADB_SERVER_SOCKET": f"tcp:localhost:{free_port()}",
                "ADB_MDNS": "0",
            }  # fmt: skip
            subprocess.run([str(ADB), "start-server"], env=adb_env, check=True, capture_output=True)
            serial = phone.address
            subprocess.run([str(ADB), "connect", serial], env=adb_env, check=True, capture_output=True, timeout=15)
            subprocess.run([str(ADB), "-s", serial, "wait-for-device"], env=adb_env, check=True, timeout=15)
            link = AdbLink(device.id, device.transport)
            link.connect()
            farm_dest, adb_dest = str(phone.tmpdir / "farm.bin"), str(phone.tmpdir / "adb.bin")
            adb_push = [str(ADB), "-s", serial, "push", str(src), adb_dest]
            results: dict[str, list[float]] = {"farm (adb-shell sync)": [], "adb push (official)": []}
            for _ in range(args.repeats):
                results["farm (adb-shell sync)"].append(timed(lambda: link.push(src, farm_dest)))
                results["adb push (official)"].append(
                    timed(lambda: subprocess.run(adb_push, env=adb_env, check=True, capture_output=True, timeout=300))
                )
            for dest in (farm_dest, adb_dest):
                assert Path(dest).read_bytes() == src.read_bytes(), f"{dest} differs from the payload"
            version = subprocess.run([str(ADB), "version"], env=adb_env, capture_output=True, text=True).stdout
            used = subprocess.run([str(ADB), "-s", serial, "features"], env=adb_env, capture_output=True, text=True)
            print(f"push of {args.mib} MiB to an emulated phone (farm.sim.phoned), {args.repeats} interleaved repeats")
            print(machine())
            print(f"emulator: max payload {MAX_PAYLOAD >> 10} KiB, advertises {','.join(FEATURES)}")
            print(f"peer: {', '.join(version.splitlines()[:2])}; features it uses: {','.join(used.stdout.split())}")
            mibs = {name: rates(size, times) for name, times in results.items()}
            for name, series in mibs.items():
                print(f"  {name:24s} MiB/s: {spread(series, '.1f')}")
            ratio = statistics.median(mibs["farm (adb-shell sync)"]) / statistics.median(mibs["adb push (official)"])
            print(f"ratio farm/adb (throughput): {ratio:.2f} (medians)")
            code = 0 if verdict("farm/adb push (throughput)", ratio, ">=", TARGET, args.repeats) else 1
            if args.profile:
                profiler = cProfile.Profile()
                profiler.runcall(link.push, src, farm_dest)
                stats = pstats.Stats(profiler)
                stats.sort_stats("tottime").print_stats(8)
            link.close()
        finally:
            if adb_env:
                subprocess.run([str(ADB), "kill-server"], env=adb_env, capture_output=True)
            fleet.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
