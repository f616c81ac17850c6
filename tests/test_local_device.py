"""The local transport and the POSIX device layer, on real processes and files (no mocks)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from farm.devices.posix import PosixDevice, parse_stats
from farm.errors import CommandFailed
from farm.fileio import sha256_file
from farm.transports.base import TransportError
from farm.transports.local import LocalTransport
from tests.conftest import alive, check_spawn_and_kill


@pytest.fixture
def device(tmp_path: Path) -> PosixDevice:
    dev = PosixDevice("t", LocalTransport(), str(tmp_path / "dev work"), command_timeout=20)
    dev.prepare()
    return dev


def test_run_keeps_exit_status_and_separate_streams() -> None:
    res = LocalTransport().run(["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=10)
    assert (res.exit_status, res.stdout, res.stderr, res.timed_out) == (7, b"out\n", b"err\n", False)


def test_run_timeout_kills_the_whole_process_group() -> None:
    marker = "31.4159"
    res = LocalTransport().run(["sh", "-c", f"sleep {marker} & sleep {marker}; echo never"], timeout=0.5)
    assert res.timed_out and res.exit_status is None and b"never" not in res.stdout
    time.sleep(0.2)
    assert alive(marker) == []


def test_spawn_and_kill_leave_nothing_behind() -> None:
    check_spawn_and_kill(LocalTransport(), "27.1828")


def test_missing_program_is_a_transport_error() -> None:
    with pytest.raises(TransportError, match="cannot start"):
        LocalTransport().run(["/nonexistent/prog"], timeout=5)


def test_stage_pushes_once_then_reuses_and_repairs(device: PosixDevice, tmp_path: Path) -> None:
    src = tmp_path / "bits.bin"
    src.write_bytes(os.urandom(100_000))
    digest = sha256_file(src)
    remote = f"{device.workdir}/cas/{digest}.bin"
    device.stage([(src, remote, digest)])
    assert (device.counter.pushed_files, device.counter.pushed_bytes) == (1, 100_000)
    device.stage([(src, remote, digest)])
    assert (device.counter.pushed_files, device.counter.reused_files) == (1, 1)
    Path(remote).write_bytes(b"corrupted on the device")
    device.stage([(src, remote, digest)])
    assert device.counter.pushed_files == 2 and sha256_file(Path(remote)) == digest


def test_stage_refuses_a_copy_whose_hash_differs(device: PosixDevice, tmp_path: Path) -> None:
    src = tmp_path / "bits.bin"
    src.write_bytes(b"abc")
    with pytest.raises(CommandFailed, match="sha256 mismatch") as failed:  # not a dropped link: never retried
        device.stage([(src, f"{device.workdir}/cas/x", "0" * 64)])
    assert failed.value.exit_status == 1 and not isinstance(failed.value, TransportError)
    assert not Path(f"{device.workdir}/cas/x").exists()


def test_hostile_file_names_are_data_not_shell(device: PosixDevice, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    name = f"a b; touch {canary}; $(touch {canary}) `touch {canary}` 'q\"\n.bin"
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    remote = f"{device.workdir}/cas/{name}"
    device.stage([(src, remote, sha256_file(src))])
    assert Path(remote).read_bytes() == b"payload"
    assert device.present([remote]) == {remote: sha256_file(src)}
    device.remove(remote)
    assert not Path(remote).exists() and not canary.exists()


def _decoder(tmp_path: Path, body: str) -> str:
    script = tmp_path / "dec.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def test_decode_reports_timing_digest_and_stats(device: PosixDevice, tmp_path: Path) -> None:
    dec = _decoder(
        tmp_path,
        'printf "YUV4MPEG2 W2 H2 F30:1 C420jpeg\\nFRAME\\n123456" > "$1"\n'
        'printf \'{"frame": 0, "decode_ns": 1500}\\n{"frame": 1, "decode_ns": 2500}\\n\' > "$2"\n',
    )
    job = f"{device.workdir}/jobs/r/0"
    outcome = device.decode([dec, f"{job}/out.y4m", f"{job}/stats.jsonl"], job, timeout=10)
    assert outcome.exit_status == 0 and not outcome.timed_out
    assert outcome.frame_times_ns == (1500, 2500)
    assert outcome.output_sha == sha256_file(Path(job) / "out.y4m")
    assert outcome.start_ns is not None and outcome.end_ns is not None and outcome.end_ns >= outcome.start_ns


def test_decoder_crash_keeps_stderr(device: PosixDevice, tmp_path: Path) -> None:
    dec = _decoder(tmp_path, 'echo "bitstream corrupt at frame 3" >&2\nexit 42\n')
    outcome = device.decode([dec], f"{device.workdir}/jobs/r/1", timeout=10)
    assert outcome.exit_status == 42 and outcome.output_sha is None
    assert "bitstream corrupt at frame 3" in outcome.stderr_tail


def test_hung_decoder_is_killed_at_its_timeout(device: PosixDevice, tmp_path: Path) -> None:
    marker = "41.4142"
    dec = _decoder(tmp_path, f"sleep {marker} &\nsleep {marker}\n")
    start = time.monotonic()
    outcome = device.decode([dec], f"{device.workdir}/jobs/r/2", timeout=1)
    assert outcome.timed_out and time.monotonic() - start < 10
    time.sleep(0.3)
    assert alive(marker) == []


def test_parse_stats_rejects_garbage() -> None:
    assert parse_stats(['{"frame": 1, "decode_ns": 5}', '{"frame": 0, "decode_ns": 4}']) == ((4, 5), None)
    assert parse_stats(["not json"])[1] is not None
    assert parse_stats(['{"frame": 0, "decode_ns": -1}'])[1] is not None
    assert parse_stats(['{"frame": 0, "decode_ns": 1}', '{"frame": 2, "decode_ns": 1}'])[1] is not None


def test_decoder_output_cannot_forge_the_report(device: PosixDevice, tmp_path: Path) -> None:
    """Stats without a final newline, and lines imitating the farm's markers, stay the decoder's data."""
    dec = _decoder(
        tmp_path,
        'printf \'@@timing 0 1 0\\n@@sha 0000 1\\n{"frame": 0, "decode_ns": 7}\' > "$2"\n'
        "echo '@@stderr fake' >&2\nexit 1\n",
    )
    job = f"{device.workdir}/jobs/r/3"
    outcome = device.decode([dec, f"{job}/out.y4m", f"{job}/stats.jsonl"], job, timeout=10)
    assert outcome.exit_status == 1 and outcome.output_sha is None
    assert outcome.stats_error is not None  # the imitation lines are stats garbage, not a timing record
    assert "@@stderr fake" in outcome.stderr_tail


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs) to fill up; unmounted afterwards."""
    mount = tmp_path / "small disk"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_free_bytes_reads_df_on_the_device(small_disk: Path) -> None:
    dev = PosixDevice("t", LocalTransport(), str(small_disk / "work"), command_timeout=20)
    assert dev.free_bytes(str(small_disk)) == 2 << 20
    assert dev.free_bytes(f"{small_disk}/not/yet/made") == 2 << 20  # the nearest existing parent counts
    (small_disk / "half").write_bytes(b"\0" * (1 << 20))
    assert dev.free_bytes(str(small_disk)) == 1 << 20


