"""ONNX Runtime for the emulated boards: an aarch64 site-packages tree made on the host, as a read-only disk.

Why a disk beside the image rather than in it: the image took 39 minutes to build here, and a change of its
recipe means a cold rebuild for every machine and CI; the runtime changes with the host's onnxruntime and numpy
instead, so it is a separate cache entry keyed by its own pins. pip resolves aarch64 wheels on the host
(``--platform ... --only-binary=:all: --target``), ``mkfs.ext4 -d`` packs the tree without root, and each board
attaches the one file read-only and mounts it over SSH after boot. The board has no network: nothing is
downloaded there. The pins are the host's own versions, so both ISAs run the same ONNX Runtime release and a
difference between their outputs is the ISA's, not a version's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from farm.sim.qemu.cached import build_in_place
from farm.sim.qemu.image import run_step
from farm.sim.qemu.recipe import PYTHON_ON_BOARD, cache_root
from farm.sim.sshboard import SimError

RUNTIME_LABEL = "farmrt"
MOUNT_POINT = "/opt/farm-runtimes"
ORT_PYTHON = f"{MOUNT_POINT}/bin/python3-ort"
"""The board's ``onnxruntime`` runtime in the inventory: Debian's python3 with the disk's site-packages."""
MANIFEST = "runtime.json"
WRAPPER = f"""#!/bin/sh
# Debian's python3 with the farm's aarch64 ONNX Runtime tree (read-only disk {RUNTIME_LABEL}, docs/qemu-boards.md)
PYTHONPATH="{MOUNT_POINT}/site${{PYTHONPATH:+:$PYTHONPATH}}" exec {PYTHON_ON_BOARD} "$@"
"""
WANTED = ("onnxruntime", "numpy", "constriction")
"""What the learned bundles' decoder imports (examples/learned/lrc.py)."""
NO_AARCH64_WHEEL = ("constriction",)
"""Published without a Linux aarch64 wheel (PyPI, 0.3.5 to 0.5.0 checked): left out, so a decoder importing it
fails on the board naming the module (docs/qemu-boards.md)."""


def _pin(name: str) -> str:
    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:
        raise SimError(f"board runtime: {name} is not installed on the host, so there is no version to pin") from None


def _host_pins() -> tuple[str, ...]:
    return tuple(_pin(name) for name in WANTED if name not in NO_AARCH64_WHEEL)


@dataclass(frozen=True)
class RuntimePins:
    """Everything that decides the runtime disk's bytes; its digest names the cache entry."""

    packages: tuple[str, ...] = field(default_factory=_host_pins)
    platforms: tuple[str, ...] = ("manylinux2014_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64")
    python_version: str = "3.11"  # Debian 12's python3 on the board
    wrapper: str = WRAPPER
    revision: int = 1

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RuntimeDisk:
    """A built runtime disk, and how long building it took (None when found in the cache)."""

    path: Path
    digest: str
    packages: tuple[str, ...]
    build_s: float | None


def runtime_dir(pins: RuntimePins) -> Path:
    return cache_root() / "runtimes" / pins.digest()


def _pip_argv(pins: RuntimePins, site: Path) -> list[str]:
    platforms = [arg for p in pins.platforms for arg in ("--platform", p)]
    return [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
        "--root-user-action=ignore", "--target", str(site), *platforms, "--python-version", pins.python_version,
        "--implementation", "cp", "--only-binary=:all:", *pins.packages,
    ]  # fmt: skip


def _tree_mib(tree: Path) -> int:
    total = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    return int(total * 1.25 / 2**20) + 32  # ext4 metadata and block rounding, with room to spare


def build(pins: RuntimePins, work: Path) -> Path:
    """The aarch64 tree (pip for another platform) and its ext4 image; returns the image."""
    log, tree = work / "build.log", work / "tree"
    run_step(_pip_argv(pins, tree / "site"), log, timeout=1800)
    for cache in (tree / "site").rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    wrapper = tree / "bin" / Path(ORT_PYTHON).name
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(pins.wrapper)
    wrapper.chmod(0o755)
    disk = work / "runtime.img"
    run_step(["mkfs.ext4", "-q", "-F", "-L", RUNTIME_LABEL, "-d", str(tree), str(disk), f"{_tree_mib(tree)}M"], log)
    shutil.rmtree(tree)
    return disk


def ensure_runtime(pins: RuntimePins | None = None, say: Callable[[str], None] = lambda _: None) -> RuntimeDisk:
    """The runtime disk for ``pins`` from the cache, built first when the cache lacks it (no root needed)."""
    pins = pins or RuntimePins()
    out = runtime_dir(pins)
    if (out / MANIFEST).exists():
        return RuntimeDisk(out / "runtime.img", pins.digest(), pins.packages, None)
    say(f"board runtime {pins.digest()}: {' '.join(pins.packages)} for aarch64 ...")
    build_s = build_in_place(out, MANIFEST, pins.digest(), ("pins", asdict(pins)), lambda work: build(pins, work))
    say(f"board runtime {pins.digest()} built in {build_s:.0f}s: {out}")
    return RuntimeDisk(out / "runtime.img", pins.digest(), pins.packages, build_s)


def mount_argv() -> list[str]:
    """Run on the board after boot: the read-only disk at :data:`MOUNT_POINT` (``noload``: never replay a
    journal on a device the guest cannot write)."""
    script = (
        f"mkdir -p {MOUNT_POINT} && (mountpoint -q {MOUNT_POINT} || "
        f"mount -t ext4 -o ro,noload LABEL={RUNTIME_LABEL} {MOUNT_POINT})"
    )
    return ["sh", "-c", script]
