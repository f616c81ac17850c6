"""Load and validate a run's inputs, render and encode on the host, and plan the jobs each device runs.

Everything a device session needs leaves here as picklable specs that name files by digest; ``artifacts``
says where each digest lives on this host.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from farm.bundle import Bundle, open_bundle
from farm.config.inventory import Device, Inventory, load_inventory, select
from farm.config.suite import Suite, anchor_problems, load_suite
from farm.errors import InputError, Problem
from farm.media import Bitstream, Source, encode, render
from farm.session.cancel import Cancel
from farm.session.spec import BundleRef, FileRef, JobKey, JobSpec, SessionSpec

T = TypeVar("T")
Y4M_FRAME_HEADER = 6  # "FRAME\n"
Y4M_HEADER_MAX = 128


@dataclass(frozen=True)
class Plan:
    suite: Suite
    suite_path: Path
    bundle: Bundle
    anchor: Bundle | None
    devices: tuple[Device, ...]
    encode_scope: str = field(default_factory=lambda: secrets.token_hex(8))
    """Keys the encodes of a non-deterministic encoder to this run only (farm/media.py ``encode``)."""


@dataclass(frozen=True)
class Media:
    sources: dict[str, Source]
    bitstreams: dict[tuple[str, str, float], Bitstream]  # (role, sequence, rate)
    encodes: int
    reused: int


def load_plan(
    suite_path: Path, bundle_path: Path, anchor_path: Path | None, inventory_path: Path, selector: str | None,
    cache: Path,
) -> Plan:  # fmt: skip
    """Steps 1 and 2: every input problem is collected before anything runs."""
    problems: list[Problem] = []

    def attempt(fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except InputError as exc:
            problems.extend(exc.problems)
            return None

    suite = attempt(lambda: load_suite(suite_path))
    inventory: Inventory | None = attempt(lambda: load_inventory(inventory_path))
    bundle = attempt(lambda: open_bundle(bundle_path, cache))
    anchor_src = anchor_path if anchor_path is not None else (suite.anchor if suite else None)
    anchor = attempt(lambda: open_bundle(anchor_src, cache)) if anchor_src else None
    if suite is not None:
        problems.extend(anchor_problems(suite, has_anchor=anchor_src is not None))
    if problems or suite is None or inventory is None or bundle is None:
        raise InputError(problems)
    devices = select(inventory, selector if selector is not None else suite.devices)
    problems = [p for d in devices for b in (bundle, anchor) if b is not None for p in _fit(b, d, inventory_path)]
    if problems:
        raise InputError(problems)
    if not devices:
        raise InputError("no devices selected")
    return Plan(suite, suite_path, bundle, anchor, tuple(devices))


def _fit(bundle: Bundle, device: Device, inventory_path: Path) -> list[Problem]:
    """Refuse a device whose target the bundle lacks, or whose runtime lacks what the target needs."""
    target = bundle.manifest.targets.get(device.target)
    if target is None:
        msg = f"bundle {bundle.label} has no target {device.target!r} for device {device.id!r}"
        return [Problem(bundle.source or str(bundle.root), None, "targets", msg)]
    missing = [r for r in target.requires if r not in device.runtime]
    if missing:
        msg = f"bundle {bundle.label} needs {', '.join(missing)} on the device"
        return [Problem(str(inventory_path), None, f"{device.id}.runtime", msg)]
    return []


def prepare_media(plan: Plan, cache: Path, log: Callable[[str], None], cancel: Cancel | None = None) -> Media:
    """Step 3: render sources and encode on the host, two encodes at a time; a stop kills what is running."""
    sources = {}
    for seq in plan.suite.sequences:
        log(f"rendering {seq.id}")
        sources[seq.id] = render(seq, cache, cancel)
    roles = [("test", plan.bundle)] + ([("anchor", plan.anchor)] if plan.anchor else [])
    tasks = [(role, b, sid, rate) for role, b in roles for sid in sources for rate in plan.suite.rates_kbps]
    log(f"encoding {len(tasks)} bitstreams")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(lambda t: encode(t[1], sources[t[2]], t[3], cache, cancel, scope=plan.encode_scope), tasks)
        )
    bitstreams = {(t[0], t[2], t[3]): bs for t, bs in zip(tasks, results, strict=True)}
    reused = sum(1 for bs in results if bs.reused)
    return Media(sources, bitstreams, len(results) - reused, reused)


def plan_jobs(plan: Plan, media: Media) -> list[JobSpec]:
    """Anchor jobs once (they only feed BD-rate), then the bundle's repeats, interleaving rate points."""
    keys = [("anchor", 0)] if plan.anchor is not None else []
    keys += [("test", r) for r in range(plan.suite.repeats)]
    jobs: list[JobSpec] = []
    for role, repeat in keys:
        bundle = plan.anchor if role == "anchor" else plan.bundle
        assert bundle is not None
        for sid, src in media.sources.items():
            for rate in plan.suite.rates_kbps:
                bs = media.bitstreams[(role, sid, rate)]
                ref = FileRef(bs.sha256, f"{bs.sha256}{bs.path.suffix}", bs.size)
                jobs.append(JobSpec(len(jobs), JobKey(role, sid, rate, repeat), bundle.digest, ref, src.sha256,
                                    src.fps, _output_bytes(src)))  # fmt: skip
    return jobs


def _output_bytes(src: Source) -> int:
    """An 8-bit 4:2:0 Y4M of the source's size (what the decoder contract asks the decoder to write)."""
    return Y4M_HEADER_MAX + src.frames * (src.width * src.height * 3 // 2 + Y4M_FRAME_HEADER)


def bundle_ref(bundle: Bundle, target_name: str) -> BundleRef:
    target = bundle.manifest.targets[target_name]
    files = tuple(FileRef(bundle.files[rel], rel, (bundle.root / rel).stat().st_size) for rel in target.files)
    app = None
    if target.app is not None:
        app = FileRef(bundle.files[target.app], target.app, (bundle.root / target.app).stat().st_size)
    return BundleRef(bundle.digest, bundle.label, files, target.decode, app, target.bundle_id)


def session_specs(
    plan: Plan, jobs: list[JobSpec], run_id: str, done: Collection[tuple[str, JobKey]] = ()
) -> list[SessionSpec]:
    """One spec per device, with the jobs it still lacks (all of them, unless the run is being resumed)."""
    specs = []
    for device in plan.devices:
        todo = tuple(j for j in jobs if (device.id, j.key) not in done)
        if not todo:
            continue
        bundles = tuple(bundle_ref(b, device.target) for b in (plan.bundle, plan.anchor) if b is not None)
        specs.append(SessionSpec(run_id, device, plan.suite, bundles, todo))
    return specs


def artifacts(plan: Plan, media: Media) -> dict[str, Path]:
    """Every file a session may stage, by digest: the bundles' files and the bitstreams."""
    out = {sha: b.root / rel for b in (plan.bundle, plan.anchor) if b is not None for rel, sha in b.files.items()}
    out.update({bs.sha256: bs.path for bs in media.bitstreams.values()})
    return out
