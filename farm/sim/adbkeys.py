"""ADB's RSA public key format, and the check adbd makes of a host's AUTH signature.

Why a module of its own: the ADB emulator (:mod:`farm.sim.adbd`) must decide which host keys it trusts the way
a phone does, and the farm's tooling may want to print or compare the same keys. An ``adbkey.pub`` file (as written
by ``adb`` and by ``adb_shell.auth.keygen``) is not PEM: it is base64 of a little-endian structure made for
Montgomery arithmetic in the bootloader era (AOSP ``libcrypto_utils/android_pubkey.c``)::

    u32 modulus_size_words   (64 for RSA-2048)
    u32 n0inv                (-1 / n mod 2^32)
    u8  modulus[4 * words]   (little-endian)
    u8  rr[4 * words]        (R^2 mod n, little-endian, R = 2^(32 * words))
    u32 exponent

followed by a space and a ``user@host`` comment. The host answers an AUTH TOKEN with an RSA PKCS#1 v1.5 signature
whose DigestInfo says SHA-1 but whose "digest" is the 20-byte token itself, so verification uses a pre-hashed SHA-1.
"""

from __future__ import annotations

import base64
import binascii
import struct
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

TOKEN_SIZE = 20  # the token is signed as if it were a SHA-1 digest


class AdbKeyError(ValueError):
    """A key file that is neither an ADB public key nor a PEM RSA key."""


def parse_adb_public_key(text: str | bytes) -> rsa.RSAPublicKey:
    """Parse ADB's public key format (``adbkey.pub`` contents, or the payload of AUTH RSAPUBLICKEY)."""
    if isinstance(text, bytes):
        text = text.rstrip(b"\0").decode("ascii", "replace")
    fields = text.strip().split(maxsplit=1)
    if not fields:
        raise AdbKeyError("empty ADB public key")
    try:
        blob = base64.b64decode(fields[0], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AdbKeyError(f"ADB public key is not base64: {exc}") from None
    if len(blob) < 8:
        raise AdbKeyError("ADB public key is truncated")
    words, _n0inv = struct.unpack_from("<II", blob, 0)
    size = 4 * words
    if words == 0 or len(blob) != 8 + 2 * size + 4:
        raise AdbKeyError(f"ADB public key has {len(blob)} bytes, not the {8 + 2 * size + 4} its header promises")
    n = int.from_bytes(blob[8 : 8 + size], "little")
    (e,) = struct.unpack_from("<I", blob, 8 + 2 * size)
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise AdbKeyError(f"ADB public key is not a valid RSA key: {exc}") from None


def encode_adb_public_key(key: rsa.RSAPublicKey, comment: str = "farm@codec-farm") -> str:
    """Encode ``key`` in ADB's public key format, with ``comment`` after it (no trailing newline)."""
    numbers = key.public_numbers()
    words = (key.key_size + 31) // 32
    size = 4 * words
    r = 1 << (32 * words)
    n0inv = (-pow(numbers.n, -1, 1 << 32)) % (1 << 32)
    rr = (r * r) % numbers.n
    blob = (
        struct.pack("<II", words, n0inv)
        + numbers.n.to_bytes(size, "little")
        + rr.to_bytes(size, "little")
        + struct.pack("<I", numbers.e)
    )
    return f"{base64.b64encode(blob).decode('ascii')} {comment}"


def load_public_key(path: Path) -> rsa.RSAPublicKey:
    """Load a trusted key: an ``adbkey.pub`` file, or a PEM RSA public or private key (its public half)."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        loaded: object
        if b"PRIVATE KEY" in data:
            loaded = serialization.load_pem_private_key(data, password=None).public_key()
        else:
            loaded = serialization.load_pem_public_key(data)
        if not isinstance(loaded, rsa.RSAPublicKey):
            raise AdbKeyError(f"{path}: not an RSA key")
        return loaded
    try:
        return parse_adb_public_key(data)
    except AdbKeyError as exc:
        raise AdbKeyError(f"{path}: {exc}") from None


def same_key(a: rsa.RSAPublicKey, b: rsa.RSAPublicKey) -> bool:
    """Whether two public keys are the same key (modulus and exponent)."""
    return a.public_numbers() == b.public_numbers()


def verify_token_signature(key: rsa.RSAPublicKey, token: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the host's AUTH SIGNATURE of ``token`` under ``key`` (as adbd checks it)."""
    if len(token) != TOKEN_SIZE:
        return False
    try:
        key.verify(signature, token, padding.PKCS1v15(), Prehashed(hashes.SHA1()))  # noqa: S303 - ADB's scheme
    except (InvalidSignature, ValueError):
        return False
    return True
