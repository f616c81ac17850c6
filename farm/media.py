"""Host-side media: render test sequences and encode them with a bundle's encoder, cached by content digest.

Cache keys are digests of everything that determines the bytes (generator parameters and the ffmpeg build
for sources; the encoder template, its files, the source digest and the rate point for bitstreams), so a
re-run of the same suite and bundle re-encodes nothing, and any change re-encodes exactly what it affects.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import secrets
import signal
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from farm.bundle import Bundle
from farm.config.manifest import substitute
from farm.config.suite import Generate, Sequence
from farm.errors import InputError, Problem, Stopped
from farm.fileio import sha256_file, write_atomic
from farm.quality.y4m import read_y4m_info
from farm.sandbox import confine
from farm.session.cancel import Cancel

TOOL_TIMEOUT_S = 3600.0
POLL_S = 0.2

_SEEDED = {"life": "seed=1", "cellauto": "seed=1:rule=110"}
# generators that are a recipe over an ffmpeg source: (source, its fixed options, filters after it). clouds is
# fractal Perlin noise (6 octaves) that changes fast enough (tscale 20) that little of a frame predicts the next,
# coloured with the turbo palette so chroma carries texture too (a grey source codes chroma for free)
_RECIPES = {
    "clouds": (
        "perlin",
        "octaves=6:persistence=0.7:xscale=4:yscale=4:tscale=20:random_mode=seed:seed=1",
        "format=yuv420p,pseudocolor=preset=turbo",
    ),
}


@lru_cache(maxsize=1)
def host_ffmpeg() -> str:
    """The codec and metric engine on the host: the ffmpeg that imageio-ffmpeg ships."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


@lru_cache(maxsize=8)
def tool_identity(path: str) -> str:
    """Cheap identity of a tool binary for cache keys: a changed build changes its size or mtime."""
    st = os.stat(path)
    return f"{path}:{st.st_size}:{int(st.st_mtime)}"


@dataclass(frozen=True)
class Source:
    sequence_id: str
    path: Path
    sha256: str
    width: int
    height: int
    fps: float
    frames: int


@dataclass(frozen=True)
class Bitstream:
    path: Path
    sha256: str
    size: int
    rate_kbps: float
    reused: bool

    def actual_kbps(self, source: Source) -> float:
        """The rate the encoder really hit, which is what BD-rate integrates over (not the target)."""
        return self.size * 8 / 1000 / (source.frames / source.fps)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _atomic_run(argv: list[str], dest: Path, tmp: Path, what: str, cancel: Cancel | None = None) -> None:
    try:
        # a session of its own: the terminal's Ctrl-C must not reach bwrap half-way (its monitor can outlive the
        # sandbox holding our pipe); the stop kills the whole group instead
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
    except OSError as exc:
        raise InputError(f"{what}: could not run {argv[0]!r}: {exc}") from None
    returncode, stderr = _wait(proc, what, cancel)
    if returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        tail = stderr.decode("utf-8", "replace")[-800:].strip()
        raise InputError(f"{what} failed (exit {returncode}): {tail}")
    os.replace(tmp, dest)


def _wait(proc: subprocess.Popen[bytes], what: str, cancel: Cancel | None) -> tuple[int, bytes]:
    """Wait for a host tool, killing it when the run is stopped: an encode can take minutes, and a sandboxed
    one sits in a session of its own, out of reach of the terminal's Ctrl-C (bwrap --die-with-parent follows)."""
    deadline = time.monotonic() + TOOL_TIMEOUT_S
    while True:
        try:
            _, stderr = proc.communicate(timeout=POLL_S)
            return proc.returncode, stderr
        except subprocess.TimeoutExpired:
            stopped = cancel is not None and cancel.is_set()
            if not stopped and time.monotonic() < deadline:
                continue
            _kill_group(proc)
            if stopped:
                raise Stopped(f"{what}: stopped") from None
            raise InputError(f"{what}: still running after {TOOL_TIMEOUT_S:g}s, killed") from None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=5)  # bounded: nothing may keep the farm waiting on a killed tool's pipe


def render(seq: Sequence, cache: Path, cancel: Cancel | None = None) -> Source:
    """A sequence as a Y4M file on the host: a given file as is, or a generated one, rendered once."""
    if seq.path is not None:
        path = seq.path
    else:
        gen = seq.generate
        assert gen is not None
        ffmpeg = host_ffmpeg()
        params = gen.model_dump(exclude={"grain"} if gen.grain == 0 else set())  # keys of grain-free sources kept
        key = _key("source", params, tool_identity(ffmpeg))
        path = cache / "sources" / f"{key}.y4m"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part.y4m")
            _atomic_run(_render_argv(ffmpeg, gen, tmp), path, tmp, f"render sequence {seq.id!r}", cancel)
    info = read_y4m_info(path)
    if info.chroma not in {"420", "420jpeg", "420mpeg2", "420paldv"}:
        raise InputError([Problem(str(path), None, "", f"only 8-bit 4:2:0 Y4M is supported (C{info.chroma})")])
    return Source(seq.id, path, _sha_cached(path, cache), info.width, info.height, info.fps, info.frames)


