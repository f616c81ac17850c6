"""The cluster's own certificate authority: one CA, and a certificate each for the scheduler, agents and clients.

Dask's TLS (``distributed.Security``) verifies the peer's certificate against the CA on both ends of every
connection and does not check host names, so who may join is decided by who holds a certificate this CA signed.
A client certificate can run code on every agent: hand it out like an SSH key to every device host.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from farm.errors import InputError
from farm.fileio import write_atomic

if TYPE_CHECKING:
    from distributed import Security

ROLES = ("scheduler", "agent", "client")
VALID_DAYS = 825  # the longest leaf lifetime mainstream TLS stacks accept


@dataclass(frozen=True)
class CertPaths:
    """Where one role's files live in a certificate folder made by ``farm cluster certs``."""

    ca: Path
    cert: Path
    key: Path


def paths(folder: Path, role: str) -> CertPaths:
    return CertPaths(folder / "ca.pem", folder / f"{role}.pem", folder / f"{role}.key")


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "codec-farm"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])  # fmt: skip


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )  # fmt: skip


def make_ca(name: str = "codec-farm cluster CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name(name), _name(name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(
    role: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Every role acts as TLS server and client (agents listen for peers and dial the scheduler)."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    cert = (
        _builder(_name(f"farm {role}"), ca.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def write_certs(folder: Path) -> list[Path]:
    """A new CA and one certificate per role in ``folder``; refuses to overwrite an existing CA."""
    if (folder / "ca.pem").exists():
        raise InputError(f"{folder / 'ca.pem'} exists: a new CA would lock out every agent that trusts the old one")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = make_ca()
    pem = serialization.Encoding.PEM
    write_atomic(folder / "ca.pem", ca.public_bytes(pem), mode=0o644)
    write_atomic(folder / "ca.key", _key_pem(ca_key), mode=0o600)
    written = [folder / "ca.pem", folder / "ca.key"]
    for role in ROLES:
        cert, key = make_leaf(role, ca, ca_key)
        p = paths(folder, role)
        write_atomic(p.key, _key_pem(key), mode=0o600)
        write_atomic(p.cert, cert.public_bytes(pem), mode=0o644)
        written += [p.cert, p.key]
    return written


def security(folder: Path, role: str) -> Security:
    """The ``distributed.Security`` for ``role``: mutual TLS, and plain connections refused."""
    from distributed import Security

    p = paths(folder, role)
    missing = [str(f) for f in (p.ca, p.cert, p.key) if not f.is_file()]
    if missing:
        raise InputError(f"certificate folder {folder}: missing {', '.join(missing)} (make it with farm cluster certs)")
    kw = {"tls_ca_file": str(p.ca), f"tls_{role}_cert": str(p.cert), f"tls_{role}_key": str(p.key)}
    if role == "agent":
        kw = {"tls_ca_file": str(p.ca), "tls_worker_cert": str(p.cert), "tls_worker_key": str(p.key)}
    return Security(require_encryption=True, **kw)


def default_folder() -> Path:
    """``FARM_CERTS`` or ``.farm/certs``: where each command looks for its certificate without being told."""
    return Path(os.environ.get("FARM_CERTS", ".farm/certs"))
