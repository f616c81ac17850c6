"""An emulated Android device: a TCP server that speaks the ADB wire protocol the way a phone's ``adbd`` does.

Why: the farm's Android path (adb-shell transport, Android device layer, power sampling) must run here without a
phone, and the DESIGN asks for real peers: the real Debian ``adb`` client must accept this emulator as a device
(``adb connect``, ``adb shell`` with exit codes, ``adb push``/``pull``). So this is a faithful adbd, not a mock of
the farm's transport: it is written from AOSP's ``protocol.txt``, ``SYNC.TXT``, ``file_sync_protocol.h`` and
``shell_protocol.h`` and proven against two independent clients (adb-shell and the official ``adb``).

What it implements (and advertises in its CNXN banner, ``FEATURES``: ``shell_v2,stat_v2,ls_v2,fixed_push_mkdir,
fixed_push_symlink_timestamp,push_sync``; docs/adb-emulator.md says which features of a current adbd it lacks):

- transport: 24-byte headers, CNXN version/max-payload negotiation (1 MiB), AUTH (TOKEN, SIGNATURE checked with
  the trusted keys, RSAPUBLICKEY accepted only for a trusted key: the user "taps allow" for known keys only),
  OPEN/OKAY/WRTE/CLSE with per-stream ids and flow control (one WRTE in flight per stream until its OKAY; host
  data is OKAYed once the service has consumed it), a host CLSE answered with our own CLSE.
- services: ``shell:CMD`` (v1: stdout and stderr merged, no exit status), ``shell,v2[,raw|pty][,TERM=..]:CMD``
  (shell protocol: stdout/stderr/exit packets, stdin and close-stdin from the host), ``exec:CMD`` (raw; as in
  AOSP adbd, whose kNone protocol dup2s stderr onto stdout, stderr is merged), ``sync:`` (STAT, STA2, LST2, LIST,
  SEND, RECV, DATA, DONE, QUIT, and LIS2 for ls_v2).

Honesty about the sandbox: commands are real processes on THIS machine (``sh -c CMD``, cwd = the device root,
HOME = the device root, each in its own session so :meth:`AdbDevice.stop` can kill the whole group), and sync
paths are used as given. The root is a sandbox by convention, not a chroot; tests and ``farm sim`` point the
farm's Android workdir inside it. A pty is never allocated (``pty`` requests run like ``raw``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
from cryptography.hazmat.primitives.asymmetric import rsa

from farm.sim.adbkeys import load_public_key, parse_adb_public_key, same_key, verify_token_signature

log = logging.getLogger(__name__)


def _id(name: bytes) -> int:
    value: int = struct.unpack("<I", name)[0]
    return value


A_SYNC, A_CNXN, A_OPEN, A_OKAY = _id(b"SYNC"), _id(b"CNXN"), _id(b"OPEN"), _id(b"OKAY")
A_CLSE, A_WRTE, A_AUTH = _id(b"CLSE"), _id(b"WRTE"), _id(b"AUTH")
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = 0x01000001
MAX_PAYLOAD = 1024 * 1024
HEADER = struct.Struct("<6I")
RESERVED_PORTS = range(5555, 5586)  # the adb server probes these for emulators
# Only what this emulator implements (docs/adb-emulator.md lists what a current adbd offers beyond these):
# push_sync needs nothing beyond STAT/STA2 (the client compares and skips), ls_v2 is LIS2, and
# fixed_push_symlink_timestamp sets a pushed symlink's own mtime.
FEATURES = ("shell_v2", "stat_v2", "ls_v2", "fixed_push_mkdir", "fixed_push_symlink_timestamp", "push_sync")
BANNER_PROPERTIES = ("ro.product.name", "ro.product.model", "ro.product.device")  # what adbd puts in CNXN
# Honest defaults: the commands run on this machine, so the "phone" reports this machine's ABI (an x86_64 Android
# emulator looks the same); callers override whatever a test or `farm sim up` needs.
DEFAULT_PROPERTIES = {
    "ro.product.name": "farm_emu",
    "ro.product.model": "Farm Emulator",
    "ro.product.device": "farmemu",
    "ro.product.manufacturer": "codec-farm",
    "ro.product.cpu.abi": {"aarch64": "arm64-v8a", "x86_64": "x86_64"}.get(os.uname().machine, os.uname().machine),
    "ro.build.version.sdk": "34",
    "ro.build.version.release": "14",
    "ro.build.fingerprint": "codec-farm/farm_emu/farmemu:14/FARM.SIM/1:userdebug/test-keys",
}
_PROP_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,96}")
# `getprop` as Android's toolbox prints it: all as "[key]: [value]", one value, or a default for a missing key.
_GETPROP = """#!/bin/sh
# getprop for the farm's ADB emulator (farm.sim.adbd): reads the device's property file.
f="${FARM_ADBD_PROPS:?}"
if [ $# -eq 0 ]; then
    while IFS= read -r line; do printf '[%s]: [%s]\\n' "${line%%=*}" "${line#*=}"; done < "$f"
    exit 0
fi
while IFS= read -r line; do
    if [ "${line%%=*}" = "$1" ]; then printf '%s\\n' "${line#*=}"; exit 0; fi
done < "$f"
printf '%s\\n' "${2-}"
"""

# sync protocol ids (file_sync_protocol.h)
ID_STAT, ID_STA2, ID_LST2, ID_LIST = _id(b"STAT"), _id(b"STA2"), _id(b"LST2"), _id(b"LIST")
ID_LIS2, ID_DNT2 = _id(b"LIS2"), _id(b"DNT2")
ID_SEND, ID_RECV, ID_DENT, ID_DONE = _id(b"SEND"), _id(b"RECV"), _id(b"DENT"), _id(b"DONE")
ID_DATA, ID_OKAY, ID_FAIL, ID_QUIT = _id(b"DATA"), _id(b"OKAY"), _id(b"FAIL"), _id(b"QUIT")
SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
STAT_V2 = struct.Struct("<IIQQIIIIQqqq")

# shell protocol ids (shell_protocol.h): 1-byte id + u32 LE length
SHELL_STDIN, SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT, SHELL_CLOSE_STDIN, SHELL_WINSIZE = 0, 1, 2, 3, 4, 5
SHELL_HEADER = struct.Struct("<BI")

_POLL_S = 0.25  # how often blocked loops look at their stop flags
_SEND_TIMEOUT_S = 30.0  # a host that does not read for this long is dropped


def _checksum(data: bytes) -> int:
    """The header's byte sum. numpy, because a real adbd sums in C: a Python ``sum`` over 1 MiB (7 ms) would make
    the emulator, not the host, the cost of every packet from a host that still sends checksums (adb-shell)."""
    return int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFFFFFF if data else 0


class AdbDevice:
    """One emulated phone: a threaded TCP adbd serving ``root`` as its file system and shell working directory."""

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        trusted_keys: list[Path] | None = None,
        serial: str = "farm-emulator",
        properties: dict[str, str] | None = None,
    ) -> None:
        if port in RESERVED_PORTS:
            raise ValueError(f"port {port} is in 5555-5585, which the adb server probes; choose another")
        self.root = Path(root)
        self.host = host
        self.port = port
        self.serial = serial
        self.properties = {**DEFAULT_PROPERTIES, "ro.serialno": serial, **(properties or {})}
        for key, value in self.properties.items():
            if not _PROP_KEY.fullmatch(key) or "\n" in value or "\0" in value:
                raise ValueError(f"bad device property {key!r}={value!r}")
        self._tools: Path | None = None  # getprop and its property file, outside the device root
        self.trusted: list[rsa.RSAPublicKey] | None = (
            None if trusted_keys is None else [load_public_key(Path(p)) for p in trusted_keys]
        )
        self.refused_keys: list[str] = []  # RSAPUBLICKEY payloads the "user" did not allow
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> int:
        """Listen and serve in background threads; return the bound port (never one of 5555-5585)."""
        if self._listener is not None:
            raise RuntimeError("AdbDevice already started")
        self.root.mkdir(parents=True, exist_ok=True)
        self._tools = Path(tempfile.mkdtemp(prefix="farm-adbd-"))
        (self._tools / "bin").mkdir()
        getprop = self._tools / "bin" / "getprop"
        getprop.write_text(_GETPROP)
        getprop.chmod(0o755)
        (self._tools / "props").write_text("".join(f"{k}={v}\n" for k, v in sorted(self.properties.items())))
        held: list[socket.socket] = []
        try:
            for _ in range(32):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.host, self.port))
                if sock.getsockname()[1] not in RESERVED_PORTS:
                    break
                held.append(sock)  # keep it bound so the next ephemeral pick differs
            else:
                raise OSError("could not find a free port outside 5555-5585")
        finally:
            for s in held:
                s.close()
        sock.listen(16)
        sock.settimeout(_POLL_S)
        self._listener = sock
        self.port = sock.getsockname()[1]
        self._stop.clear()
        t = threading.Thread(target=self._accept_loop, name=f"adbd-{self.port}", daemon=True)
        t.start()
        self._threads.append(t)
        log.info("adbd %s listening on %s:%d", self.serial, self.host, self.port)
        return self.port

    def stop(self) -> None:
        """Stop listening, drop every connection and kill every process group this device started."""
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        self.kill_connections()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        self._listener = None
        if self._tools is not None:
            shutil.rmtree(self._tools, ignore_errors=True)
            self._tools = None

    def kill_connections(self) -> None:
        """Drop every host connection abruptly (as a USB unplug or adbd crash would) and kill their processes."""
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            conn.shutdown()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _kill_group(proc)

    def __enter__(self) -> AdbDevice:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def banner(self) -> bytes:
        """The CNXN banner: ``device::`` + selected properties + the features this emulator implements."""
        props = "".join(f"{k}={self.properties[k]};" for k in BANNER_PROPERTIES if k in self.properties)
        return f"device::{props}features={','.join(FEATURES)}".encode()

    # ------------------------------------------------------------------ internals

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                sock, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            conn = _Connection(self, sock)
            with self._lock:
                self._connections.add(conn)
            t = threading.Thread(target=conn.run, name=f"adbd-{self.port}-conn", daemon=True)
            t.start()
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _spawn(self, argv: list[str], env_extra: dict[str, str], stderr: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(env_extra)
        env["HOME"] = str(self.root)
        env["ANDROID_SERIAL"] = self.serial
        if self._tools is not None:
            env["PATH"] = f"{self._tools / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
            env["FARM_ADBD_PROPS"] = str(self._tools / "props")
        # started under the lock, so reap_orphans never sees one of our own commands before it is registered
        with self._lock:
            proc = subprocess.Popen(
                argv,
                cwd=self.root,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
            self._procs.add(proc)
        return proc

    def reap_orphans(self, zombies: list[int]) -> None:
        """Collect exited children that are not this device's own commands (the phone daemon is a subreaper).

        ``zombies`` are exited children of this process. Commands the device started are skipped: their
        ``Popen.wait`` must get their exit status (a stolen one would turn into exit 0 for the host).
        """
        with self._lock:
            own = {proc.pid for proc in self._procs}
            for pid in zombies:
                if pid not in own:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group the command leads (even if the leader has exited, its children may linger)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class _Closed(Exception):
    """The connection or stream is gone."""


class _Connection:
    """One host connection: the transport state machine, and the streams opened on it."""

    def __init__(self, device: AdbDevice, sock: socket.socket) -> None:
        self.device = device
        self.sock = sock
        sock.settimeout(_SEND_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send_lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.online = False
        self.version = A_VERSION
        self.maxdata = MAX_PAYLOAD
        self.token = b""
        self.dead = threading.Event()

    # -- socket I/O

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if self.dead.is_set() or self.device._stop.is_set():
                raise _Closed
            ready, _, _ = select.select([self.sock], [], [], _POLL_S)
            if not ready:
                continue
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except OSError:
                raise _Closed from None
            if not chunk:
                raise _Closed
            buf += chunk
        return bytes(buf)

    def send(self, cmd: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        header = HEADER.pack(cmd, arg0, arg1, len(data), _checksum(data), cmd ^ 0xFFFFFFFF)
        with self.send_lock:
            if self.dead.is_set():
                raise _Closed
            try:
                self.sock.sendall(header + data)
            except OSError:
                self.shutdown()
                raise _Closed from None

    def shutdown(self) -> None:
        if self.dead.is_set():
            return
        self.dead.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        for s in list(self.streams.values()):
            s.host_closed()
        self.device._forget(self)

    # -- transport

    def run(self) -> None:
        try:
            while True:
                cmd, arg0, arg1, length, crc, magic = HEADER.unpack(self._recv_exact(HEADER.size))
                if magic != cmd ^ 0xFFFFFFFF:
                    log.warning("adbd %s: bad magic, dropping the connection", self.device.serial)
                    break
                if length > MAX_PAYLOAD:
                    log.warning("adbd %s: payload of %d bytes exceeds 1 MiB", self.device.serial, length)
                    break
                data = self._recv_exact(length) if length else b""
                if self.version < A_VERSION_SKIP_CHECKSUM and crc != _checksum(data):
                    log.warning("adbd %s: bad checksum, dropping the connection", self.device.serial)
                    break
                self._dispatch(cmd, arg0, arg1, data)
        except _Closed:
            pass
        except Exception:
            log.exception("adbd %s: connection failed", self.device.serial)
        finally:
            self.shutdown()

    def _dispatch(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        if cmd == A_CNXN:
            self._on_cnxn(arg0, arg1)
        elif cmd == A_AUTH:
            self._on_auth(arg0, data)
        elif not self.online:
            log.info("adbd %s: ignoring %08x before the connection is authorised", self.device.serial, cmd)
        elif cmd == A_OPEN:
            self._on_open(arg0, data)
        elif cmd == A_OKAY:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.remote_id = stream.remote_id or arg0
                stream.can_send.set()
        elif cmd == A_WRTE:
            stream = self.streams.get(arg1)
            if stream is None:
                self.send(A_CLSE, 0, arg0)
            else:
                stream.deliver(data)
        elif cmd == A_CLSE:
            stream = self.streams.pop(arg1, None)
            if stream is not None:
                if not stream.we_closed:
                    stream.we_closed = True
                    self.send(A_CLSE, stream.local_id, stream.remote_id)
                stream.host_closed()
        # SYNC and unknown commands are ignored, as adbd does

    def _on_cnxn(self, version: int, maxdata: int) -> None:
        self.version = max(A_VERSION_MIN, min(version, A_VERSION))
        self.maxdata = max(256, min(maxdata, MAX_PAYLOAD))
        if self.online:  # a reconnect on the same socket resets the streams
            for s in list(self.streams.values()):
                s.host_closed()
            self.streams.clear()
            self.online = False
        if self.device.trusted is None:
            self._go_online()
        else:
            self._send_token()

    def _send_token(self) -> None:
        self.token = secrets.token_bytes(20)
        self.send(A_AUTH, AUTH_TOKEN, 0, self.token)

    def _go_online(self) -> None:
        self.online = True
        self.send(A_CNXN, self.version, self.maxdata, self.device.banner)

    def _on_auth(self, kind: int, data: bytes) -> None:
        trusted = self.device.trusted
        if self.online or trusted is None or not self.token:
            return
        if kind == AUTH_SIGNATURE:
            if any(verify_token_signature(k, self.token, data) for k in trusted):
                self._go_online()
            else:
                self._send_token()  # adbd asks again; the host tries its next key
        elif kind == AUTH_RSAPUBLICKEY:
            text = data.rstrip(b"\0").decode("ascii", "replace")
            try:
                offered = parse_adb_public_key(text)
            except ValueError as exc:
                log.warning("adbd %s: unparsable RSAPUBLICKEY: %s", self.device.serial, exc)
                self.device.refused_keys.append(text)
                return
            if any(same_key(offered, k) for k in trusted):
                self._go_online()
            else:
                # A phone shows the "Allow USB debugging?" dialog and waits; our user never taps allow.
                log.warning("adbd %s: refused untrusted key %s", self.device.serial, text[-60:])
                self.device.refused_keys.append(text)

    def _on_open(self, remote_id: int, data: bytes) -> None:
        service = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        handler = _service_handler(service)
        if handler is None or remote_id == 0:
            log.info("adbd %s: refusing service %r", self.device.serial, service)
            self.send(A_CLSE, 0, remote_id)
            return
        local_id = self.next_id
        self.next_id += 1
        stream = _Stream(self, local_id, remote_id)
        self.streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id)
        t = threading.Thread(target=stream.serve, args=(handler,), name=f"adbd-{service[:20]}", daemon=True)
        t.start()


class _Stream:
    """One ADB stream: an inbox of host WRTE payloads (OKAYed when consumed) and a flow-controlled writer."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.inbox: deque[bytes] = deque()
        self.cond = threading.Condition()
        self.eof = False  # the host closed the stream, or the connection died
        self.we_closed = False
        self.can_send = threading.Event()
        self.can_send.set()
        self.write_lock = threading.Lock()
        self.procs: list[subprocess.Popen[bytes]] = []
        self._pending = memoryview(b"")  # unconsumed rest of the packet at the head of the inbox

    # -- host -> device

    def deliver(self, data: bytes) -> None:
        with self.cond:
            self.inbox.append(data)
            self.cond.notify_all()

    def host_closed(self) -> None:
        with self.cond:
            self.eof = True
            self.cond.notify_all()
        self.can_send.set()
        for proc in self.procs:
            _kill_group(proc)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes from the host; b"" once the stream is closed and drained."""
        if not self._pending:
            with self.cond:
                while not self.inbox and not self.eof and not self.we_closed:
                    self.cond.wait(_POLL_S)
                if not self.inbox:
                    return b""
                self._pending = memoryview(self.inbox.popleft())  # consumed by offset, never re-copied
        out, self._pending = bytes(self._pending[:n]), self._pending[n:]
        if not self._pending and not self.eof:
            with contextlib.suppress(_Closed):
                self.conn.send(A_OKAY, self.local_id, self.remote_id)  # ready for the next WRTE
        return out

    def read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.read(n - len(buf))
            if not chunk:
                raise _Closed
            buf += chunk
        return bytes(buf)

    # -- device -> host

    def write(self, data: bytes) -> None:
        with self.write_lock:
            view = memoryview(data)
            for i in range(0, len(data), self.conn.maxdata):
                while not self.can_send.wait(_POLL_S):
                    if self.eof or self.conn.dead.is_set():
                        raise _Closed
                if self.eof or self.we_closed:
                    raise _Closed
                self.can_send.clear()
                self.conn.send(A_WRTE, self.local_id, self.remote_id, bytes(view[i : i + self.conn.maxdata]))

    def close(self) -> None:
        """Close from the device side (the host answers with its CLSE, which retires the stream)."""
        if self.we_closed or self.eof:
            return
        self.we_closed = True
        with contextlib.suppress(_Closed):
            self.conn.send(A_CLSE, self.local_id, self.remote_id)

    def serve(self, handler: Callable[[_Stream], None]) -> None:
        try:
            handler(self)
        except _Closed:
            pass
        except Exception:
            log.exception("adbd %s: service failed", self.conn.device.serial)
        finally:
            self.close()
            for proc in self.procs:
                _kill_group(proc)


# ---------------------------------------------------------------------- services


def _service_handler(service: str) -> Callable[[_Stream], None] | None:
    if service.startswith("shell:"):
        cmd = service[len("shell:") :]
        return lambda s: _run_shell(s, cmd, v2=False, env={})
    if service.startswith("shell,"):
        head, sep, cmd = service.partition(":")
        if not sep:
            return None
        args = head.split(",")[1:]
        env = dict(a.split("=", 1) for a in args if "=" in a)
        v2 = "v2" in args
        return lambda s: _run_shell(s, cmd, v2=v2, env=env)
    if service.startswith("exec:"):
        cmd = service[len("exec:") :]
        return lambda s: _run_shell(s, cmd, v2=False, env={})
    if service == "sync:":
        return _run_sync
    return None


def _argv(cmd: str) -> list[str]:
    return ["sh", "-c", cmd] if cmd else ["sh"]


def _pump(src: IO[bytes], emit: Callable[[bytes], None]) -> None:
    fd = src.fileno()
    try:
        while True:
            chunk = os.read(fd, 64 * 1024)
            if not chunk:
                break
            emit(chunk)
    except (_Closed, OSError):
        pass


def _exit_status(code: int) -> int:
    return (128 - code) & 0xFF if code < 0 else code & 0xFF


def _run_shell(stream: _Stream, cmd: str, *, v2: bool, env: dict[str, str]) -> None:
    device = stream.conn.device
    proc = device._spawn(_argv(cmd), env, subprocess.PIPE if v2 else subprocess.STDOUT)
    stream.procs.append(proc)
    assert proc.stdin is not None and proc.stdout is not None

    def packet(kind: int) -> Callable[[bytes], None]:
        return lambda data: stream.write(SHELL_HEADER.pack(kind, len(data)) + data)

    pumps = [threading.Thread(target=_pump, args=(proc.stdout, packet(SHELL_STDOUT) if v2 else stream.write))]
    if v2:
        assert proc.stderr is not None
        pumps.append(threading.Thread(target=_pump, args=(proc.stderr, packet(SHELL_STDERR))))
    feeder = threading.Thread(target=_feed_stdin, args=(stream, proc.stdin, v2), daemon=True)
    for t in pumps:
        t.daemon = True
        t.start()
    feeder.start()
    try:
        for t in pumps:
            t.join()
        code = proc.wait()
    finally:
        if proc.poll() is None:  # the host went away under us: no process is left behind, and none as a zombie
            _kill_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        device._reap(proc)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
    if v2 and not stream.eof:
        stream.write(SHELL_HEADER.pack(SHELL_EXIT, 1) + bytes([_exit_status(code)]))


def _feed_stdin(stream: _Stream, stdin: IO[bytes], v2: bool) -> None:
    try:
        if not v2:
            while chunk := stream.read(1 << 20):
                stdin.write(chunk)
                stdin.flush()
            return
        while True:
            kind, length = SHELL_HEADER.unpack(stream.read_exact(SHELL_HEADER.size))
            data = stream.read_exact(length) if length else b""
            if kind == SHELL_STDIN:
                stdin.write(data)
                stdin.flush()
            elif kind == SHELL_CLOSE_STDIN:
                break
            # window size changes and unknown packets are ignored (no pty here)
    except (_Closed, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


def _run_sync(stream: _Stream) -> None:
    out = _SyncWriter(stream)
    while True:
        try:
            header = stream.read_exact(8)
        except _Closed:
            return
        ident, length = struct.unpack("<II", header)
        if ident == ID_QUIT:
            return
        if ident not in (ID_STAT, ID_STA2, ID_LST2, ID_LIST, ID_LIS2, ID_SEND, ID_RECV):
            out.fail(f"unknown sync request {header[:4]!r}")
            out.flush()
            return
        if length > SYNC_PATH_MAX:
            out.fail(f"path too long: {length} bytes")
            out.flush()
            return
        path = stream.read_exact(length).decode("utf-8", "surrogateescape")
        if ident == ID_STAT:
            _sync_stat_v1(out, path)
        elif ident in (ID_STA2, ID_LST2):
            _sync_stat_v2(out, path, ident)
        elif ident == ID_LIST:
            _sync_list(out, path)
        elif ident == ID_LIS2:
            _sync_list_v2(out, path)
        elif ident == ID_SEND:
            _sync_send(stream, out, path)
        else:
            _sync_recv(out, path)
        out.flush()


class _SyncWriter:
    """Batches sync replies into WRTEs of up to the connection's max payload."""

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    def put(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= self.stream.conn.maxdata:
            self.flush()

    def fail(self, message: str) -> None:
        msg = message.encode("utf-8", "replace")
        self.put(struct.pack("<II", ID_FAIL, len(msg)) + msg)

    def flush(self) -> None:
        if self.buf:
            data, self.buf = bytes(self.buf), bytearray()
            self.stream.write(data)


def _sync_stat_v1(out: _SyncWriter, path: str) -> None:
    try:
        st = os.lstat(path)
        out.put(struct.pack("<4I", ID_STAT, st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))
    except OSError:
        out.put(struct.pack("<4I", ID_STAT, 0, 0, 0))


def _sync_stat_v2(out: _SyncWriter, path: str, ident: int) -> None:
    try:
        st = os.stat(path) if ident == ID_STA2 else os.lstat(path)
    except OSError as exc:
        out.put(STAT_V2.pack(ident, exc.errno or errno.EIO, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        return
    out.put(
        STAT_V2.pack(
            ident,
            0,
            st.st_dev,
            st.st_ino,
            st.st_mode,
            st.st_nlink,
            st.st_uid,
            st.st_gid,
            st.st_size,
            int(st.st_atime),
            int(st.st_mtime),
            int(st.st_ctime),
        )
    )


def _sync_list(out: _SyncWriter, path: str) -> None:
    with contextlib.suppress(OSError):
        for name in [".", "..", *sorted(os.listdir(path))]:
            try:
                st = os.lstat(os.path.join(path, name))
            except OSError:
                continue
            raw = name.encode("utf-8", "surrogateescape")
            out.put(struct.pack("<5I", ID_DENT, st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(raw)) + raw)
    out.put(struct.pack("<5I", ID_DONE, 0, 0, 0, 0))


DENT_V2 = struct.Struct("<IIQQIIIIQqqqI")  # file_sync_protocol.h sync_dent_v2, then namelen bytes of name


def _sync_list_v2(out: _SyncWriter, path: str) -> None:
    """LIS2 (feature ls_v2): 64-bit sizes and times, and an errno per entry; ends with an all-zero DONE."""
    with contextlib.suppress(OSError):
        for name in [".", "..", *sorted(os.listdir(path))]:
            try:
                st = os.lstat(os.path.join(path, name))
            except OSError:
                continue
            raw = name.encode("utf-8", "surrogateescape")
            fields = (st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_size)
            times = (int(st.st_atime), int(st.st_mtime), int(st.st_ctime))
            out.put(DENT_V2.pack(ID_DNT2, 0, *fields, *times, len(raw)) + raw)
    out.put(DENT_V2.pack(ID_DONE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))


def _send_spec(spec: str) -> tuple[str, int, str | None]:
    """SEND's "path,mode" argument: the path, the mode, and what is wrong with it (reported after DONE)."""
    path, sep, mode_text = spec.rpartition(",")
    if not sep:
        return spec, 0o644, "missing mode in SEND"
    try:
        return path, int(mode_text), None
    except ValueError:
        return path, 0o644, f"bad mode {mode_text!r} in SEND"


def _finish_send(path: str, mode: int, mtime: int, link_target: bytes | None) -> str | None:
    """Make the received file what SEND asked for (a symlink, or its mode and mtime); the error, if any."""
    try:
        if link_target is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            # the official client sends the target with its C string's NUL (file_sync_client.cpp): cut there
            target = link_target.split(b"\0", 1)[0]
            Path(path).parent.mkdir(parents=True, exist_ok=True)  # fixed_push_mkdir: for links too
            os.symlink(target.decode("utf-8", "surrogateescape"), path)
            # fixed_push_symlink_timestamp: the link's own mtime, as the host's lstat had it
            os.utime(path, (mtime, mtime), follow_symlinks=False)
        else:
            os.chmod(path, stat.S_IMODE(mode))
            os.utime(path, (mtime, mtime))
    except OSError as exc:
        return f"couldn't finish {path}: {exc.strerror}"
    return None


def _sync_send(stream: _Stream, out: _SyncWriter, spec: str) -> None:
    path, mode, error = _send_spec(spec)
    fh: IO[bytes] | None = None
    link_target = bytearray()
    is_link = stat.S_ISLNK(mode)
    if error is None and not is_link:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fh = open(path, "wb")  # noqa: SIM115 - closed below after DONE
        except OSError as exc:
            error = f"couldn't create file: {exc.strerror}"
    try:
        while True:
            ident, size = struct.unpack("<II", stream.read_exact(8))
            if ident == ID_DATA:
                if size > SYNC_DATA_MAX:
                    out.fail(f"DATA chunk of {size} bytes exceeds {SYNC_DATA_MAX}")
                    return
                data = stream.read_exact(size)
                if error is not None:
                    continue  # drain to DONE, then report
                if is_link:
                    link_target += data
                    continue
                assert fh is not None
                try:
                    fh.write(data)
                except OSError as exc:
                    error = f"write failed: {exc.strerror}"
            elif ident == ID_DONE:
                mtime = size
                break
            else:
                out.fail(f"unexpected {struct.pack('<I', ident)!r} during SEND")
                return
        if fh is not None:
            fh.close()
            fh = None
        if error is None:
            error = _finish_send(path, mode, mtime, bytes(link_target) if is_link else None)
        if error is None:
            out.put(struct.pack("<II", ID_OKAY, 0))
        else:
            out.fail(error)
    finally:
        if fh is not None:
            fh.close()


def _sync_recv(out: _SyncWriter, path: str) -> None:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        out.fail(f"open failed: {exc.strerror}")
        return
    try:
        while chunk := fh.read(SYNC_DATA_MAX):
            out.put(struct.pack("<II", ID_DATA, len(chunk)) + chunk)
    except OSError as exc:
        out.fail(f"read failed: {exc.strerror}")
        return
    finally:
        fh.close()
    out.put(struct.pack("<II", ID_DONE, 0))
