"""Confinement of a bundle's encoder on the host, with bubblewrap (``bwrap``) where the host allows it.

A bundle is code (docs/security.md): its encoder runs on the controller, next to SSH keys, the store and the
network. Inside the sandbox it sees only what an encode needs: its input (read-only), the folder its output goes
to (writable), the bundle and the runtime binaries it was given (read-only), the system's programs and libraries
under /usr (read-only), and no network, no other process, no environment but PATH (HOME and TMPDIR are the
output folder).
Where bwrap is missing or user namespaces are denied, the encode still runs, unconfined, and the run says so once.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("farm.sandbox")

# The system's programs and libraries, read-only. On merged-/usr systems /bin, /lib ... are links into /usr.
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Files some programs read at start-up (dynamic loader cache, alternatives links); nothing secret.
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime")
# Encoders size their thread pools from these: without them SVT-AV1 or x265 would run on one core.
_CPU_INFO = ("/sys/devices/system/cpu", "/sys/fs/cgroup")
_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Confinement:
    """Whether encoders run confined here, and why not when they do not."""

    bwrap: str | None
    reason: str = ""

    @property
    def confined(self) -> bool:
        return self.bwrap is not None


def _system_args() -> list[str]:
    args: list[str] = []
    for path in _SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in (*_SYSTEM_FILES, *_CPU_INFO):
        args += ["--ro-bind-try", path, path]
    return args


def wrap(
    bwrap: str, argv: Sequence[str], readable: Sequence[Path], writable: Path, executables: Sequence[str] = ()
) -> list[str]:
    """``argv`` inside a sandbox where only ``readable`` (and the system) can be read and only ``writable`` written.

    Paths keep their host names inside, so the argv needs no rewriting. ``executables`` are the runtime binaries
    (e.g. imageio-ffmpeg's ffmpeg, which lives in site-packages, not under /usr).
    """
    args = [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--clearenv", "--setenv", "PATH", _PATH, "--setenv", "LC_ALL", "C.UTF-8",
        *_system_args(), "--proc", "/proc", "--dev", "/dev",
    ]  # fmt: skip
    for path in [*(str(p) for p in readable), *executables]:
        resolved = os.path.realpath(path)
        args += ["--ro-bind", resolved, resolved]
        if resolved != os.path.abspath(path):  # a link (pyenv shims, alternatives): its own name must resolve too
            args += ["--ro-bind", resolved, os.path.abspath(path)]
    out = os.path.realpath(writable)
    # the sandbox's own root (where bwrap made the mount points, /tmp included) goes read-only: a write outside
    # the output folder fails loudly instead of vanishing with the sandbox; scratch files go beside the output
    args += ["--bind", out, out, "--remount-ro", "/", "--chdir", out]
    args += ["--setenv", "HOME", out, "--setenv", "TMPDIR", out, "--", *argv]
    return args


@lru_cache(maxsize=1)
def confinement() -> Confinement:
    """Probe once per process: bwrap on PATH, and a sandboxed ``true`` that really starts (namespaces allowed)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Confinement(
            None, "bubblewrap (bwrap) is not installed: run scripts/system-deps or apt install bubblewrap"
        )
    try:
        with tempfile.TemporaryDirectory(prefix="farm-probe-") as scratch:
            res = subprocess.run(wrap(bwrap, ["true"], [], Path(scratch)), capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Confinement(None, f"bwrap cannot run: {exc}")
    if res.returncode != 0:
        lines = res.stderr.decode("utf-8", "replace").strip().splitlines()
        why = lines[-1] if lines else f"exit {res.returncode}"
        return Confinement(
            None,
            f"bwrap cannot create a sandbox here ({why}): user namespaces are probably denied "
            "(kernel.unprivileged_userns_clone, AppArmor)",
        )
    return Confinement(bwrap)


_warned: set[str] = set()
_lock = threading.Lock()  # encodes run in a thread pool: one probe and one warning, not one per thread


def warn_unconfined(reason: str) -> None:
    """Said once per process, as a warning that outlives the live view: the user must know the encoder is free."""
    with _lock:
        if reason in _warned:
            return
        _warned.add(reason)
    log.warning(
        "warning: the bundle's encoder is NOT confined on this host: it can read and write whatever you can and "
        "use the network (%s). See docs/security.md.",
        reason,
    )


def confine(
    argv: Sequence[str], readable: Sequence[Path], writable: Path, executables: Sequence[str] = ()
) -> list[str]:
    """The argv to run: sandboxed where the host allows it, else ``argv`` itself after a one-time warning."""
    with _lock:
        state = confinement()
    if state.bwrap is None:
        warn_unconfined(state.reason)
        return list(argv)
    return wrap(state.bwrap, argv, readable, writable, executables)
