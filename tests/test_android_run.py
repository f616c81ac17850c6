"""Whole runs on emulated Android phones (the farm's ADB emulator, simulated battery) plus the local device,
and the faults a phone on a USB cable has: dropped connections mid-push and mid-decode, a phone that dies,
a decoder that hangs, a phone left on its charger, a wrong target, and odd paths."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from farm.bundle import write_sums
from farm.sim.fleet import Fleet
from farm.sim.phone import SimPhone
from tests.conftest import alive, wait_for
from tests.sim_fixtures import PhoneFactory
from tests.support.runs import bundle_args, farm, inventory_with_local, sim_suite, variant

pytestmark = pytest.mark.slow

FAILURES = '  - {metric: failures, op: "==", value: 0, scope: all}'


def db(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "state" / "results.db")


def measurements(tmp_path: Path, device: str, name: str) -> list[tuple[float | None, str | None]]:
    rows = db(tmp_path).execute(
        "SELECT m.value, m.missing_reason FROM measurements m JOIN jobs j ON j.id = m.job_id "
        "WHERE j.device_id = ? AND m.name = ?",
        (device, name),
    )
    return list(rows)


def traces(tmp_path: Path, device: str, series: str) -> list[tuple[int, str | None]]:
    rows = db(tmp_path).execute(
        "SELECT t.points, t.missing_reason FROM job_traces t JOIN jobs j ON j.id = t.job_id "
        "WHERE j.device_id = ? AND t.series = ?",
        (device, series),
    )
    return list(rows)


def watch(cond: Callable[[], bool], action: Callable[[], None]) -> tuple[threading.Thread, threading.Event]:
    """Run ``action`` once as soon as ``cond`` holds (within 60 s), in the background."""
    done = threading.Event()

    def loop() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if cond():
                action()
                done.set()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread, done


def started(phone: SimPhone) -> Callable[[], bool]:
    return lambda: bool(list(phone.workdir.glob("jobs/*/*/out.y4m.started")))


def test_two_phones_and_local(phone_fleet: Fleet, tmp_path: Path) -> None:
    inv = inventory_with_local(phone_fleet.inventory_path, tmp_path / "devices.yaml")
    # phone-2 works in a folder whose name is shell syntax: it must stay a name
    data = yaml.safe_load(inv.read_text())
    odd = f"{phone_fleet.phone('phone-2').tmpdir}/f arm $(touch PWNED) ;'q"
    data["devices"][1]["workdir"] = odd
    inv.write_text(yaml.safe_dump(data))
    report = tmp_path / "r.json"
    gates = FAILURES + '\n  - {metric: energy_per_frame_j, op: "<=", value: 100, scope: "tag:android"}'
    gates += '\n  - {metric: consistency, op: "==", value: bitexact, scope: all}'
    code, out = farm(
        tmp_path, "run", sim_suite(tmp_path, gates), *bundle_args(), "--inventory", str(inv), "--json", str(report)
    )
    assert code == 0, out
    assert "SIMULATED" in out
    result = json.loads(report.read_text())
    devices = {d["id"]: d["properties"] for d in result["devices"]}
    for phone in ("phone-1", "phone-2"):
        props = devices[phone]
        assert props["android.serialno"] == phone and props["android.sdk"] == "34" and "android.fingerprint" in props
        assert props["power_meter"].startswith("battery fuel gauge") and props["power_meter"].endswith("[SIMULATED]")
        assert "charger" in props
        rows = [r for r in result["results"] if r["device"] == phone]
        assert rows and all(r["power_w"] and r["power_w"] > 0 and r["energy_per_frame_j"] for r in rows)
        assert all(r["temp_max_c"] is not None for r in rows)
        assert {v for v, _ in measurements(tmp_path, phone, "charging")} == {0.0}
        assert all(v is not None and 20 < v < 80 for v, _ in measurements(tmp_path, phone, "battery_temp_c"))
        # the fuel gauge's samples and the zones' are kept per job as traces over the decode (schema 8)
        for series in ("power_w", "temp_c"):
            kept = traces(tmp_path, phone, series)
            assert len(kept) == 12 and all(n >= 1 and why is None for n, why in kept), (series, kept)
        # the charger is given back after the run
        node = phone_fleet.phone(phone).supply.suspend_node
        assert node.read_text().strip() == "0"
    assert "uV, uA, negative while discharging" in devices["phone-1"]["power_meter"]
    assert "mV, mA, positive while discharging" in devices["phone-2"]["power_meter"]
    consistency = next(g for g in result["gates"] if g["metric"] == "consistency")
    assert consistency["verdict"] == "pass" and "24 decodes" in consistency["detail"]  # 8 bitstreams x 3 devices
    assert Path(odd, "cas").is_dir()
    assert not list(phone_fleet.phone("phone-2").root.rglob("PWNED")) and not list(tmp_path.rglob("PWNED"))
    code, out = farm(tmp_path, "run", sim_suite(tmp_path, gates), *bundle_args(), "--inventory", str(inv))
    assert code == 0 and "pushed 0 bytes in 0 files" in out, out


def test_phone_on_its_charger_reports_power_missing(sim_phone: PhoneFactory, tmp_path: Path) -> None:
    sim_phone("plugged")
    inv = sim_phone.inventory(tmp_path / "devices.yaml", charger_suspend=False)
    gates = FAILURES + '\n  - {metric: power_w, op: "<=", value: 100}'
    code, out = farm(tmp_path, "run", sim_suite(tmp_path, gates), *bundle_args(), "--inventory", str(inv))
    assert code == 1, out
    assert "warning: battery Charging" in out
    assert "missing" in out
    charging = measurements(tmp_path, "plugged", "charging")
    assert charging and {v for v, _ in charging} == {1.0}
    power = measurements(tmp_path, "plugged", "power_w")
    assert power and all(v is None and r is not None and "'Charging'" in r for v, r in power)
    assert {(n, r) for n, r in traces(tmp_path, "plugged", "power_w")} == {(0, r) for _, r in power}  # same reason


def test_wrong_target_is_refused_with_the_phones_abis(sim_phone: PhoneFactory, tmp_path: Path) -> None:
    sim_phone("x86")
    inv = sim_phone.inventory(tmp_path / "devices.yaml")
    inv.write_text(inv.read_text().replace("target: android-x86_64", "target: android-arm64"))
    arm = tmp_path / "arm"
    shutil.copytree(bundle_args()[1], arm)
    manifest = yaml.safe_load((arm / "bundle.yaml").read_text())
    manifest["targets"]["android-arm64"] = manifest["targets"]["android-x86_64"]
    (arm / "bundle.yaml").write_text(yaml.safe_dump(manifest))
    write_sums(arm)
    code, out = farm(tmp_path, "run", sim_suite(tmp_path, FAILURES), "--bundle", str(arm), "--inventory", str(inv))
    assert code == 3, out  # the only device could not run anything
    assert "no device could run" in out
    assert "x86: devices.yaml says target android-arm64 but the phone's ABIs are x86_64" in " ".join(out.split())


def test_connection_dropped_mid_push_restages(sim_phone: PhoneFactory, tmp_path: Path) -> None:
    phone = sim_phone("cable")
    inv = sim_phone.inventory(tmp_path / "devices.yaml")
    heavy = tmp_path / "heavy"
    shutil.copytree(bundle_args()[1], heavy)
    (heavy / "weights.bin").write_bytes(os.urandom(24 << 20))
    manifest = yaml.safe_load((heavy / "bundle.yaml").read_text())
    manifest["targets"]["android-x86_64"]["files"].append("weights.bin")
    (heavy / "bundle.yaml").write_text(yaml.safe_dump(manifest))
    write_sums(heavy)
    thread, dropped = watch(lambda: bool(list(phone.workdir.glob("bundles/*/weights.bin.part.*"))),
                            phone.drop_connections)  # fmt: skip
    code, out = farm(tmp_path, "run", sim_suite(tmp_path, FAILURES), "--bundle", str(heavy), "--inventory", str(inv))
    thread.join()
    assert dropped.is_set()
    assert code == 0, out
    assert "link dropped while staging, retrying" in out
    assert not list(phone.workdir.rglob("*.part.*"))  # the half-pushed copy never became a cached file
    staged = list(phone.workdir.glob("bundles/*/weights.bin"))
    assert len(staged) == 1 and staged[0].read_bytes() == (heavy / "weights.bin").read_bytes()


def test_connection_dropped_mid_decode_retries_the_job_once(sim_phone: PhoneFactory, tmp_path: Path) -> None:
    phone = sim_phone("wobbly")
    inv = sim_phone.inventory(tmp_path / "devices.yaml")
    marker = "1.7320"
    once = tmp_path / "slowed-once"  # only the first decode is slow: the one the link drops under
    slow = variant(
        tmp_path, "slow",
        ["sh", "-c", f'if [ ! -e "$2" ]; then : >"$2"; touch "$1.started"; sleep {marker}; fi; shift 2; exec "$@"',
         "w", "{output}", str(once)],
    )  # fmt: skip
    thread, dropped = watch(started(phone), phone.drop_connections)
    code, out = farm(tmp_path, "run", sim_suite(tmp_path, FAILURES), "--bundle", str(slow), "--inventory", str(inv))
    thread.join()
    assert dropped.is_set()
    assert code == 0, out
    assert "link dropped, retrying job 1" in out
    assert not alive(f"sleep {marker}")


def test_phone_that_dies_mid_run_fails_its_jobs_and_local_goes_on(sim_phone: PhoneFactory, tmp_path: Path) -> None:
    phone = sim_phone("doomed")
    inv = inventory_with_local(sim_phone.inventory(tmp_path / "phones.yaml"), tmp_path / "devices.yaml")
    slow = variant(tmp_path, "slow", ["sh", "-c", 'touch "$1.started"; sleep 0.5; shift; exec "$@"', "w", "{output}"])
    thread, died = watch(started(phone), phone.stop)
    code, out = farm(tmp_path, "run", sim_suite(tmp_path, FAILURES), "--bundle", str(slow), "--inventory", str(inv))
    thread.join()
    assert died.is_set()
    assert code == 1, out
    assert "gate fail: failures == 0 [all]: 8 of 16 jobs failed" in " ".join(out.split())
    failed = db(tmp_path).execute("SELECT device_id, error FROM jobs WHERE status = 'failed'").fetchall()
    assert {d for d, _ in failed} == {"doomed"} and all(e for _, e in failed)
    ok = db(tmp_path).execute("SELECT count(*) FROM jobs WHERE device_id = 'local' AND status = 'ok'").fetchone()
    assert ok == (8,)


def test_hung_decoder_is_killed_on_the_phone(sim_phone: PhoneFactory, tmp_path: Path) -> None:
    sim_phone("stuck")
    inv = sim_phone.inventory(tmp_path / "devices.yaml")
    marker = "71.4142"
    hang = variant(tmp_path, "hang", ["sh", "-c", f"sleep {marker}", "w"])
    code, out = farm(
        tmp_path, "run", sim_suite(tmp_path, FAILURES, timeout_s=1), "--bundle", str(hang), "--inventory", str(inv)
    )
    assert code == 1 and "decoder timed out after 1s" in out
    # the transport's wrapper shell prints its end marker as its last act, so the run can return a moment before
    # that shell has exited; a decoder (or wrapper) that is still there after 5 s was left behind
    assert wait_for(lambda: not alive(marker), 5.0), alive(marker)
