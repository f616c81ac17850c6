"""Which scheduler addresses the farm dials: TLS anywhere, plain TCP only on this machine's loopback.

A plain ``tcp://`` link carries pickled code and device results unauthenticated, so it is only accepted where no
other host can reach it (tests, a laptop); everything else must say ``tls://`` and present certificates.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from farm.errors import InputError

DEFAULT_PORT = 8786


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check(address: str, option: str = "--scheduler") -> str:
    """The address normalised to ``scheme://host:port``; an InputError naming the option for anything else."""
    parts = urlsplit(address if "://" in address else f"tls://{address}")
    host = parts.hostname
    if parts.scheme not in ("tls", "tcp") or not host:
        raise InputError(f"{option} {address!r}: expected tls://HOST:PORT")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise InputError(f"{option} {address!r}: the port is not a number") from None
    if parts.scheme == "tcp" and not is_loopback(host):
        raise InputError(f"{option} {address!r}: plain tcp:// is refused off loopback; use tls:// with certificates")
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}:{port}"


def is_tls(address: str) -> bool:
    return address.startswith("tls://")
