"""Do all decodes of a bitstream agree? Bit-exact by digest, or within a declared tolerance for float paths.

Every successful decode of each bitstream in scope (repeats and devices) takes part. ``consistency ==
bitexact`` needs identical digests. ``consistency.max_abs_diff`` and ``consistency.psnr_db`` take the
comparisons the pipeline stored for each pair of different outputs (sample differences of the decoded files
kept on the host), so a decoder whose float path rounds differently per CPU can still be gated on how far
apart the outputs are. Either way the detail names which devices disagree with which.

A bitstream decoded only once proves nothing, so a scope with such a bitstream is missing, not passed.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any

from farm.config.suite import Gate
from farm.gates.verdict import Measured, meets
from farm.gates.view import JobView, RunView

IDENTICAL_PSNR_DB = 100.0  # the farm's PSNR cap (docs/quality-metrics.md): identical outputs score this

Decodes = dict[tuple[str, float], list[tuple[str, str]]]  # (sequence, rate) -> [(device, output sha)]


def decodes(jobs: list[JobView]) -> Decodes:
    """Every successful test decode's (device, output digest), per bitstream."""
    found: Decodes = defaultdict(list)
    for j in jobs:
        if j.role == "test" and j.status == "ok" and j.output_sha:
            found[(j.sequence, j.rate_kbps)].append((j.device_id, j.output_sha))
    return found


def groups(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The devices that produced each digest."""
    by_digest: dict[str, set[str]] = defaultdict(set)
    for device, sha in pairs:
        by_digest[sha].add(device)
    return {sha: sorted(devs) for sha, devs in by_digest.items()}


def _name(seq: str, rate: float) -> str:
    return f"{seq}@{rate:g}kbps"


def consistency(gate: Gate, view: RunView, devices: list[str]) -> Measured:
    jobs = [j for j in view.jobs if j.device_id in devices]
    found = decodes(jobs)
    compared = {k: v for k, v in found.items() if len(v) >= 2}
    single = sorted(_name(*k) for k, v in found.items() if len(v) < 2)
    inputs: dict[str, Any] = {"devices": devices, "compared": len(compared), "decoded_once": single}
    if not compared:
        return Measured(None, "no bitstream was decoded successfully twice: nothing to compare", inputs)
    bitexact = gate.metric == "consistency"
    result = _bitexact(compared, inputs) if bitexact else _tolerance(gate, view, compared, inputs)
    if single and result.verdict is None and result.value is not None and meets(gate, result.value):
        # a bitstream decoded only once proves nothing: a pass cannot cover it (a disagreement still fails)
        note = f"; not compared (decoded once): {', '.join(single[:5])}"
        return Measured(None, result.detail + note, result.inputs)
    return result


def _bitexact(compared: Decodes, inputs: dict[str, Any]) -> Measured:
    mismatches = []
    for (seq, rate), pairs in sorted(compared.items()):
        by_sha = groups(pairs)
        if len(by_sha) > 1:
            text = " vs ".join(f"{sha[:12]} on {','.join(devs)}" for sha, devs in by_sha.items())
            mismatches.append(f"{_name(seq, rate)}: {text}")
    inputs["mismatches"] = mismatches
    if mismatches:
        return Measured("mismatch", "; ".join(mismatches[:5]), inputs)
    total = sum(len(v) for v in compared.values())
    return Measured("bitexact", f"{len(compared)} bitstreams decoded identically across {total} decodes", inputs)


def _tolerance(gate: Gate, view: RunView, compared: Decodes, inputs: dict[str, Any]) -> Measured:
    """The worst pair over every bitstream: largest sample difference, or lowest worst-frame PSNR."""
    by_psnr = gate.metric == "consistency.psnr_db"
    worst = IDENTICAL_PSNR_DB if by_psnr else 0.0
    disagreements: list[str] = []
    unknown: list[str] = []
    broken: list[str] = []
    pairs_in: list[dict[str, Any]] = []
    for (seq, rate), pairs in sorted(compared.items()):
        by_sha = groups(pairs)
        for a, b in combinations(sorted(by_sha), 2):
            who = f"{_name(seq, rate)}: {','.join(by_sha[a])} vs {','.join(by_sha[b])}"
            diff = view.diff(a, b)
            if diff is None:
                unknown.append(f"{who} (no comparison stored)")
                continue
            pairs_in.append({"bitstream": _name(seq, rate), "a": a, "b": b, "a_devices": by_sha[a],
                             "b_devices": by_sha[b], "max_abs_diff": diff.max_abs_diff,
                             "psnr_min_db": diff.psnr_min_db, "detail": diff.detail})  # fmt: skip
            if diff.max_abs_diff is None or diff.psnr_min_db is None:
                broken.append(f"{who}: {diff.detail or 'not comparable'}")
                continue
            value = diff.psnr_min_db if by_psnr else diff.max_abs_diff
            worst = min(worst, value) if by_psnr else max(worst, value)
            disagreements.append(f"{who}: max |diff| {diff.max_abs_diff:g}, worst frame {diff.psnr_min_db:.2f} dB")
    inputs["pairs"] = pairs_in
    if broken:
        # outputs of one bitstream that cannot even be laid side by side (other size, frame count) disagree
        return Measured("incomparable", "; ".join(broken[:5]), inputs, verdict="fail")
    if unknown:
        return Measured(None, "; ".join(unknown[:5]), inputs)
    if not disagreements:
        total = sum(len(v) for v in compared.values())
        return Measured(worst, f"{len(compared)} bitstreams decoded identically across {total} decodes", inputs)
    return Measured(worst, "; ".join(disagreements[:5]), inputs)
