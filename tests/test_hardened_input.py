"""Hostile or absurd input is refused at load: exit 2, with the file:line: field that is wrong, before anything runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from farm.config.suite import load_suite
from farm.errors import InputError
from tests.support.cli import EXAMPLES, LOCAL_INVENTORY, Result, farm, suite_text, write


def _bomb(levels: int = 9) -> str:
    """The classic "billion laughs": each level repeats the one before it ten times (10**9 values)."""
    lines = ["la: &a [" + ", ".join(["lol"] * 10) + "]"]
    for i in range(1, levels):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"l{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def _run(tmp_path: Path, suite: Path, *extra: str, inventory: str = LOCAL_INVENTORY) -> Result:
    inv = write(tmp_path / "devices.yaml", inventory)
    args = ["run", str(suite), "--bundle", str(EXAMPLES / "av1-svt"), "--inventory", str(inv), *extra]
    return farm(*args, store=tmp_path / "store" / "results.db")


def test_alias_bomb_in_a_suite_is_refused_fast(tmp_path: Path) -> None:
    bomb = _bomb()
    assert len(bomb) < 530  # the bomb was 530 bytes: half a kilobyte on disk, 10**9 values expanded
    suite = write(tmp_path / "bomb.yaml", "name: bomb\n" + bomb)
    res = _run(tmp_path, suite)
    assert res.code == 2, res.output
    assert f"{suite}:6: le: expands to 111111 values, over the cap" in res.output  # the first key over the cap
    start = time.monotonic()  # timed without the CLI's first imports, which are not the loader's cost
    with pytest.raises(InputError):
        load_suite(suite)
    assert time.monotonic() - start < 0.2


def test_alias_bomb_in_an_inventory_is_refused_with_its_line(tmp_path: Path) -> None:
    inv = write(
        tmp_path / "devices.yaml", LOCAL_INVENTORY + "extra:\n" + "".join("  " + x for x in _bomb().splitlines(True))
    )
    res = farm("devices", "--inventory", inv, store=tmp_path / "results.db")
    assert res.code == 2, res.output
    assert f"{inv}:8: extra.le: expands to 111111 values" in res.output  # the first key over the cap


def test_an_alias_inside_itself_is_refused(tmp_path: Path) -> None:
    suite = write(tmp_path / "loop.yaml", "name: x\nloop: &a [1, *a]\n")
    res = _run(tmp_path, suite)
    assert res.code == 2 and f"{suite}:2: nested deeper than" in res.output, res.output


def test_ordinary_aliases_still_work(tmp_path: Path) -> None:
    suite = write(tmp_path / "s.yaml", suite_text(rates="&r [150, 300]", extra="x-rates: *r\n"))
    res = _run(tmp_path, suite)
    assert "x-rates: unknown key" in res.output  # the alias expanded; the suite's own check then speaks


@pytest.mark.parametrize(
    ("line", "field", "expect"),
    [
        ("timeout_s: .inf", "timeout_s", "finite number"),
        ("timeout_s: 0", "timeout_s", "greater than 0"),
        ("timeout_s: 1e9", "timeout_s", "less than or equal to 86400"),
        ("power: {baseline_s: 1e9}", "power.baseline_s", "less than or equal to 600"),
        ("power: {sample_hz: .nan}", "power.sample_hz", "finite number"),
        ("power: {sample_hz: 1e6}", "power.sample_hz", "less than or equal to 1000"),
        ("thermal: {timeout_s: .inf}", "thermal.timeout_s", "finite number"),
        ("thermal: {start_below_c: 1e9}", "thermal.start_below_c", "less than or equal to 150"),
        ("repeats: 1000000", "repeats", "less than or equal to 1000"),
        ("warmup_frames: 1000000000", "warmup_frames", "less than or equal to 100000"),
    ],
)
def test_non_finite_or_absurd_suite_numbers_are_refused(tmp_path: Path, line: str, field: str, expect: str) -> None:
    suite = write(tmp_path / "s.yaml", suite_text(extra=line + "\n"))
    res = _run(tmp_path, suite)
    assert res.code == 2, res.output
    assert f"{suite}:8: {field}: " in res.output and expect in res.output, res.output


@pytest.mark.parametrize(
    ("rates", "expect"),
    [("[.nan, 300]", "finite number"), ("[150, .inf]", "finite number"), ("[-5, 300]", "greater than 0"),
     ("[150, 1e12]", "less than or equal to 1000000")],
)  # fmt: skip
def test_bad_rates_never_reach_ffmpeg(tmp_path: Path, rates: str, expect: str) -> None:
    suite = write(tmp_path / "s.yaml", suite_text(rates=rates))
    res = _run(tmp_path, suite)
    assert res.code == 2, res.output
    assert f"{suite}:5: rates_kbps[" in res.output and expect in res.output, res.output
    assert not (tmp_path / "store" / "cache" / "bitstreams").exists()


@pytest.mark.parametrize(
    ("setting", "expect"),
    [("io_timeout_s: .inf", "finite number"), ("connect_timeout_s: 1e9", "less than or equal to 300"),
     ("connect_timeout_s: -1", "greater than 0")],
)  # fmt: skip
def test_non_finite_or_absurd_link_timeouts_are_refused(tmp_path: Path, setting: str, expect: str) -> None:
    inv = write(
        tmp_path / "devices.yaml",
        "devices:\n  - id: b\n    platform: linux\n    target: linux-x86_64\n"
        f"    transport: {{kind: ssh, host: 127.0.0.1, user: u, {setting}}}\n",
    )
    res = farm("devices", "--inventory", inv, store=tmp_path / "results.db")
    assert res.code == 2, res.output
    assert f"{inv}:5: devices[0].transport.{setting.split(':')[0]}: " in res.output and expect in res.output


BD_GATES = """  - {metric: failures, op: "==", value: 0, scope: all}
  - {metric: bd_rate.psnr_yuv, op: "<=", value: 0}
  - {metric: fps, op: ">=", value: 1}
  - {metric: bd_rate.vmaf, op: "<=", value: 0}
