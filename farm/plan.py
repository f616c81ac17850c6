"""Load and validate a run's inputs, render and encode on the host, and plan the jobs each device runs.

Everything a device session needs leaves here as picklable specs that name files by digest; ``artifacts``
says where each digest lives on this host.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from farm.bundle import Bundle, open_bundle
from farm.config.inventory import Device, Inventory, load_inventory, select
from farm.config.suite import Suite, anchor_problems, load_suite
from farm.errors import InputError, Problem
from farm.measures import ANCHOR_NAME
from farm.media import Bitstream, Source, encode, render
from farm.session.cancel import Cancel
from farm.session.spec import PENDING, BundleRef, FileRef, JobKey, JobSpec, SessionSpec

T = TypeVar("T")
Y4M_FRAME_HEADER = 6  # "FRAME\n"
Y4M_HEADER_MAX = 128


@dataclass(frozen=True)
class Anchor:
    """One anchor of a run: its name (what ``bd_rate[NAME]`` and ``--anchor NAME=PATH`` say), its bundle, and
    the role its jobs are stored under: ``anchor`` for the first (default) one, as every single-anchor run
    before several anchors existed, ``anchor:NAME`` for the others (docs/decisions.md)."""

    name: str
    bundle: Bundle
    role: str


@dataclass(frozen=True)
class Plan:
    suite: Suite
    suite_path: Path
    bundle: Bundle
    anchors: tuple[Anchor, ...]
    devices: tuple[Device, ...]
    encode_scope: str = field(default_factory=lambda: secrets.token_hex(8))
    """Keys the encodes of a non-deterministic encoder to this run only (farm/media.py ``encode``)."""

    @property
    def anchor(self) -> Bundle | None:
        """The default (first) anchor's bundle: the one ``bd_rate.METRIC`` and runs.anchor_name mean."""
        return self.anchors[0].bundle if self.anchors else None

    def bundles(self) -> tuple[Bundle, ...]:
        """The bundle under test, then each anchor's (one bundle given under two names is staged once)."""
        seen: dict[str, Bundle] = {self.bundle.digest: self.bundle}
        for a in self.anchors:
            seen.setdefault(a.bundle.digest, a.bundle)
        return tuple(seen.values())

    def role_bundle(self, role: str) -> Bundle:
        """The bundle whose bitstreams and decodes a job of ``role`` uses."""
        if role == "test":
            return self.bundle
        return next(a.bundle for a in self.anchors if a.role == role)


def anchor_role(name: str, first: bool) -> str:
    return "anchor" if first else f"anchor:{name}"


AnchorArg = tuple[str | None, Path]
"""An anchor as given: (name or None to name it after its bundle, path)."""


def parse_anchor(text: str) -> AnchorArg:
    """``--anchor NAME=PATH`` or ``--anchor PATH`` (named after its bundle's manifest name, as runs were before).

    Text before the first ``=`` is a name only when it is a valid anchor name, so ``--anchor ../a=b/x`` is a path.
    """
    name, sep, path = text.partition("=")
    if sep and path and re.fullmatch(ANCHOR_NAME, name):
        return name, Path(path)
    return None, Path(text)


@dataclass(frozen=True)
class Media:
    sources: dict[str, Source]
    bitstreams: dict[tuple[str, str, float], Bitstream]  # (role, sequence, rate)
    encodes: int
    reused: int


def load_plan(
    suite_path: Path, bundle_path: Path, anchor_args: Sequence[AnchorArg], inventory_path: Path,
    selector: str | None, cache: Path,
) -> Plan:  # fmt: skip
    """Steps 1 and 2: every input problem is collected before anything runs.

    ``anchor_args`` (from ``--anchor``) replace the suite's ``anchor:``/``anchors:`` when given.
    """
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
    given = list(anchor_args) if anchor_args else (_suite_anchors(suite) if suite else [])
    opened = [(name, attempt(functools.partial(open_bundle, path, cache))) for name, path in given]
    anchors = _named(opened, problems)
    if suite is not None:
        known = [a.name for a in anchors] if len(anchors) == len(given) else None
        problems.extend(anchor_problems(suite, known if given else []))
    if problems or suite is None or inventory is None or bundle is None:
        raise InputError(problems)
    devices = select(inventory, selector if selector is not None else suite.devices)
    plan = Plan(suite, suite_path, bundle, anchors, tuple(devices))
    problems = [p for d in devices for b in plan.bundles() for p in _fit(b, d, inventory_path)]
    if problems:
        raise InputError(problems)
    if not devices:
        raise InputError("no devices selected")
    return plan


