"""An agent host's content-addressed store of staged files (bundle files, bitstreams), filled by the controller.

Files are named by their sha256 and hashed again on arrival, so a damaged or hostile transfer can never stand in
for a digest it does not have, and a file any run has sent is never sent again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from farm.errors import InfraError


class ArtifactCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise InfraError(f"not a sha256 digest: {digest[:80]!r}")
        return self.root / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def missing(self, digests: list[str]) -> list[str]:
        return [d for d in digests if not self.has(d)]

    def put(self, digest: str, data: bytes) -> None:
        got = hashlib.sha256(data).hexdigest()
        if got != digest:
            raise InfraError(f"artifact sent as {digest[:16]} hashes to {got[:16]}: refused")
        dest = self.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{digest[:16]}.", suffix=".part", dir=dest.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(name, dest)

    def resolve(self, digest: str) -> Path:
        """The local file for a staged digest; the controller sends every missing one before the session starts."""
        path = self.path(digest)
        if not path.is_file():
            raise InfraError(f"the agent lacks artifact {digest[:16]} (was it restarted between staging and the run?)")
        return path