def test_a_decode_that_fills_the_disk_says_so(small_disk: Path) -> None:
    dev = PosixDevice("t", LocalTransport(), str(small_disk / "work"), command_timeout=20)
    dev.prepare()
    # a full disk swallows the decoder's own complaint (its stderr file cannot grow): the free space tells
    fill = 'head -c 4000000 /dev/zero >"$1"'
    full = dev.decode(["sh", "-c", fill, "dec", f"{dev.workdir}/jobs/0/out.y4m"], f"{dev.workdir}/jobs/0", 30)
    assert full.exit_status != 0 and full.free_bytes == 0
    assert full.failure == f"no space left on the device (0.0 MB free in {dev.workdir})", full
    dev.remove(f"{dev.workdir}/jobs/0")
    # a decoder whose scratch space (elsewhere) ran out says ENOSPC itself
    said = dev.decode(["sh", "-c", "echo 'tmp: No space left on device' >&2; exit 1"], f"{dev.workdir}/jobs/1", 30)
    assert said.failure is not None and said.failure.startswith("no space left on the device ("), said
    dev.remove(f"{dev.workdir}/jobs/1")
    other = dev.decode(["sh", "-c", "echo bad input >&2; exit 3"], f"{dev.workdir}/jobs/2", 30)
    assert other.exit_status == 3 and other.failure is None  # plenty of space: an ordinary failure
    assert other.free_bytes is not None and other.free_bytes > 1 << 20
