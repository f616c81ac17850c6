"""Stop ``farm`` at its first device command and say when, and what it had imported by then.

Shared by tests/test_startup.py (which modules a start pays for) and bench/bench_startup.py (how long it takes).
The probe replaces the local transport's verbs before the CLI starts: the first call prints the system-wide
monotonic time and the top-level packages in ``sys.modules``, then ends the process. Importing the local
transport first moves that import earlier but adds nothing a run would not import anyway.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MARK = "FIRST-DEVICE-COMMAND"

PROBE = f"""
import os, sys, time
from farm.transports.local import LocalTransport
def first(*args, **kwargs):
    loaded = ",".join(sorted(sys.modules))
    os.write(1, f"{MARK} {{time.monotonic():.6f}} {{loaded}}\\n".encode())
    os._exit(0)
for verb in ("run", "spawn", "hold", "push", "pull"):
    setattr(LocalTransport, verb, first)
from farm.cli import main
sys.argv = ["farm", *sys.argv[1:]]
main()
"""

HELP_PROBE = """
import sys
sys.argv = ["farm", "--help"]
from farm.cli import main
try:
    main()
except SystemExit:
    pass
print(",".join(sorted(sys.modules)), file=sys.stderr)
"""

INVENTORY = """devices:
  - id: local
    platform: linux
    transport: {kind: local}
    target: auto
    runtime: {ffmpeg: "@imageio-ffmpeg", python: "@python"}
"""


@dataclass(frozen=True)
class FirstCommand:
    at: float
    """CLOCK_MONOTONIC seconds when the first device command was issued."""
    modules: frozenset[str]


def until_first_command(argv: list[str], env: dict[str, str], cwd: Path) -> FirstCommand:
    """Run ``farm ARGV`` until its first device command; raise if it ends without one."""
    res = subprocess.run([sys.executable, "-c", PROBE, *argv], env=env, cwd=cwd, capture_output=True, text=True)
    for line in res.stdout.splitlines():
        if line.startswith(MARK + " "):
            _, at, loaded = line.split(" ", 2)
            return FirstCommand(float(at), frozenset(loaded.split(",")))
    raise AssertionError(
        f"farm {' '.join(argv)} reached no device command (exit {res.returncode}):\n{res.stdout}{res.stderr}"
    )


def modules_after_help(env: dict[str, str]) -> frozenset[str]:
    """Every module in ``sys.modules`` once ``farm --help`` has printed."""
    res = subprocess.run([sys.executable, "-c", HELP_PROBE], env=env, capture_output=True, text=True, check=True)
    return frozenset(res.stderr.strip().splitlines()[-1].split(","))
