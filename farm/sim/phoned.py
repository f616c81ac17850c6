"""One emulated Android phone as a process: the ADB emulator plus its SIMULATED battery and thermal zone.

Why a process of its own: ``farm sim up`` returns while the phones keep running, and a phone's power must follow
what *that phone* runs. Run as::

    python -m farm.sim.phoned --root DIR --key ADBKEY.pub --ready FILE [--serial S] [battery/model options]

It serves ADB on 127.0.0.1 (a free port outside 5555-5585, written with the pid to ``--ready`` as JSON once it
listens), runs every command in ``--root`` (see :mod:`farm.sim.adbd`), and every ``--period`` seconds turns the
CPU time of its command processes into power (:mod:`farm.sim.loadmodel`), steps the battery
(:mod:`farm.sim.battery`, honouring the farm's writes to ``input_suspend``) and rewrites the phone's sysfs.

``SIGUSR1`` drops every host connection (and the commands running on them) as a USB unplug or an adbd
restart would; the phone keeps listening, so the host can reconnect.

It is a child subreaper like :mod:`farm.sim.loadd`, so background jobs the farm starts with ``setsid ... &``
stay in its tree (counted, and killed when the phone stops). Its own CPU time (the ADB protocol in Python) is
not counted: a real phone's adbd is native and cheap, this one is neither.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from farm.fileio import write_atomic
from farm.sim import loadd
from farm.sim.adbd import AdbDevice
from farm.sim.battery import Battery, BatteryParams, PowerSupplyTree
from farm.sim.loadmodel import LoadModel, LoadParams
from farm.sim.sysfs import SysfsTree


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m farm.sim.phoned", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the phone's sandbox root (its '/')")
    parser.add_argument("--key", type=Path, action="append", default=[], help="an ADB public key the phone trusts")
    parser.add_argument("--ready", type=Path, required=True, help="JSON file written once the phone listens")
    parser.add_argument("--serial", default="farm-emulator")
    parser.add_argument("--prop", action="append", default=[], help="a device property KEY=VALUE (getprop)")
    parser.add_argument("--period", type=float, default=0.1, help="seconds between sensor updates")
    parser.add_argument("--exit-with-parent", action="store_true")
    defaults = BatteryParams()
    parser.add_argument("--level", type=float, default=defaults.level)
    parser.add_argument("--no-charger", dest="charger", action="store_false", help="start unplugged")
    parser.add_argument("--current-sign", type=int, choices=(1, -1), default=defaults.current_sign)
    parser.add_argument("--current-unit", choices=("uA", "mA"), default=defaults.current_unit)
    parser.add_argument("--voltage-unit", choices=("uV", "mV"), default=defaults.voltage_unit)
    loadd.add_param_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params = LoadParams(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LoadParams)})
    props = dict(p.split("=", 1) for p in args.prop if "=" in p)
    battery = Battery(
        BatteryParams(
            level=args.level, charger=args.charger, current_sign=args.current_sign,
            current_unit=args.current_unit, voltage_unit=args.voltage_unit,
        )
    )  # fmt: skip
    model = LoadModel(params)
    thermal = SysfsTree(args.root, rails=False)
    supply = PowerSupplyTree(args.root)
    thermal.create(model)
    supply.create(battery, model)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, loadd.on_signal)
    drop = threading.Event()
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: drop.set())
    parent = os.getppid()
    device = AdbDevice(args.root, trusted_keys=list(args.key), serial=args.serial, properties=props)
    try:
        loadd.set_child_subreaper()
        port = device.start()
        write_atomic(args.ready, json.dumps({"pid": os.getpid(), "port": port}) + "\n")
        print(f"phoned: {args.serial} listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        _loop(args, device, model, battery, thermal, supply, parent, drop)
    except loadd.Stop as stop:
        print(f"phoned: {stop}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        device.stop()
        loadd.kill_tree(os.getpid(), reap=True)
    return 0


def _loop(
    args: argparse.Namespace, device: AdbDevice, model: LoadModel, battery: Battery, thermal: SysfsTree,
    supply: PowerSupplyTree, parent: int, drop: threading.Event,
) -> None:  # fmt: skip
    me = os.getpid()
    account = loadd.TreeCpu(me, count_root_own=False)
    scanner = loadd.TreeScanner(me)
    last_ticks = account.sample(scanner.scan(()))
    last = time.monotonic()
    while True:
        time.sleep(args.period)
        now = time.monotonic()
        if drop.is_set():
            drop.clear()
            device.kill_connections()
            print("phoned: dropped every connection (SIGUSR1)", file=sys.stderr, flush=True)
        table = scanner.scan(account.members())
        device.reap_orphans([pid for pid, st in table.items() if st.ppid == me and st.state == "Z"])
        if args.exit_with_parent and os.getppid() != parent:
            print(f"phoned: parent {parent} is gone; stopping", file=sys.stderr)
            return
        ticks = account.sample(table)
        model.step((ticks - last_ticks) / loadd.CLK_TCK, now - last)
        suspended = supply.read_suspend()
        if suspended is not None:
            battery.suspended = suspended
        battery.step(model.power_w, now - last)
        thermal.update(model)
        supply.update(battery, model)
        last_ticks, last = ticks, now


if __name__ == "__main__":
    sys.exit(main())
