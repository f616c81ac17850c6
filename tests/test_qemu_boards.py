"""An emulated Debian arm64 board (qemu-system-aarch64, TCG) in a real run beside the x86_64 host.

The board boots the cached image (scripts/test builds it before pytest; a developer without it builds it on
first use here, which takes minutes), so these tests are slow: one boot for the module, plus short-lived qemus
for the failure paths. Every test checks that no qemu of its own is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from farm.sim.fleet import Fleet, start_fleet
from farm.sim.qemu.board import QemuBoard, _listens
from farm.sim.qemu.image import Image, ensure_image
from farm.sim.qemu.runtime import ORT_PYTHON
from farm.sim.sshboard import LOCALHOST, SimError, generate_key
from farm.transports.ssh import SshLink
from tests.conftest import ROOT, require_tool, write
from tests.support.ort_filter import ort_filter_bundle
from tests.support.runs import bundle_args, farm

# Boot (1-3 min idle, up to the 900 s bound on a loaded host) counts against the first test: a longer bound than
# pytest's default 600 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

CROSS_ISA_SUITE = """name: cross-isa
sequences:
  - id: bars
    generate: {source: testsrc2, width: 128, height: 96, fps: 30, frames: 12}
rates_kbps: [60, 120, 240, 480]
repeats: 1
warmup_frames: 2
timeout_s: 300
power: {baseline_s: 0}
gates:
  - {metric: consistency, op: "==", value: bitexact, scope: all}
  - {metric: failures, op: "==", value: 0, scope: all}
