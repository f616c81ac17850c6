"""A pipelined run (encodes, device sessions and scoring side by side) stores what a serial run stores.

Real encodes (SVT-AV1 and x265, deterministic), real decodes on the ``local`` device, real scoring with ffmpeg;
each run on a cold cache of its own, so the pipelined one really decodes while later bitstreams encode.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import yaml

from farm.bundle import write_sums
from tests.conftest import EXAMPLES
from tests.support.runs import bundle_args, farm, suite

QUALITY = ("bpp", "psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "psnr_yuv.min", "ssim", "temporal.flicker")


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute(sql).fetchall(), key=repr)


def _results(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a reader of the run sees, without its timings and run id."""
    marks = ",".join("?" * len(QUALITY))
    with sqlite3.connect(db) as conn:
        quality = conn.execute(
            "SELECT j.device_id, j.role, j.sequence, j.rate_kbps, j.repeat, m.name, m.value, m.missing_reason "
            f"FROM measurements m JOIN jobs j ON j.id = m.job_id WHERE m.name IN ({marks})",
            QUALITY,
        ).fetchall()
    return {
        "jobs": _rows(db, "SELECT device_id, role, sequence, rate_kbps, repeat, status, error, bitstream_sha, "
                          "bitstream_bytes, output_sha, frames FROM jobs"),
        "quality": sorted(quality, key=repr),
        "frames": _rows(db, "SELECT output_sha, frame, psnr_y, psnr_u, psnr_v, psnr_yuv, ssim, flicker "
                            "FROM frame_quality"),
        "run_metrics": _rows(db, "SELECT device_id, name, value, detail FROM run_metrics"),
        # a timing gate's value differs from run to run (its verdict must not)
        "gates": _rows(db, "SELECT gate_index, metric, scope_key, verdict, CASE WHEN metric LIKE 'fps%' THEN NULL "
                           "ELSE value END, detail FROM gates"),
    }  # fmt: skip


def _run(tmp: Path, *extra: str) -> tuple[int, str, Path]:
    code, out = farm(tmp, "run", suite(tmp), *bundle_args(), *extra)
    return code, out, tmp / "state" / "results.db"


def test_pipelined_and_serial_runs_store_the_same_scores_and_verdicts(tmp_path: Path) -> None:
    code_p, out_p, db_p = _run(tmp_path / "pipelined")
    code_s, out_s, db_s = _run(tmp_path / "serial", "--serial")
    assert code_p == code_s == 0, out_p + out_s
    pipelined, serial = _results(db_p), _results(db_s)
    assert len(pipelined["jobs"]) == 12 and len(pipelined["quality"]) == 12 * len(QUALITY)
    for table in serial:
        assert pipelined[table] == serial[table], table
    assert "lanes: encode 8/8" in out_p and "lanes: encode 8/8" in out_s


def test_devices_decode_before_the_last_encode_and_outputs_are_scored_before_the_last_decode(tmp_path: Path) -> None:
    """What makes it pipelined: the first job starts while bitstreams still encode, and a decoded output is
    scored (its score cached on the host) while the device still decodes."""
    code, out, db = _run(tmp_path)
    assert code == 0, out
    cache = tmp_path / "state" / "cache"
    last_encode = max(p.stat().st_mtime for p in (cache / "bitstreams").iterdir() if p.is_file())
    first_scored = min(p.stat().st_mtime for p in (cache / "scores").iterdir())
    (first_start, last_finish), *_ = _rows(db, "SELECT min(started_at), max(finished_at) FROM jobs")
    assert first_start < last_encode
    assert first_scored < last_finish


def _failing_encoder(tmp_path: Path) -> Path:
    """av1-svt whose encoder fails at 240 kbps only: after the devices have started on the first bitstreams."""
    bundle = tmp_path / "fails-at-240"
    shutil.copytree(EXAMPLES / "av1-svt", bundle)
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    gate = 'if [ "$RATE" = 240 ]; then echo "no such rate" >&2; exit 3; fi; exec "$@"'
    manifest["encoder"]["argv"] = ["sh", "-c", gate.replace("$RATE", "{rate}"), "enc", *manifest["encoder"]["argv"]]
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(manifest))
    write_sums(bundle)
    return bundle


def test_a_failed_encode_fails_a_pipelined_run_with_the_serial_message(tmp_path: Path) -> None:
    bundle = _failing_encoder(tmp_path)
    outs = []
    for mode, extra in (("pipelined", ()), ("serial", ("--serial",))):
        tmp = tmp_path / mode
        code, out = farm(tmp, "run", suite(tmp), *bundle_args(bundle), *extra)
        assert code == 2, out
        outs.append(out)
    message = "error: av1-svt@1.0.0 encode of bars at 240 kbps failed (exit 3): no such rate"
    assert all(message in o for o in outs), outs