def _render_argv(ffmpeg: str, gen: Generate, out: Path) -> list[str]:
    return [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", _lavfi(gen),
        "-frames:v", str(gen.frames), "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", str(out),
    ]  # fmt: skip


def _lavfi(gen: Generate) -> str:
    """The lavfi graph of a generated sequence; every random choice in it is seeded, so renders are identical."""
    source, fixed, after = _RECIPES.get(gen.source, (gen.source, _SEEDED.get(gen.source, ""), ""))
    graph = f"{source}=size={gen.width}x{gen.height}:rate={gen.fps}" + (f":{fixed}" if fixed else "")
    if after:
        graph += f",{after}"
    if gen.grain:
        graph += f",noise=c0s={gen.grain}:c0f=t:all_seed=1"
    return graph


def _sha_cached(path: Path, cache: Path) -> str:
    """sha256 of a large host file, remembered in the cache by its path and full stat identity.

    Size and mtime alone are not enough (same-size clips, archives with zeroed mtimes): the key also has the
    inode, ctime and mtime in ns, so any rewrite or replacement of the file is hashed again.
    """
    st = path.stat()
    stamp = f"{path.resolve()}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    memo = cache / "digests" / hashlib.sha256(stamp.encode()).hexdigest()
    try:
        digest = memo.read_text().strip()
        if len(digest) == 64:
            return digest
    except OSError:
        pass
    digest = sha256_file(path)
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(memo, digest)
    return digest


# An encoder may run on the farm's own python; `onnxruntime` names that python as one that imports onnxruntime
# (docs/learned-codec.md): the learned example bundles encode with it.
PYTHON_RUNTIMES = frozenset({"python", "onnxruntime"})


def host_runtime(names: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        if name == "ffmpeg":
            out[name] = host_ffmpeg()
        elif name in PYTHON_RUNTIMES:
            out[name] = sys.executable
        else:
            raise InputError(
                f"encoder requires runtime {name!r}, which the host does not provide (ffmpeg, python, onnxruntime)"
            )
    return out


def runtime_dirs(names: tuple[str, ...]) -> list[Path]:
    """What a python runtime must read inside the encoder's sandbox: its prefix and its site-packages."""
    if not PYTHON_RUNTIMES & set(names):
        return []
    dirs = {sys.prefix, sys.base_prefix, *site.getsitepackages()}
    return sorted(Path(d) for d in dirs if os.path.isdir(d))


def runtime_identity(name: str, path: str) -> str:
    """A cache key part: the binary, and for onnxruntime the package version the encode ran on."""
    if name == "onnxruntime":
        return f"{tool_identity(path)}:onnxruntime-{importlib.metadata.version('onnxruntime')}"
    return tool_identity(path)


def encode(
    bundle: Bundle,
    source: Source,
    rate_kbps: float,
    cache: Path,
    cancel: Cancel | None = None,
    *,
    scope: str | None = None,
) -> Bitstream:
    """Encode one rate point, or reuse the cached bitstream of the same inputs.

    ``scope`` names the run being prepared: the bitstreams of an encoder that declares itself non-deterministic
    are keyed by it, so a run never takes its BD-rate from encodes another run happened to make (without a
    scope, such an encoder is never served from the cache).
    """
    enc = bundle.manifest.encoder
    runtime = host_runtime(enc.requires)
    key = _key(
        "encode",
        enc.model_dump(mode="json"),
        {f: bundle.files.get(f) for f in enc.files},
        {k: runtime_identity(k, v) for k, v in runtime.items()},
        source.sha256,
        rate_kbps,
        *(() if enc.deterministic else (scope or secrets.token_hex(8),)),
    )
    out = cache / "bitstreams" / f"{key}.{enc.output_ext}"
    reused = out.is_file()
    if not reused:
        out.parent.mkdir(parents=True, exist_ok=True)
        # absolute paths: the sandbox binds each one where it is, and has no working directory of ours
        with tempfile.TemporaryDirectory(dir=out.parent.resolve()) as tmpdir:
            tmp = Path(tmpdir) / f"out.{enc.output_ext}"
            src, root = source.path.resolve(), bundle.root.resolve()
            values = {
                **runtime,
                "input": str(src),
                "output": str(tmp),
                "rate": f"{rate_kbps:g}",
                "width": str(source.width),
                "height": str(source.height),
                "fps": f"{source.fps:g}",
                "bundle": str(root),
            }
            # a bundle is code: its encoder sees its input, its bundle and runtimes, and writes only tmpdir
            readable = [src, root, *runtime_dirs(enc.requires)]
            argv = confine(substitute(enc.argv, values), readable, Path(tmpdir), [*runtime.values()])
            _atomic_run(argv, out, tmp, f"{bundle.label} encode of {source.sequence_id} at {rate_kbps:g} kbps", cancel)
    return Bitstream(out, _sha_cached(out, cache), out.stat().st_size, rate_kbps, reused)
