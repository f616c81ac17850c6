"""Builds the emulated boards' Debian arm64 disk image from its recipe, once per recipe digest.

Steps (docs/qemu-boards.md): debootstrap's first stage on the host; the recipe's files (initramfs hook first,
so the kernel's postinst builds a small MODULES=list initramfs); the second stage in a chroot, run by
qemu-aarch64-static through binfmt_misc; the aarch64 ffmpeg from imageio-ffmpeg's wheel; then
``mkfs.ext4 -d`` and ``qemu-img convert`` to a qcow2 base. The kernel and initramfs are copied out next to it
(QEMU boots them with ``-kernel``/``-initrd``). The result appears atomically: a half-built image is never
mistaken for a cached one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from farm.sim.qemu.cached import build_in_place
from farm.sim.qemu.recipe import FFMPEG_ON_BOARD, ROOT_LABEL, Recipe, image_dir
from farm.sim.sshboard import SimError

BINFMT = Path("/proc/sys/fs/binfmt_misc")
MANIFEST = "image.json"
STEP_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class Image:
    """A built image: the qcow2 base, the kernel and initramfs to boot it, and how long the build took."""

    dir: Path
    base: Path
    kernel: Path
    initrd: Path
    digest: str
    build_s: float | None
    """Seconds the cold build took (None for an image found in the cache)."""


def run_step(argv: list[str], log: Path, timeout: float = STEP_TIMEOUT_S) -> None:
    """Run one build step with its output appended to the build log; a failure names the step and the log."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            status = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            raise SimError(f"image build: {argv[0]} timed out after {timeout:g}s; see {log}") from None
    if status != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SimError(f"image build: {' '.join(argv[:3])} ... exited {status}; see {log}\n{tail}")


def ensure_binfmt(log: Path) -> None:
    """Make arm64 binaries runnable on this host through qemu-aarch64-static (containers often lack it)."""
    if not (BINFMT / "register").exists():
        run_step(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], log)
    if not (BINFMT / "qemu-aarch64").exists():
        run_step(["update-binfmts", "--enable", "qemu-aarch64"], log)
    entry = BINFMT / "qemu-aarch64"
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        raise SimError(f"qemu-aarch64 is not registered in {BINFMT}; install qemu-user-static and binfmt-support")


def _write_files(recipe: Recipe, root: Path) -> None:
    for rel, text, mode in recipe.files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)


def _enable_units(root: Path) -> None:
    """systemctl enable, by hand: the symlinks it would make (systemctl cannot run against a foreign root)."""
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit, target in (
        ("farm-seed.service", "/etc/systemd/system/farm-seed.service"),
        ("systemd-networkd.service", "/lib/systemd/system/systemd-networkd.service"),
    ):
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer"):
        mask = root / "etc/systemd/system" / timer
        mask.unlink(missing_ok=True)
        mask.symlink_to("/dev/null")


def _install_ffmpeg(recipe: Recipe, root: Path, work: Path, log: Path) -> None:
    """The aarch64 ffmpeg out of imageio-ffmpeg's wheel (the host's exact version: the same build on both ISAs)."""
    wheels = work / "wheels"
    run_step(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            recipe.ffmpeg_platform,
            recipe.ffmpeg_wheel,
            "-d",
            str(wheels),
        ],
        log,
        timeout=900,
    )
    found = sorted(wheels.glob("imageio_ffmpeg-*.whl"))
    if not found:
        raise SimError(f"image build: pip download of {recipe.ffmpeg_wheel} left no wheel; see {log}")
    target = root / FFMPEG_ON_BOARD.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(found[0]) as wheel:
        names = [n for n in wheel.namelist() if "/binaries/ffmpeg-linux-aarch64" in n]
        if not names:
            raise SimError(f"image build: {found[0].name} carries no ffmpeg-linux-aarch64 binary")
        with wheel.open(names[0]) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    target.chmod(0o755)
    shutil.rmtree(wheels)


def _strip(root: Path) -> None:
    """What the board must not carry: downloaded .debs, and host keys made at install time (the seed has its own)."""
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")


def _boot_files(root: Path, out: Path) -> tuple[Path, Path]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise SimError(f"image build: no kernel or initramfs under {root / 'boot'}")
    kernel, initrd = out / "vmlinuz", out / "initrd.img"
    shutil.copyfile(kernels[-1], kernel)
    shutil.copyfile(initrds[-1], initrd)
    return kernel, initrd


def _debootstrap(recipe: Recipe, root: Path, log: Path) -> None:
    run_step(
        [
            "debootstrap",
            "--foreign",
            f"--arch={recipe.arch}",
            "--variant=minbase",
            f"--include={','.join(recipe.packages)}",
            recipe.suite,
            str(root),
            recipe.mirror,
        ],
        log,
    )
    _write_files(recipe, root)  # before the second stage: the kernel's postinst must see the initramfs hook
    run_step(["chroot", str(root), "/debootstrap/debootstrap", "--second-stage"], log)


def _disk(recipe: Recipe, root: Path, out: Path, log: Path) -> Path:
    raw = out / "root.raw"
    run_step(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(root), str(raw), f"{recipe.disk_mib}M"], log)
    base = out / "base.qcow2"
    run_step(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(base)], log)
    raw.unlink()
    return base


def build(recipe: Recipe, work: Path, say: Callable[[str], None]) -> tuple[Path, Path, Path]:
    """All steps into ``work`` (base.qcow2, vmlinuz, initrd.img); the caller publishes the directory."""
    log = work / "build.log"
    root = work / "rootfs"
    say(f"building the Debian {recipe.suite} {recipe.arch} image in {work} (log: {log})")
    ensure_binfmt(log)
    _debootstrap(recipe, root, log)
    _write_files(recipe, root)  # again: packages may have replaced some (fstab, hostname)
    _enable_units(root)
    _install_ffmpeg(recipe, root, work, log)
    _strip(root)
    kernel, initrd = _boot_files(root, work)
    base = _disk(recipe, root, work, log)
    shutil.rmtree(root)
    return base, kernel, initrd


def _cached(out: Path, digest: str) -> Image | None:
    manifest = out / MANIFEST
    if not manifest.exists():
        return None
    return Image(out, out / "base.qcow2", out / "vmlinuz", out / "initrd.img", digest, None)


def ensure_image(recipe: Recipe | None = None, say: Callable[[str], None] = lambda _: None) -> Image:
    """The image for ``recipe`` from the cache, built first when the cache lacks it (needs root: debootstrap)."""
    recipe = recipe or Recipe()
    out = image_dir(recipe)
    found = _cached(out, recipe.digest())
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise SimError(f"no cached image in {out}, and building one needs root (debootstrap, chroot)")
    build_s = build_in_place(
        out, MANIFEST, recipe.digest(), ("recipe", asdict(recipe)), lambda work: build(recipe, work, say)
    )
    say(f"image {recipe.digest()} built in {build_s:.0f}s: {out}")
    return Image(out, out / "base.qcow2", out / "vmlinuz", out / "initrd.img", recipe.digest(), build_s)


def main() -> int:
    """``python -m farm.sim.qemu.image``: build (or find) the image and print its directory."""
    try:
        image = ensure_image(say=lambda line: print(line, file=sys.stderr, flush=True))
    except SimError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    print(image.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
