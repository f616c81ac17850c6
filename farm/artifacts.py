"""Content-addressed files on a host: decoded outputs by digest, pulled once whichever device produced them.

Identical digests across devices are one pull, which is also the proof that those decodes were bit-exact. A
pulled file is hashed on the host before it enters the cache, so a damaged transfer can never poison later runs
under a digest it does not have.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from farm.fileio import sha256_file
from farm.transports.base import TransportError


class DecodedCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._busy: dict[str, threading.Lock] = {}
        self.pulled_bytes = 0
        self.pulls = 0

    def path(self, digest: str) -> Path:
        return self.root / f"{digest}.y4m"

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def fetch(self, digest: str, pull: Callable[[Path], int]) -> Path:
        """The decoded output with this digest, pulled only if the host does not have it yet."""
        with self._lock:
            lock = self._busy.setdefault(digest, threading.Lock())
        with lock:
            dest = self.path(digest)
            if not dest.is_file():
                size = self._pull(digest, dest, pull)
                with self._lock:
                    self.pulled_bytes += size
                    self.pulls += 1
            return dest

    def _pull(self, digest: str, dest: Path, pull: Callable[[Path], int]) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{digest[:16]}.", suffix=".part", dir=self.root)
        os.close(fd)
        tmp = Path(name)
        try:
            size = pull(tmp)
            got = sha256_file(tmp)
            if got != digest:
                raise TransportError(f"pulled output hashes to {got[:16]}, the device reported {digest[:16]}")
            tmp.replace(dest)
            return size
        finally:
            tmp.unlink(missing_ok=True)
