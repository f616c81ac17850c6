"""A cached build folder (the board image, the board runtime disk) that exists only once it is complete.

Why build beside the target and rename: a build stopped half-way (Ctrl-C, a full disk, a failed download) must
never leave a folder that later reads as cached; the rename is atomic on one file system, and the failed build's
log is kept next to it for the person who has to find out why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def build_in_place(
    out: Path, manifest: str, digest: str, inputs: tuple[str, dict[str, Any]], build: Callable[[Path], object]
) -> float:
    """Run ``build(folder)``, write ``manifest`` (digest, seconds, the named inputs), move it to ``out``; seconds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{out.name}.build-", dir=out.parent))
    started = time.monotonic()
    try:
        build(work)
        build_s = time.monotonic() - started
        record = {"digest": digest, "build_s": round(build_s, 1), inputs[0]: inputs[1]}
        (work / manifest).write_text(json.dumps(record, indent=2) + "\n")
        os.replace(work, out)
    except BaseException:
        if (work / "build.log").exists():
            shutil.copyfile(work / "build.log", out.parent / f"{out.name}.failed.log")
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
        raise
    return build_s
