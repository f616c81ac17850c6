"""The recipe of the emulated boards' disk image, its digest, and where the built image is cached.

Why a digest of the whole recipe: building the image takes minutes (debootstrap's second stage runs under
qemu-user), so it is built once per machine and reused by every later ``farm sim up --qemu``; any change to
what goes into it (a package, a file written into it, the ffmpeg build) must produce a new image, never a
stale one. The cache lives outside the clone so a fresh checkout or ``git clean`` does not throw it away.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

CACHE_ENV = "FARM_QEMU_CACHE"
"""Overrides the cache root (default ``~/.cache/codec-farm/qemu``)."""
FFMPEG_ON_BOARD = "/opt/farm/ffmpeg"
"""Where the image carries the aarch64 ffmpeg (the inventory's ``runtime.ffmpeg``)."""
PYTHON_ON_BOARD = "/usr/bin/python3"
ROOT_LABEL = "farmroot"
SEED_LABEL = "farmseed"

NETWORK = """\
[Match]
Name=e*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
"""
# QEMU's user-mode network always gives the guest 10.0.2.15 behind 10.0.2.2; a static address skips DHCP.

SEED_SCRIPT = f"""\
#!/bin/sh
# Copies this board's SSH host key and the farm's client key from the seed disk (written by the host before
# boot), so the host key the inventory's known_hosts pins is the one sshd serves from its first start.
set -eu
mkdir -p /run/farm-seed /root/.ssh
mount -o ro LABEL={SEED_LABEL} /run/farm-seed
install -m 0600 /run/farm-seed/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key
install -m 0644 /run/farm-seed/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_ed25519_key.pub
install -m 0600 /run/farm-seed/authorized_keys /root/.ssh/authorized_keys
hostname "$(cat /run/farm-seed/hostname)"
umount /run/farm-seed
"""

SEED_UNIT = """\
[Unit]
Description=Farm board identity from the seed disk
Before=ssh.service
DefaultDependencies=no
After=local-fs.target
Wants=local-fs.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/farm-seed
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""

SSHD_CONFIG = """\
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
MaxStartups 100
MaxSessions 100
"""

INITRAMFS_HOOK = """\
#!/bin/sh
# Only the drivers a QEMU virt board boots from (MODULES=list): building a MODULES=most initramfs under
# qemu-user takes ten minutes, this one seconds. They are listed in conf/modules so init loads them.
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
for m in virtio_mmio virtio_blk virtio_net ext4; do
    manual_add_modules "$m"
    echo "$m" >> "${DESTDIR}/conf/modules"
done
"""


def _ffmpeg_wheel() -> str:
    """The aarch64 wheel of the very imageio-ffmpeg the host uses: one ffmpeg build on both ISAs."""
    import imageio_ffmpeg

    return f"imageio-ffmpeg=={imageio_ffmpeg.__version__}"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the image's bytes; its digest names the cache entry."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    arch: str = "arm64"
    packages: tuple[str, ...] = (
        "systemd-sysv",
        "udev",
        "kmod",
        "iproute2",
        "openssh-server",
        "python3",
        "linux-image-arm64",
        "initramfs-tools",
        "zstd",
    )
    ffmpeg_wheel: str = field(default_factory=_ffmpeg_wheel)
    ffmpeg_platform: str = "manylinux_2_28_aarch64"
    files: tuple[tuple[str, str, int], ...] = (
        ("etc/systemd/network/10-farm.network", NETWORK, 0o644),
        ("usr/local/sbin/farm-seed", SEED_SCRIPT, 0o755),
        ("etc/systemd/system/farm-seed.service", SEED_UNIT, 0o644),
        ("etc/ssh/sshd_config.d/farm.conf", SSHD_CONFIG, 0o644),
        ("etc/initramfs-tools/hooks/farm-virtio", INITRAMFS_HOOK, 0o755),
        ("etc/initramfs-tools/conf.d/farm", "MODULES=list\n", 0o644),
        ("etc/fstab", f"LABEL={ROOT_LABEL} / ext4 defaults,noatime 0 1\n", 0o644),
        ("etc/hostname", "farm-aarch64\n", 0o644),
    )
    disk_mib: int = 4096
    revision: int = 1
    """Bump when the build steps (not only this data) change what the image contains."""

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_root() -> Path:
    """``$FARM_QEMU_CACHE`` or ``~/.cache/codec-farm/qemu``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "codec-farm" / "qemu"


def image_dir(recipe: Recipe) -> Path:
    return cache_root() / recipe.digest()
