"""Shared fixtures. Tests use real peers: the real ffmpeg from imageio-ffmpeg, real files, real processes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytest_plugins = ["tests.sim_fixtures"]

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
    """Processes on this machine whose command line contains ``marker`` (devices here are local or loopback)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


@pytest.fixture(scope="session")
def adb_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two ADB host key pairs (adb-shell's keygen): ``trusted`` (emulated phones allow it) and ``stranger``."""
    from adb_shell.auth.keygen import keygen

    folder = tmp_path_factory.mktemp("adbkeys")
    for name in ("trusted", "stranger"):
        keygen(str(folder / name))
    return {name: folder / name for name in ("trusted", "stranger")}
