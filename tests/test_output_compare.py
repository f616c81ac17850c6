"""Sample differences between two decodes of one bitstream, against an independent numpy computation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from farm.quality.compare import compare_outputs

W, H = 16, 8


def y4m(path: Path, frames: list[np.ndarray], marker: bytes = b"FRAME\n") -> Path:
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{W} H{H} F30:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(marker + frame.astype(np.uint8).tobytes())
    return path


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, W * H * 3 // 2) for _ in range(n)]


def psnr(mse: float) -> float:
    return 100.0 if mse == 0 else min(100.0, 10 * math.log10(255**2 / mse))


def test_identical_pixels_are_zero_difference_and_the_psnr_cap(tmp_path: Path) -> None:
    src = frames(3)
    # a different FRAME marker (parameters) changes the digest, not the pixels
    got = compare_outputs(y4m(tmp_path / "a.y4m", src), y4m(tmp_path / "b.y4m", src, marker=b"FRAME Ixyz\n"))
    assert (got.frames, got.max_abs_diff, got.psnr_min_db, got.detail) == (3, 0.0, 100.0, None)


def test_worst_frame_and_largest_sample_difference(tmp_path: Path) -> None:
    src = frames(3)
    u0 = W * H
    src[1][5], src[2][u0] = 100, 50
    other = [f.copy() for f in src]
    other[1][5] = 103  # one luma sample of frame 1, off by three
    other[2][u0] = 49  # one Cb sample of frame 2, off by one
    got = compare_outputs(y4m(tmp_path / "a.y4m", src), y4m(tmp_path / "b.y4m", other))
    assert got.max_abs_diff == 3.0
    frame1 = (6 * psnr(9 / (W * H)) + 100 + 100) / 8
    frame2 = (6 * 100 + psnr(1 / (W * H // 4)) + 100) / 8
    assert got.psnr_min_db == pytest.approx(min(frame1, frame2), abs=1e-9)


def test_outputs_of_different_shape_are_not_comparable(tmp_path: Path) -> None:
    got = compare_outputs(y4m(tmp_path / "a.y4m", frames(3)), y4m(tmp_path / "b.y4m", frames(2)))
    assert got.max_abs_diff is None and got.psnr_min_db is None
    assert got.detail is not None and "16x8x3 vs 16x8x2" in got.detail
    broken = tmp_path / "c.y4m"
    broken.write_bytes(b"not a y4m")
    bad = compare_outputs(tmp_path / "a.y4m", broken)
    assert bad.detail is not None and "not a Y4M file" in bad.detail


def test_the_run_compares_each_pair_of_different_outputs_once_up_to_a_bound(tmp_path: Path) -> None:
    import shutil

    from farm.scoring import MAX_DISTINCT_OUTPUTS, compare_differing_outputs
    from farm.store import Store

    store = Store(tmp_path / "r.db")
    store.start_run("r", suite_name="s", suite_digest="d", suite_json="{}", bundle_name="b", bundle_version="1",
                    bundle_digest="x", host="h", farm_version="0", conventions={})  # fmt: skip
    decoded = tmp_path / "decoded"
    decoded.mkdir()

    def job(sha: str, path: Path, seq: str = "clip", role: str = "test", repeat: int = 0) -> None:
        shutil.copyfile(path, decoded / f"{sha}.y4m")
        row = {"device_id": f"d-{sha}-{repeat}", "role": role, "sequence": seq, "rate_kbps": 100.0, "repeat": repeat,
               "status": "ok", "bitstream_sha": "b", "bitstream_bytes": 1, "source_sha": "s", "output_sha": sha,
               "started_at": 0.0, "finished_at": 1.0}  # fmt: skip
        store.add_job("r", row, [])

    src = frames(2)
    outputs = []
    for i in range(MAX_DISTINCT_OUTPUTS + 1):
        changed = [f.copy() for f in src]
        changed[0][0] = 10 + i  # output i differs from output 0 by i in one sample
        outputs.append(y4m(tmp_path / f"{i}.y4m", changed))
    job("a", outputs[0])
    job("a", outputs[0], repeat=1)
    job("b", outputs[1])
    job("c", outputs[2])
    job("z", outputs[3], role="anchor")
    for i, path in enumerate(outputs):
        job(f"many{i}", path, seq="noisy")
    said: list[str] = []
    compare_differing_outputs(store, "r", decoded, said.append)
    rows = {(r["sequence"], r["a_sha"], r["b_sha"]): r["max_abs_diff"] for r in store.output_diffs("r")}
    assert len(rows) == 3  # a-b, a-c, b-c of the test role; the anchor and the 17-output bitstream are not paired
    assert (rows[("clip", "a", "b")], rows[("clip", "a", "c")], rows[("clip", "b", "c")]) == (1.0, 2.0, 1.0)
    assert said == [f"noisy@100kbps: {MAX_DISTINCT_OUTPUTS + 1} different outputs, not compared pairwise"]
    compare_differing_outputs(store, "r", decoded, said.append)
    assert len(store.output_diffs("r")) == 3  # a resumed run does not compare a stored pair again
