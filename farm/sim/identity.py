"""The SSH identity every simulated board shows the farm: its host key, and the known_hosts line that pins it.

Why one place: the sshd boards and the QEMU boards are reached the same way as a real board on the lab network
(strict known_hosts from the first connection), so what the inventory pins must be derived the same way for both.
"""

from __future__ import annotations

from pathlib import Path


class BoardIdentity:
    """Mixed into a board dataclass that has ``base_dir``, ``host`` and ``port``."""

    base_dir: Path
    host: str
    port: int

    @property
    def host_key_path(self) -> Path:
        return self.base_dir / "ssh_host_ed25519_key"

    @property
    def host_public_key(self) -> str:
        """The host key's public line (``ssh-ed25519 AAAA... comment``)."""
        return self.host_key_path.with_name(self.host_key_path.name + ".pub").read_text().strip()

    @property
    def known_hosts_line(self) -> str:
        """``[127.0.0.1]:PORT ssh-ed25519 AAAA...``: what a client's known_hosts must hold for this board."""
        key_type, key_b64 = self.host_public_key.split()[:2]
        return f"[{self.host}]:{self.port} {key_type} {key_b64}"
