"""Power layer: the energy maths on known traces, meter settings, and the real probe and sampler scripts.

The end-to-end tests run the real sh scripts (dash as /bin/sh, and bash when present) against a fake sysfs
tree in tmp_path, with a background thread driving a RAPL counter at a known rate, exactly as the runner
starts and kills the sampler on a device.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from farm.errors import InputError
from farm.power.energy import energy_joules, energy_per_frame, mean_watts
from farm.power.meters import Meter, ShellRun, meter_from_settings, probe
from farm.power.sampler import CLOCK, PowerSample, parse_samples, sampler_argv

SHELLS = [s for s in ("sh", "bash") if shutil.which(s)]


def trace(points: Sequence[tuple[float, float]]) -> list[PowerSample]:
    return [PowerSample(t, w) for t, w in points]


def rapl(wrap: float | None = 1.0) -> Meter:
    return Meter(kind="rapl", nodes=("/e",), scale=(1e-6,), wrap=wrap)


def lines(rows: Sequence[tuple[int, ...]]) -> str:
    return "".join(" ".join(str(v) for v in row) + "\n" for row in rows)


# ---------------------------------------------------------------------------------------------------------
# energy maths on known traces
# ---------------------------------------------------------------------------------------------------------


def test_constant_two_watts_over_three_seconds_is_six_joules() -> None:
    samples = trace([(i * 0.5, 2.0) for i in range(7)])  # 0 .. 3 s
    assert energy_joules(samples, 0.0, 3.0) == pytest.approx(6.0)
    assert mean_watts(samples, 0.0, 3.0) == pytest.approx(2.0)


def test_ramp_integrates_exactly() -> None:
    samples = trace([(t, float(t)) for t in range(5)])  # w = t
    assert energy_joules(samples, 1.0, 3.0) == pytest.approx((9 - 1) / 2)
    assert mean_watts(samples, 0.0, 4.0) == pytest.approx(2.0)


def test_window_edges_are_interpolated() -> None:
    ramp = trace([(t, float(t)) for t in range(5)])
    assert energy_joules(ramp, 0.5, 2.5) == pytest.approx((2.5**2 - 0.5**2) / 2)
    # a spike: w(0.5) = w(1.5) = 5 by interpolation, 10 at t = 1
    spike = trace([(0.0, 0.0), (1.0, 10.0), (2.0, 0.0)])
    assert energy_joules(spike, 0.5, 1.5) == pytest.approx(0.5 * (5 + 10) / 2 * 2)
    # a window inside one interval
    assert energy_joules(spike, 0.25, 0.75) == pytest.approx(0.5 * (2.5 + 7.5) / 2)
    assert energy_joules(spike, 1.0, 1.0) == 0.0


def test_unsorted_samples_are_sorted_first() -> None:
    samples = trace([(2.0, 2.0), (0.0, 2.0), (1.0, 2.0)])
    assert energy_joules(samples, 0.0, 2.0) == pytest.approx(4.0)


def test_known_trace_energy_per_frame_with_baseline() -> None:
    # 3 W while decoding for 2 s, 1 W idle baseline, 100 frames -> (6 J - 2 J) / 100
    samples = trace([(10.0 + i * 0.1, 3.0) for i in range(21)])
    energy = energy_joules(samples, 10.0, 12.0)
    assert energy == pytest.approx(6.0)
    assert energy_per_frame(energy, 1.0, 2.0, 100) == pytest.approx(0.04)


def test_missing_inputs_give_none_never_zero() -> None:
    samples = trace([(0.0, 2.0), (1.0, 2.0), (2.0, 2.0)])
    assert energy_joules([], 0.0, 1.0) is None
    assert energy_joules(trace([(0.0, 2.0)]), 0.0, 0.0) is None  # one sample is not coverage
    assert energy_joules(samples, -0.1, 1.0) is None  # starts before the first sample
    assert energy_joules(samples, 1.0, 2.1) is None  # ends after the last
    assert mean_watts(samples, 3.0, 4.0) is None
    assert mean_watts(samples, 1.0, 1.0) is None  # zero-length: no mean
    assert energy_per_frame(None, 1.0, 2.0, 10) is None
    assert energy_per_frame(5.0, None, 2.0, 10) is None
    assert energy_per_frame(5.0, 1.0, 2.0, 0) is None
    assert energy_per_frame(float("nan"), 1.0, 2.0, 10) is None


def test_gap_limit_refuses_a_stalled_sampler() -> None:
    samples = trace([(0.0, 2.0), (0.1, 2.0), (2.0, 2.0), (2.1, 2.0)])
    assert energy_joules(samples, 0.0, 2.1) == pytest.approx(4.2)
    assert energy_joules(samples, 0.0, 2.1, max_gap_s=0.5) is None
    assert energy_joules(samples, 0.0, 0.1, max_gap_s=0.5) == pytest.approx(0.2)


def test_reversed_window_is_an_error() -> None:
    with pytest.raises(ValueError, match="before it starts"):
        energy_joules(trace([(0.0, 1.0), (1.0, 1.0)]), 1.0, 0.0)


# ---------------------------------------------------------------------------------------------------------
# parsing raw sampler output: units, sign, counters
# ---------------------------------------------------------------------------------------------------------


def test_rapl_power_from_energy_deltas_with_wraparound_mid_trace() -> None:
    # 2 W sampled every 0.1 s: +200000 uJ per line; the counter wraps at 1 J (1_000_000 uJ) after 0.8 J
    raw = [700_000 + 200_000 * i for i in range(6)]
    text = lines([(1_000_000_000 + 100_000_000 * i, e % 1_000_000) for i, e in enumerate(raw)])
    samples = parse_samples(rapl(wrap=1.0), text)
    assert [round(s.watts, 9) for s in samples] == [2.0] * 5
    assert [s.t_s for s in samples] == pytest.approx([1.05 + 0.1 * i for i in range(5)])  # interval midpoints
    assert energy_joules(samples, 1.05, 1.45) == pytest.approx(0.8)


def test_rapl_without_known_wrap_drops_the_wrapped_interval() -> None:
    text = lines([(1_000_000_000, 900_000), (1_100_000_000, 100_000), (1_200_000_000, 300_000)])
    samples = parse_samples(rapl(wrap=None), text)
    assert [(round(s.t_s, 9), round(s.watts, 9)) for s in samples] == [(1.15, 2.0)]


def test_several_rapl_packages_are_summed() -> None:
    meter = Meter(kind="rapl", nodes=("/a", "/b"), scale=(1e-6, 1e-6), wrap=1.0)
    text = lines([(0, 0, 990_000), (500_000_000, 500_000, 240_000)])  # +0.5 J and +0.25 J (wrapped)
    assert [s.watts for s in parse_samples(meter, text)] == pytest.approx([1.5])


def test_hwmon_power_microwatts() -> None:
    meter = Meter(kind="hwmon_power", nodes=("/p",), scale=(1e-6,))
    samples = parse_samples(meter, lines([(1_000_000_000, 1_500_000), (2_000_000_000, 2_500_000)]))
    assert samples == [PowerSample(1.0, 1.5), PowerSample(2.0, 2.5)]


def test_hwmon_vi_millivolts_times_milliamps() -> None:
    meter = Meter(kind="hwmon_vi", nodes=("/in1", "/curr1"), scale=(1e-3, 1e-3))
    samples = parse_samples(meter, lines([(5_000_000_000, 12_000, 250)]))
    assert len(samples) == 1 and samples[0].t_s == 5.0 and samples[0].watts == pytest.approx(3.0)
    pairs = Meter(kind="hwmon_vi", nodes=("/a", "/b", "/c", "/d"), scale=(1e-3,) * 4)
    assert parse_samples(pairs, lines([(1, 5000, 200, 1000, 1000)]))[0].watts == pytest.approx(2.0)


def test_sign_normalises_a_discharging_battery_to_positive() -> None:
    meter = meter_from_settings({"meter": "sysfs", "nodes": ["/sys/x/power_now"], "unit": "mW", "sign": -1})
    assert meter.kind == "sysfs" and meter.sign == -1.0 and meter.scale == (1e-3,)
    assert [s.watts for s in parse_samples(meter, lines([(1, -2500), (2, -2000)]))] == pytest.approx([2.5, 2.0])


def test_malformed_and_partial_lines_are_skipped() -> None:
    meter = Meter(kind="hwmon_power", nodes=("/p",), scale=(1e-6,))
    text = (
        "# farm-sampler clock=realtime_ns period=0.05 nodes=1\n"
        "1000000000 1000000\n"
        "garbage\n"
        "1100000000 -\n"  # node unreadable at that moment
        "1200000000 1000000 7\n"  # wrong width
        "999999999 1000000\n"  # clock went backwards
        "12x0000000 1000000\n"
        "1300000000 nan\n"
        "\n"
        "1400000000 2000000\n"
        "15000"  # killed mid-write
    )
    assert parse_samples(meter, text) == [PowerSample(1.0, 1.0), PowerSample(1.4, 2.0)]
    # a cut last line that happens to look complete is still not trusted
    assert parse_samples(meter, "1000000000 1000000\n1100000000 20") == [PowerSample(1.0, 1.0)]
    assert parse_samples(meter, "") == []


# ---------------------------------------------------------------------------------------------------------
# meters from devices.yaml settings
# ---------------------------------------------------------------------------------------------------------


def test_settings_meters_and_units() -> None:
    m = meter_from_settings({"meter": "rapl", "nodes": ["/sys/class/powercap/intel-rapl:0/energy_uj"]})
    assert (m.kind, m.scale, m.wrap, m.is_counter) == ("rapl", (1e-6,), None, True)
    m = meter_from_settings({"meter": "rapl", "nodes": ["/e"], "wrap": 262143328850})
    assert m.wrap == pytest.approx(262143.32885)
    m = meter_from_settings({"meter": "hwmon", "nodes": ["/sys/class/hwmon/hwmon2/power1_input"]})
    assert (m.kind, m.scale) == ("hwmon_power", (1e-6,))
    m = meter_from_settings({"meter": "hwmon", "nodes": ["/h/in1_input", "/h/curr1_input"]})
    assert (m.kind, m.scale) == ("hwmon_vi", (1e-3, 1e-3))
    battery = ["/sys/class/power_supply/battery/voltage_now", "/sys/class/power_supply/battery/current_now"]
    m = meter_from_settings({"meter": "sysfs", "nodes": battery, "unit": "uV, µA", "sign": -1})
    assert (m.kind, m.scale, m.sign) == ("hwmon_vi", (1e-6, 1e-6), -1.0)
    assert parse_samples(m, lines([(1, 4_000_000, -500_000)]))[0].watts == pytest.approx(2.0)
    m = meter_from_settings({"meter": "sysfs", "nodes": ["/ext/energy"], "unit": "mJ"})
    assert (m.kind, m.counter, m.is_counter, m.scale) == ("sysfs", True, True, (1e-3,))
    assert [s.watts for s in parse_samples(m, lines([(0, 0), (2_000_000_000, 3000)]))] == pytest.approx([1.5])
    m = meter_from_settings({"meter": "sysfs", "nodes": ["/a", "/b"], "unit": "W"})
    assert parse_samples(m, lines([(1, 2, 3)]))[0].watts == pytest.approx(5.0)
    assert "sign -1" in meter_from_settings({"meter": "sysfs", "nodes": ["/a"], "unit": "W", "sign": -1}).description


def test_settings_from_the_inventory_model() -> None:
    from farm.config.inventory import PowerSettings

    settings = PowerSettings(meter="sysfs", nodes=("/sys/class/power_supply/BAT0/power_now",), unit="uW", sign=-1)
    meter = meter_from_settings(settings.model_dump())
    assert (meter.kind, meter.nodes, meter.scale, meter.sign) == (
        "sysfs",
        ("/sys/class/power_supply/BAT0/power_now",),
        (1e-6,),
        -1.0,
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"meter": "auto"}, "not an explicit meter"),
        ({"meter": "none"}, "not an explicit meter"),
        ({"meter": "sysfs", "nodes": [], "unit": "W"}, "at least one node"),
        ({"meter": "sysfs", "nodes": ["relative/power"], "unit": "W"}, "not an absolute path"),
        ({"meter": "sysfs", "nodes": ["/p"]}, "needs a unit"),
        ({"meter": "sysfs", "nodes": ["/p"], "unit": "kWh"}, "unknown unit"),
        ({"meter": "sysfs", "nodes": ["/p", "/q", "/r"], "unit": "W,W"}, "2 units for 3 nodes"),
        ({"meter": "sysfs", "nodes": ["/p", "/q"], "unit": "mA,mV"}, "alternating"),
        ({"meter": "rapl", "nodes": ["/p"], "unit": "uW"}, "not an energy unit"),
        ({"meter": "hwmon", "nodes": ["/p"], "unit": "uJ"}, "use meter 'sysfs'"),
        ({"meter": "sysfs", "nodes": ["/p"], "unit": "W", "sign": 2}, "sign"),
        ({"meter": "rapl", "nodes": ["/e"], "wrap": "big"}, "power.wrap"),
        ({"meter": "rapl", "nodes": ["/e"], "wrap": 0}, "power.wrap"),
    ],
)
def test_bad_settings_are_input_errors(settings: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        meter_from_settings(settings)


def test_meter_invariants() -> None:
    with pytest.raises(ValueError, match="scale"):
        Meter(kind="sysfs", nodes=("/a", "/b"), scale=(1.0,))
    with pytest.raises(ValueError, match="pairs"):
        Meter(kind="hwmon_vi", nodes=("/a",), scale=(1.0,))
    with pytest.raises(ValueError, match="sign"):
        Meter(kind="sysfs", nodes=("/a",), scale=(1.0,), sign=0.5)
    with pytest.raises(ValueError, match="at least one"):
        Meter(kind="sysfs", nodes=(), scale=())


def test_sampler_argv_shape() -> None:
    meter = Meter(kind="hwmon_vi", nodes=("/h/in1_input", "/h/curr1_input"), scale=(1e-3, 1e-3))
    argv = sampler_argv(meter, 20, "/tmp/out file")
    assert argv[:2] == ["sh", "-c"]
    assert argv[3:] == ["farm-sampler", "/tmp/out file", "0.05", "/h/in1_input", "/h/curr1_input"]
    assert sampler_argv(meter, 3, "/o")[5] == "0.333333"
    assert sampler_argv(meter, 1, "/o")[5] == "1"
    assert CLOCK == "realtime_ns"
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="sample rate"):
            sampler_argv(meter, bad, "/o")


# ---------------------------------------------------------------------------------------------------------
# real scripts against a fake sysfs tree
# ---------------------------------------------------------------------------------------------------------


def put(path: Path, value: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")
    return path


def local_run(shell: str) -> ShellRun:
    """A real ShellRun on this machine, running argv with the given shell instead of ``sh``."""

    def run(argv: Sequence[str]) -> tuple[int, str]:
        args = list(argv)
        if args[0] == "sh":
            args[0] = shell
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
        return done.returncode, done.stdout

    return run


@pytest.fixture(params=SHELLS)
def shell(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def rapl_tree(root: Path, *, max_range: int = 262143328850) -> Path:
    pkg = root / "class" / "powercap" / "intel-rapl:0"
    put(pkg / "name", "package-0")
    put(pkg / "energy_uj", 123456)
    put(pkg / "max_energy_range_uj", max_range)
    put(root / "class" / "powercap" / "intel-rapl:0:0" / "name", "core")  # subdomain: not summed
    put(root / "class" / "powercap" / "intel-rapl:0:0" / "energy_uj", 1000)
    put(root / "class" / "powercap" / "intel-rapl:1" / "name", "psys")  # platform domain: overlaps package
    put(root / "class" / "powercap" / "intel-rapl:1" / "energy_uj", 1000)
    put(root / "class" / "hwmon" / "hwmon0" / "name", "acpitz")
    put(root / "class" / "hwmon" / "hwmon0" / "power1_input", 4_000_000)
    return pkg / "energy_uj"


def test_probe_prefers_rapl_package_domains(tmp_path: Path, shell: str) -> None:
    root = tmp_path / "sys"
    energy = rapl_tree(root)
    meter = probe(local_run(shell), str(root))
    assert meter == Meter(
        kind="rapl",
        nodes=(str(energy),),
        scale=(1e-6,),
        wrap=262143.32885,
        description="RAPL package-0 energy_uj",
    )


def test_probe_sums_several_packages(tmp_path: Path, shell: str) -> None:
    root = tmp_path / "sys"
    rapl_tree(root)
    put(root / "class" / "powercap" / "intel-rapl:2" / "name", "package-1")
    put(root / "class" / "powercap" / "intel-rapl:2" / "energy_uj", 5)
    put(root / "class" / "powercap" / "intel-rapl:2" / "max_energy_range_uj", 262143328850)
    meter = probe(local_run(shell), str(root))
    assert meter is not None and meter.kind == "rapl"
    assert [Path(n).parent.name for n in meter.nodes] == ["intel-rapl:0", "intel-rapl:2"]
    assert meter.description == "RAPL package-0+package-1 energy_uj (summed)"


def test_probe_falls_back_to_hwmon_power_when_rapl_is_unreadable(tmp_path: Path, shell: str) -> None:
    root = tmp_path / "sys"
    energy = rapl_tree(root)
    energy.unlink()
    energy.symlink_to(tmp_path / "nowhere")  # unreadable even as root (energy_uj is 0400 on real kernels)
    meter = probe(local_run(shell), str(root))
    assert meter is not None
    assert (meter.kind, meter.nodes, meter.scale) == (
        "hwmon_power",
        (str(root / "class" / "hwmon" / "hwmon0" / "power1_input"),),
        (1e-6,),
    )
    assert meter.description == "hwmon hwmon0 (acpitz) power1_input"


def ina3221_tree(root: Path) -> Path:
    hw = root / "class" / "hwmon" / "hwmon3"
    put(hw / "name", "ina3221")
    for ch, label, mv, ma in ((1, "VDD_CPU_GPU_CV", 5000, 100), (2, "VDD_IN", 5000, 400), (3, "VDD_SOC", 5000, 50)):
        put(hw / f"in{ch}_label", label)
        put(hw / f"in{ch}_input", mv)
        put(hw / f"curr{ch}_input", ma)
        put(hw / f"in{ch + 3}_input", 12)  # shunt voltages: never paired
    return hw


def test_probe_finds_a_voltage_current_pair_and_prefers_the_input_rail(tmp_path: Path, shell: str) -> None:
    root = tmp_path / "sys"
    hw = ina3221_tree(root)
    put(root / "class" / "hwmon" / "hwmon10" / "name", "other")  # sorts after hwmon3 numerically
    put(root / "class" / "hwmon" / "hwmon10" / "in1_input", 1000)
    put(root / "class" / "hwmon" / "hwmon10" / "curr1_input", 1000)
    meter = probe(local_run(shell), str(root))
    assert meter is not None
    assert (meter.kind, meter.nodes, meter.scale) == (
        "hwmon_vi",
        (str(hw / "in2_input"), str(hw / "curr2_input")),
        (1e-3, 1e-3),
    )
    assert meter.description == "hwmon hwmon3 (ina3221) in2_input x curr2_input [VDD_IN]"


def test_probe_pairs_an_acpi_battery_style_in0_with_curr1(tmp_path: Path, shell: str) -> None:
    hw = tmp_path / "sys" / "class" / "hwmon" / "hwmon1"
    put(hw / "name", "BAT0")
    put(hw / "in0_input", 12000)
    put(hw / "curr1_input", 800)
    meter = probe(local_run(shell), str(tmp_path / "sys"))
    assert meter is not None and meter.nodes == (str(hw / "in0_input"), str(hw / "curr1_input"))


def test_probe_finds_nothing_and_says_so(tmp_path: Path, shell: str) -> None:
    assert probe(local_run(shell), str(tmp_path / "empty")) is None
    hw = tmp_path / "sys" / "class" / "hwmon" / "hwmon0"
    put(hw / "name", "coretemp")
    put(hw / "temp1_input", 45000)
    (hw / "power1_input").mkdir()  # exists but reads fail (like an unpowered INA channel's EIO)
    assert probe(local_run(shell), str(tmp_path / "sys")) is None


def test_probe_root_is_an_argument_not_script_text(tmp_path: Path, shell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "odd root $(touch pwned) `touch pwned2`; 'q\"" / "sys"
    energy = rapl_tree(root)
    meter = probe(local_run(shell), str(root))
    assert meter is not None and meter.nodes == (str(energy),)
    assert not list(tmp_path.rglob("pwned*"))


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Kills the process group of every sampler a test started, even when the test fails."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        kill_group(proc)


def start(argv: list[str], shell: str, reap: list[subprocess.Popen[bytes]], cwd: Path) -> subprocess.Popen[bytes]:
    argv = [shell, *argv[1:]]
    proc = subprocess.Popen(argv, cwd=cwd, start_new_session=True, stdin=subprocess.DEVNULL)
    reap.append(proc)
    return proc


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def sample_for(proc: subprocess.Popen[bytes], out: Path, seconds: float, min_lines: int) -> None:
    """Let the sampler run ``seconds``, longer (up to 10 s) on a loaded machine until it wrote ``min_lines``."""
    start_t = time.monotonic()
    while time.monotonic() - start_t < 10:
        done = time.monotonic() - start_t >= seconds
        if done and out.exists() and out.read_text().count("\n") - 1 >= min_lines:
            break
        assert proc.poll() is None, "the sampler exited on its own"
        time.sleep(0.02)
    assert group_alive(proc.pid)
    kill_group(proc)


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in the process group (read from /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            return True
    return False


def test_sampler_end_to_end_rapl_at_a_known_rate_with_wraparound(
    tmp_path: Path, shell: str, reap: list[subprocess.Popen[bytes]]
) -> None:
    watts = 2.0
    max_range = 600_000  # uJ: 2 W wraps the counter every 0.3 s, at least once during the run
    root = tmp_path / "sys"
    energy = rapl_tree(root, max_range=max_range)
    meter = probe(local_run(shell), str(root))
    assert meter is not None and meter.kind == "rapl" and meter.wrap == pytest.approx(0.6)

    stop = threading.Event()

    def drive() -> None:
        """A RAPL counter: energy at a known rate, wrapping at max_range, replaced atomically like sysfs."""
        t_start = time.monotonic()
        tmp = energy.with_name("energy_uj.new")
        while not stop.is_set():
            uj = round(watts * (time.monotonic() - t_start) * 1e6) % max_range
            tmp.write_text(f"{uj}\n")
            os.replace(tmp, energy)
            time.sleep(0.001)

    writer = threading.Thread(target=drive, daemon=True)
    writer.start()
    out = tmp_path / "samples.txt"
    try:
        proc = start(sampler_argv(meter, 20, str(out)), shell, reap, tmp_path)
        sample_for(proc, out, 0.5, min_lines=10)
    finally:
        stop.set()
        writer.join(timeout=5)
    deadline = time.monotonic() + 10
    while group_alive(proc.pid) and time.monotonic() < deadline:  # the sleep child goes with its group
        time.sleep(0.01)
    assert not group_alive(proc.pid)

    text = out.read_text()
    assert text.startswith("# farm-sampler clock=realtime_ns period=0.05 nodes=1\n")
    raw = [int(line.split()[1]) for line in text.splitlines()[1:] if len(line.split()) == 2]
    assert any(b < a for a, b in itertools.pairwise(raw)), f"the counter never wrapped: {raw}"
    samples = parse_samples(meter, text)
    assert len(samples) >= 8, text
    # device clock is realtime ns: the samples are "now"
    assert abs(samples[-1].t_s - time.time()) < 30
    # robust to a scheduler stall on a loaded machine: median of the samples, and the mean over the run
    measured = sorted(s.watts for s in samples)
    assert measured[len(measured) // 2] == pytest.approx(watts, rel=0.1), measured
    total = mean_watts(samples, samples[0].t_s, samples[-1].t_s)
    assert total == pytest.approx(watts, rel=0.15), measured


def test_sampler_end_to_end_voltage_current(tmp_path: Path, shell: str, reap: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "sys"
    ina3221_tree(root)
    meter = probe(local_run(shell), str(root))
    assert meter is not None and meter.kind == "hwmon_vi"
    out = tmp_path / "vi.txt"
    proc = start(sampler_argv(meter, 20, str(out)), shell, reap, tmp_path)
    sample_for(proc, out, 0.3, min_lines=4)
    samples = parse_samples(meter, out.read_text())
    assert len(samples) >= 3
    assert {round(s.watts, 9) for s in samples} == {2.0}  # 5000 mV x 400 mA
    t0, t1 = samples[0].t_s, samples[-1].t_s
    assert energy_joules(samples, t0, t1) == pytest.approx(2.0 * (t1 - t0))


def test_sampler_reads_hostile_paths_literally(tmp_path: Path, shell: str, reap: list[subprocess.Popen[bytes]]) -> None:
    node_dir = tmp_path / "node dir $(touch pwned)" / "`touch pwned2`; x"
    power = put(node_dir / "power1_input $(touch pwned3)", 1_250_000)
    second = put(tmp_path / "-n" / "*" / "power2_input", 750_000)  # option-like and glob-like names
    meter = Meter(kind="hwmon_power", nodes=(str(power), str(second)), scale=(1e-6, 1e-6))
    out = tmp_path / "out $(touch pwned4).txt"
    proc = start(sampler_argv(meter, 50, str(out)), shell, reap, tmp_path)
    sample_for(proc, out, 0.2, min_lines=3)
    samples = parse_samples(meter, out.read_text())
    assert samples and {round(s.watts, 9) for s in samples} == {2.0}
    assert not list(tmp_path.rglob("pwned*"))


def test_sampler_unreadable_node_gives_missing_power(
    tmp_path: Path, shell: str, reap: list[subprocess.Popen[bytes]]
) -> None:
    meter = Meter(kind="hwmon_power", nodes=(str(tmp_path / "absent"),), scale=(1e-6,))
    out = tmp_path / "out.txt"
    proc = start(sampler_argv(meter, 50, str(out)), shell, reap, tmp_path)
    sample_for(proc, out, 0.2, min_lines=3)
    text = out.read_text()
    assert " -\n" in text  # the sampler kept going and recorded the failed reads
    samples = parse_samples(meter, text)
    assert samples == []
    assert energy_joules(samples, 0.0, 1.0) is None


def test_sampler_refuses_a_date_without_nanoseconds(
    tmp_path: Path, shell: str, reap: list[subprocess.Popen[bytes]]
) -> None:
    fake_bin = tmp_path / "bin"
    fake_date = put(fake_bin / "date", "#!/bin/sh\necho 1700000000N")
    fake_date.chmod(0o755)
    meter = Meter(
        kind="hwmon_power",
        nodes=(
            str(
                put(tmp_path / "p", 1),
            ),
        ),
        scale=(1e-6,),
    )
    out = tmp_path / "out.txt"
    argv = [shell, *sampler_argv(meter, 20, str(out))[1:]]
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(argv, env=env, timeout=10, check=False, start_new_session=True)
    assert done.returncode == 3
    text = out.read_text()
    assert text.startswith("# farm-sampler: 'date +%s%N' gives no nanoseconds here")
    assert parse_samples(meter, text) == []
