"""Shared fixtures. Tests use real peers: the real ffmpeg from imageio-ffmpeg, real files, real processes."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from farm.transports.base import Transport

pytest_plugins = ["tests.sim_fixtures", "tests.pg_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "bundles"


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    """A private copy of the av1-svt example bundle that a test may damage."""
    dest = tmp_path / "av1-svt"
    shutil.copytree(EXAMPLES / "av1-svt", dest)
    return dest


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def alive(marker: str) -> list[str]:
    """Live (non-zombie) processes on this machine whose command line contains ``marker``.

    Every device in the tests (local, sshd boards, emulated phones) runs its processes on this machine, so
    "nothing left on the device" is checked here, without asking the device.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != "Z":
            found.append(f"{entry.name} {cmdline}")
    return found


def wait_for(cond: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def require_tool(path: Path, package: str) -> None:
    """Skip on a developer machine, fail under CI (where scripts/system-deps must have installed it)."""
    if os.access(path, os.X_OK):
        return
    if os.environ.get("CI"):
        pytest.fail(f"{path} is missing under CI: scripts/system-deps must install {package}", pytrace=False)
    pytest.skip(f"{path} is not installed (run `bash scripts/system-deps`)")


def check_spawn_and_kill(transport: Transport, marker: str) -> None:
    """The transport contract: spawn starts a process group in the background, kill leaves nothing of it."""
    proc = transport.spawn(["sh", "-c", f"sleep {marker} & sleep {marker}"])
    assert wait_for(lambda: len(alive(marker)) >= 2), alive(marker)
    transport.kill(proc)
    assert wait_for(lambda: not alive(marker)), alive(marker)
    transport.kill(proc)  # killing twice is harmless


@pytest.fixture(scope="session")
def adb_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two ADB host key pairs (adb-shell's keygen): ``trusted`` (emulated phones allow it) and ``stranger``."""
    from adb_shell.auth.keygen import keygen

    folder = tmp_path_factory.mktemp("adbkeys")
    for name in ("trusted", "stranger"):
        keygen(str(folder / name))
        (folder / name).chmod(0o600)  # adb-shell writes it with the umask (0644); the farm refuses that
    return {name: folder / name for name in ("trusted", "stranger")}