def _suite_anchors(suite: Suite) -> list[AnchorArg]:
    if suite.anchors is not None:
        return [(name, path) for name, path in suite.anchors.items()]
    return [(None, suite.anchor)] if suite.anchor is not None else []


def _named(opened: Sequence[tuple[str | None, Bundle | None]], problems: list[Problem]) -> tuple[Anchor, ...]:
    """Name each opened anchor (after its bundle when not named) and refuse a name given twice."""
    anchors: list[Anchor] = []
    for name, b in opened:
        if b is None:
            continue
        label = name or b.manifest.name
        if any(a.name == label for a in anchors):
            problems.append(Problem("--anchor", None, label, f"anchor name {label!r} is given twice; name them "
                                    "apart with --anchor NAME=PATH"))  # fmt: skip
            continue
        anchors.append(Anchor(label, b, anchor_role(label, first=not anchors)))
    return tuple(anchors)


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


STOPPED_WHILE_ENCODING = "stopped while encoding, before any job ran; the encodes that finished are cached"

EncodeTask = tuple[str, Bundle, str, float]
"""(role, bundle, sequence id, rate) of one bitstream to encode."""


def prepare_media(plan: Plan, cache: Path, log: Callable[[str], None], cancel: Cancel | None = None) -> Media:
    """Step 3: render sources and encode on the host, two encodes at a time; a stop kills what is running."""
    sources = render_sources(plan, cache, log, cancel)
    tasks = encode_tasks(plan, sources)
    log(f"encoding {len(tasks)} bitstreams")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda t: encode_one(plan, t, sources, cache, cancel), tasks))
    return media_of(sources, tasks, results)


def render_sources(plan: Plan, cache: Path, log: Callable[[str], None], cancel: Cancel | None) -> dict[str, Source]:
    sources = {}
    for seq in plan.suite.sequences:
        log(f"rendering {seq.id}")
        sources[seq.id] = render(seq, cache, cancel)
    return sources


def encode_tasks(plan: Plan, sources: dict[str, Source]) -> list[EncodeTask]:
    """Every bitstream of the run, in the order each device's jobs need them (``plan_jobs``: anchors first)."""
    roles = [(a.role, a.bundle) for a in plan.anchors] + [("test", plan.bundle)]
    return [(role, b, sid, rate) for role, b in roles for sid in sources for rate in plan.suite.rates_kbps]


def encode_one(
    plan: Plan, task: EncodeTask, sources: dict[str, Source], cache: Path, cancel: Cancel | None
) -> Bitstream:
    _, bundle, sid, rate = task
    return encode(bundle, sources[sid], rate, cache, cancel, scope=plan.encode_scope)


def media_of(sources: dict[str, Source], tasks: Sequence[EncodeTask], results: Sequence[Bitstream]) -> Media:
    bitstreams = {(t[0], t[2], t[3]): bs for t, bs in zip(tasks, results, strict=True)}
    reused = sum(1 for bs in results if bs.reused)
    return Media(sources, bitstreams, len(results) - reused, reused)


def plan_jobs(plan: Plan, media: Media) -> list[JobSpec]:
    """Each anchor's jobs once (they only feed BD-rate), then the bundle's repeats, interleaving rate points.

    A bitstream ``media`` lacks (a pipelined run plans before its encodes finish) is named ``PENDING``.
    """
    keys = [(a.role, 0) for a in plan.anchors]
    keys += [("test", r) for r in range(plan.suite.repeats)]
    jobs: list[JobSpec] = []
    for role, repeat in keys:
        bundle = plan.role_bundle(role)
        for sid, src in media.sources.items():
            for rate in plan.suite.rates_kbps:
                bs = media.bitstreams.get((role, sid, rate))
                ref = bitstream_ref(bs) if bs is not None else FileRef(PENDING, PENDING, 0)
                jobs.append(JobSpec(len(jobs), JobKey(role, sid, rate, repeat), bundle.digest, ref, src.sha256,
                                    src.fps, _output_bytes(src)))  # fmt: skip
    return jobs


def bitstream_ref(bs: Bitstream) -> FileRef:
    return FileRef(bs.sha256, f"{bs.sha256}{bs.path.suffix}", bs.size)


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
        bundles = tuple(bundle_ref(b, device.target) for b in plan.bundles())
        specs.append(SessionSpec(run_id, device, plan.suite, bundles, todo))
    return specs


def artifacts(plan: Plan, media: Media) -> dict[str, Path]:
    """Every file a session may stage, by digest: the bundles' files and the bitstreams."""
    out = {sha: b.root / rel for b in plan.bundles() for rel, sha in b.files.items()}
    out.update({bs.sha256: bs.path for bs in media.bitstreams.values()})
    return out