"""


def qemu_pids(marker: Path) -> list[int]:
    """Live qemu-system-aarch64 processes whose command line names ``marker`` (a test's own directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        ours = argv and argv[0].endswith(b"qemu-system-aarch64") and str(marker).encode() in b" ".join(argv)
        if ours and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def image() -> Image:
    require_tool(Path("/usr/bin/qemu-system-aarch64"), "qemu-system-arm")
    return ensure_image(say=print)


@pytest.fixture(scope="module")
def qemu_fleet(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    state = tmp_path_factory.mktemp("qemu-fleet")
    fleet = start_fleet(0, state, qemu=1, exit_with_parent=True)
    yield fleet
    fleet.stop()
    assert qemu_pids(state) == []


def test_local_and_the_aarch64_board_decode_bit_exactly(qemu_fleet: Fleet, tmp_path: Path) -> None:
    suite = write(tmp_path / "cross-isa.yaml", CROSS_ISA_SUITE)
    report, html = tmp_path / "r.json", tmp_path / "r.html"
    code, out = farm(tmp_path, "run", str(suite), *bundle_args(), "--inventory", str(qemu_fleet.inventory_path),
                     "--devices", "local,qemu-1", "--json", str(report))  # fmt: skip
    assert code == 0, out
    data = json.loads(report.read_text())
    devices = {d["id"]: d for d in data["devices"]}
    assert devices["qemu-1"]["target"] == "linux-aarch64" and devices["qemu-1"]["properties"]["machine"] == "aarch64"
    assert devices["local"]["properties"]["machine"] == "x86_64"
    assert devices["qemu-1"]["emulated"] and not devices["local"]["emulated"]
    consistency = next(g for g in data["gates"] if g["metric"] == "consistency")
    assert consistency["verdict"] == "pass" and consistency["value"] == "bitexact"
    assert "4 bitstreams decoded identically across 8 decodes" in consistency["detail"]
    rows = {(r["device"], r["role"]): r for r in data["results"]}
    assert rows[("qemu-1", "test")]["fps_label"] == "EMULATED" and rows[("local", "test")]["fps_label"] is None
    assert rows[("qemu-1", "test")]["power_w"] is None, "no meter on the board: power is missing, never 0"
    assert "EMULATED" in out
    run_id = data["run"]["id"]
    code, out = farm(tmp_path, "report", run_id, "--html", str(html))
    assert code in (0, 1), out
    assert "frame rates are EMULATED" in html.read_text()


FLOAT_SUITE = """name: float-cross-isa
sequences:
  - id: bars
    generate: {source: testsrc2, width: 128, height: 96, fps: 30, frames: 12}
rates_kbps: [60, 240]
repeats: 1
warmup_frames: 2
timeout_s: 600
power: {baseline_s: 0}
gates:
  - {metric: consistency.max_abs_diff, op: "<=", value: 2, scope: all}
  - {metric: consistency.psnr_db, op: ">=", value: 50, scope: all}
  - {metric: failures, op: "==", value: 0, scope: all}
"""


def board_link(fleet: Fleet) -> SshLink:
    link = SshLink("qemu-1", fleet.qemu_boards[0].ssh_settings())
    link.connect()
    return link


def test_the_board_runs_the_hosts_onnx_runtime_from_its_read_only_disk(qemu_fleet: Fleet) -> None:
    import onnxruntime

    link = board_link(qemu_fleet)
    try:
        probe = "import onnxruntime, numpy, platform; print(platform.machine(), onnxruntime.__version__)"
        done = link.run([ORT_PYTHON, "-c", probe], timeout=300)
        assert done.ok, done.stderr
        assert done.text().split() == ["aarch64", onnxruntime.__version__]
        missing = link.run([ORT_PYTHON, "-c", "import constriction"], timeout=120)
        assert not missing.ok and b"No module named 'constriction'" in missing.stderr  # no aarch64 wheel
        written = link.run(["touch", "/opt/farm-runtimes/x"], timeout=30)
        assert not written.ok and b"Read-only file system" in written.stderr
    finally:
        link.close()
    entry = next(e for e in yaml.safe_load(qemu_fleet.inventory_path.read_text())["devices"] if e["id"] == "qemu-1")
    assert entry["runtime"]["onnxruntime"] == ORT_PYTHON


def test_a_float_onnx_decoder_across_isas_is_measured_against_its_tolerance(qemu_fleet: Fleet, tmp_path: Path) -> None:
    bundle = ort_filter_bundle(tmp_path)
    suite = write(tmp_path / "float.yaml", FLOAT_SUITE)
    report = tmp_path / "r.json"
    code, out = farm(tmp_path, "run", str(suite), "--bundle", str(bundle), "--inventory",
                     str(qemu_fleet.inventory_path), "--devices", "local,qemu-1", "--json", str(report))  # fmt: skip
    data = json.loads(report.read_text())
    gates = {g["metric"]: g for g in data["gates"]}
    assert gates["failures"]["verdict"] == "pass", out
    diff, psnr = gates["consistency.max_abs_diff"], gates["consistency.psnr_db"]
    assert diff["value"] is not None and psnr["value"] is not None, out  # measured, whichever way it went
    assert code == (0 if diff["verdict"] == psnr["verdict"] == "pass" else 1), out
    fps = {r["device"]: r["fps_p50"] for r in data["results"] if r["role"] == "test"}
    print(f"\nfloat ONNX filter across ISAs: max abs diff {diff['value']}, worst-frame PSNR {psnr['value']} dB "
          f"({diff['detail']}); fps.p50 local {fps['local']:.0f} vs qemu-1 {fps['qemu-1']:.1f} (EMULATED)")  # fmt: skip


def test_a_taken_ssh_port_is_replaced_by_another(image: Image, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    generate_key(key, "test")
    with socket.socket() as taken:
        taken.bind((LOCALHOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        board = QemuBoard("qemu-port", tmp_path / "board", image, key, exit_with_parent=True, port=port)
        try:
            board.launch()
            assert board.port != port and board.qemu is not None and _listens(board.qemu.pid, board.port)
            assert f"]:{board.port} " in (tmp_path / "board" / "known_hosts").read_text()
        finally:
            board.kill()
    assert qemu_pids(tmp_path) == []


def test_a_failed_boot_leaves_no_qemu(image: Image, tmp_path: Path) -> None:
    broken = tmp_path / "not-a-kernel"
    broken.write_bytes(b"\0" * 4096)
    bad = Image(image.dir, image.base, broken, image.initrd, image.digest, None)
    key = tmp_path / "id_ed25519"
    generate_key(key, "test")
    board = QemuBoard("qemu-bad", tmp_path / "board", bad, key, boot_timeout_s=20.0)
    with pytest.raises(SimError, match="no SSH after 20s"):
        board.start()
    assert qemu_pids(tmp_path) == []


def test_ctrl_c_during_sim_up_leaves_no_qemu(image: Image, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "farm", "sim", "up", "--qemu", "1"], cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 120
    while not qemu_pids(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert qemu_pids(tmp_path), "qemu never started"
    time.sleep(2)  # booting, not yet reachable
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    assert qemu_pids(tmp_path) == []