"""


def test_a_bd_rate_gate_without_an_anchor_is_refused_before_anything_runs(tmp_path: Path) -> None:
    suite = write(tmp_path / "s.yaml", suite_text(gates=BD_GATES))
    res = _run(tmp_path, suite)
    assert res.code == 2, res.output
    assert f"{suite}:8: gates[1].metric: bd_rate.psnr_yuv needs an anchor bundle" in res.output
    assert f"{suite}:10: gates[3].metric: bd_rate.vmaf needs an anchor bundle" in res.output
    assert "--anchor" in res.output
    assert not (tmp_path / "store" / "results.db").exists()  # no run was even recorded
    assert not (tmp_path / "store" / "cache" / "bitstreams").exists()  # nothing encoded


def test_a_bd_rate_gate_with_the_suites_own_anchor_is_accepted(tmp_path: Path) -> None:
    from farm.config.suite import anchor_problems

    suite = write(tmp_path / "s.yaml", suite_text(gates=BD_GATES, extra=f"anchor: {EXAMPLES / 'hevc-x265'}\n"))
    loaded = load_suite(suite)
    assert anchor_problems(loaded, ["hevc-x265"] if loaded.anchor is not None else []) == []
    assert [p.line for p in anchor_problems(loaded, [])] == [8, 10]


def _entry(device_id: str, transport: str, workdir: str | None = None, platform: str = "linux") -> str:
    target = "ios-arm64" if platform == "ios" else "linux-x86_64"
    text = f"  - id: {device_id}\n    platform: {platform}\n    target: {target}\n    transport: {transport}\n"
    return text + (f"    workdir: {workdir}\n" if workdir else "")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("{kind: ssh, host: Board1, user: u}", None), ("{kind: ssh, host: board1, port: 22, user: u}", None)),
        (("{kind: ssh, host: b, user: u}", "/w"), ("{kind: ssh, host: b, user: u}", "/w/")),
        (("{kind: adb, address: '10.0.0.5'}", None), ("{kind: adb, address: '10.0.0.5:5555'}", None)),
        (("{kind: adb, serial: R58M}", "/data/local/tmp/x"), ("{kind: adb, serial: R58M}", "/data/local/tmp/x")),
        (("{kind: local}", "/tmp/farm"), ("{kind: local}", "/tmp/farm")),
    ],
)
def test_two_entries_reaching_one_device_and_workdir_are_refused(
    tmp_path: Path, a: tuple[str, str | None], b: tuple[str, str | None]
) -> None:
    first = _entry("one", *a)
    inv = write(tmp_path / "devices.yaml", "devices:\n" + first + _entry("two", *b))
    second_line = 2 + first.count("\n")
    res = farm("devices", "--inventory", inv, store=tmp_path / "results.db")
    assert res.code == 2, res.output
    assert f"{inv}:{second_line}: devices[1]: 'two' reaches the same device and workdir as 'one' (line 2)" in res.output
    assert f"{inv}:2: devices[0]: 'one' reaches the same device and workdir as 'two' (line {second_line})" in res.output


def test_one_iphone_is_one_device_whatever_the_workdir(tmp_path: Path) -> None:
    udid = "00008030-001A2B3C4D5E6F70"
    inv = write(
        tmp_path / "devices.yaml",
        "devices:\n"
        + _entry("a", f"{{kind: usbmux, udid: {udid}}}", platform="ios")
        + _entry("b", f"{{kind: usbmux, udid: '{udid.replace('-', '').lower()}'}}", "/Documents/other", "ios"),
    )
    res = farm("devices", "--inventory", inv, store=tmp_path / "results.db")
    assert res.code == 2 and "'b' reaches the same device and workdir as 'a'" in res.output, res.output


def test_distinct_devices_and_workdirs_load_and_have_distinct_identities(tmp_path: Path) -> None:
    from farm.config.inventory import device_identity, load_inventory

    inv = write(
        tmp_path / "devices.yaml",
        "devices:\n"
        + _entry("l1", "{kind: local}")
        + _entry("l2", "{kind: local}")  # default workdirs are per id: no clash
        + _entry("s1", "{kind: ssh, host: b, user: u}")
        + _entry("s2", "{kind: ssh, host: b, user: u}", "/other")
        + _entry("s3", "{kind: ssh, host: b, port: 2222, user: u}")
        + _entry("s4", "{kind: ssh, host: b, user: v}")
        + _entry("a1", "{kind: adb, address: '10.0.0.5:5555'}")
        + _entry("a2", "{kind: adb, address: '10.0.0.5:5556'}")
        + _entry("a3", "{kind: adb, serial: R58M}")
        + "    host: lab-agent-2\n",
    )
    loaded = load_inventory(inv)
    ids = [device_identity(d) for d in loaded.devices]
    assert len(set(ids)) == len(ids)
    assert ids[2] == "ssh:u@b:22|(default)" and ids[3] == "ssh:u@b:22|/other"
    assert ids[6] == "adb:tcp:10.0.0.5:5555|(default)" and ids[8] == "agent:lab-agent-2/adb:usb:R58M|(default)"
    assert device_identity(loaded.devices[0]) == device_identity(load_inventory(inv).devices[0])  # stable


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_an_adb_key_readable_by_others_is_refused_with_the_chmod_to_run(tmp_path: Path, mode: int) -> None:
    from farm.config.inventory import AdbTransport
    from farm.transports.adb import AdbLink, keygen

    key = tmp_path / "my keys" / "adbkey"
    key.parent.mkdir()
    assert keygen(key)
    transport = f"\n      kind: adb\n      address: '127.0.0.1:1'\n      key: {key}"
    entry = _entry("phone", transport, platform="android").replace("linux-x86_64", "android-arm64")
    inv = write(tmp_path / "devices.yaml", "devices:\n" + entry)
    assert farm("devices", "--inventory", inv, store=tmp_path / "results.db").code == 0  # 0600 from keygen
    key.chmod(mode)
    res = farm("devices", "--inventory", inv, store=tmp_path / "results.db")
    assert res.code == 2, res.output
    assert f"{inv}:8: devices[0].transport.key: ADB private key {key} is open to" in res.output
    assert f"run: chmod 600 '{key}'" in res.output
    # a key that became readable after the inventory was loaded is refused by the link too, before any use
    link = AdbLink("phone", AdbTransport(kind="adb", address="127.0.0.1:1", key=str(key)))
    with pytest.raises(InputError, match=r"chmod 600") as exc:
        link.connect()
    assert exc.value.exit_code == 2
