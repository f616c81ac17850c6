"""Run the real `farm` CLI in-process and read its exit code and output (stdout and stderr together)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from farm.cli import app

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "examples" / "bundles"


@dataclass(frozen=True)
class Result:
    code: int
    output: str


def farm(*args: str | Path, store: Path) -> Result:
    """``farm ARGS`` with its store (and state dir, caches) under ``store``'s folder, never the user's."""
    env = {"FARM_STORE": str(store)}
    res = CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)
    return Result(res.exit_code, res.output)


LOCAL_INVENTORY = """devices:
  - {id: local, platform: linux, transport: {kind: local}, target: auto}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def suite_text(extra: str = "", rates: str = "[150, 300]", gates: str = "") -> str:
    """A small valid suite; ``extra`` lines are appended at top level (so a test knows their line numbers)."""
    gates = gates or '  - {metric: failures, op: "==", value: 0, scope: all}\n'
    return (
        "name: t\n"
        "sequences:\n"
        "  - id: a\n"
        "    generate: {source: testsrc2, width: 64, height: 64, fps: 30, frames: 3}\n"
        f"rates_kbps: {rates}\n"
        "gates:\n"
        f"{gates}"
        f"{extra}"
    )
