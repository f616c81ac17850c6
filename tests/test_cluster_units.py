"""The cluster's small parts without a cluster: addresses, certificates, the agent's artifact cache."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import pytest

from farm.cluster import address
from farm.cluster.cache import ArtifactCache
from farm.cluster.certs import security, write_certs
from farm.cluster.names import device_of, resource
from farm.errors import FarmError, InputError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("tls://sched.lab:8786", "tls://sched.lab:8786"),
        ("sched.lab", "tls://sched.lab:8786"),
        ("tcp://127.0.0.1:9000", "tcp://127.0.0.1:9000"),
        ("tcp://localhost", "tcp://localhost:8786"),
        ("tls://[::1]:8786", "tls://[::1]:8786"),
    ],
)
def test_addresses_are_normalised(given: str, expected: str) -> None:
    assert address.check(given) == expected


@pytest.mark.parametrize("bad", ["tcp://192.0.2.7:8786", "http://sched:8786", "tls://sched:port", "tls://"])
def test_plain_tcp_off_loopback_and_nonsense_are_refused_naming_the_option(bad: str) -> None:
    with pytest.raises(InputError, match="--scheduler"):
        address.check(bad)


def test_certificates_chain_to_their_ca_and_keys_are_private(tmp_path: Path) -> None:
    written = write_certs(tmp_path / "c")
    assert {p.name for p in written} >= {"ca.pem", "scheduler.pem", "agent.pem", "client.pem", "client.key"}
    assert all((p.stat().st_mode & 0o077) == 0 for p in written if p.suffix == ".key")
    ctx = ssl.create_default_context(cafile=str(tmp_path / "c" / "ca.pem"))
    ctx.load_cert_chain(tmp_path / "c" / "client.pem", tmp_path / "c" / "client.key")  # key matches its cert
    for role in ("scheduler", "agent", "client"):
        assert security(tmp_path / "c", role).require_encryption
    with pytest.raises(InputError, match="would lock out"):
        write_certs(tmp_path / "c")


def test_a_missing_certificate_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="farm cluster certs"):
        security(tmp_path / "none", "client")


def test_the_artifact_cache_refuses_a_file_that_is_not_its_digest(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    data = b"bitstream"
    digest = hashlib.sha256(data).hexdigest()
    assert cache.missing([digest]) == [digest]
    with pytest.raises(FarmError, match="refused"):
        cache.put(digest, b"other bytes")
    cache.put(digest, data)
    assert cache.missing([digest]) == [] and cache.resolve(digest).read_bytes() == data
    with pytest.raises(FarmError, match="not a sha256"):
        cache.path("../../etc/passwd")


def test_device_resources_round_trip() -> None:
    assert device_of(resource("pixel-8")) == "pixel-8" and device_of("GPU") is None
