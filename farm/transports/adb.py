"""Android phones over ADB, through adb-shell (talks to adbd directly: no shared adb server to take every phone down).

adb-shell 0.4.4 has four traps that this module works around (docs/adb-transport.md has the details and the tests):

1. A transport timeout given at connect puts the socket in non-blocking mode, and its ``bulk_write`` then uses a
   bare ``send`` whose short count is ignored: a push silently loses bytes. We never give one at connect; our own
   TCP transport keeps the socket blocking with a deadline and writes with ``sendall`` (all or an error).
2. ``shell:`` (v1, the only shell adb-shell speaks) has no exit status and merges stderr into stdout. Every command
   runs inside a fixed wrapper that sends stderr to a file on the device, then prints a per-call random marker with
   the exit status, the stderr file and the marker again. The marker travels as two halves (never whole in any
   argv that ``ps`` could echo back), so no output can forge it.
3. When the device closes the connection, ``recv`` returns ``b""`` forever, adb-shell spins on it until its read
   timeout and ``available`` still says True. Our transport raises on end-of-stream and reset, the link forgets the
   connection, the failed call raises TransportError, and the next call reconnects (counted in ``reconnects``).
4. A silent decode (no output for minutes) trips a fixed read timeout. Each command's read limits are sized from
   its own timeout, and a watchdog wakes the socket if the whole call overruns; transfers use ``io_timeout_s``.

The device enforces each command's deadline itself with ``timeout -k`` (toybox has it), as on the SSH boards, so a
hung decoder dies on the phone even when the link is gone.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import select
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from adb_shell import exceptions as adb_exc
from adb_shell.adb_device import AdbDevice, AdbDeviceUsb
from adb_shell.auth.keygen import keygen as adb_keygen
from adb_shell.auth.keygen import write_public_keyfile
from adb_shell.auth.sign_cryptography import CryptographySigner
from adb_shell.transport.tcp_transport import TcpTransport

from farm.config.inventory import AdbTransport as AdbSettings
from farm.config.inventory import adb_key_problem
from farm.errors import CommandFailed, InputError
from farm.transports import adb_checksum
from farm.transports.base import KILL_SCRIPT, SPAWN_SCRIPT, Background, Completed, TransportError, Unreachable, logged

T = TypeVar("T")

DEFAULT_PORT = 5555
KILL_GRACE_S = 2  # ``timeout -k 2``: TERM at the deadline, KILL two seconds later
DEADLINE_MARGIN_S = 10.0  # host-side slack on top of the device's own deadline (startup, output transfer)

# Errors adb-shell raises when the link (not the command) is broken or out of step.
_LINK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError, socket timeouts
    adb_exc.AdbConnectionError,
    adb_exc.InvalidChecksumError,
    adb_exc.InvalidCommandError,
    adb_exc.InvalidResponseError,
    adb_exc.AdbCommandFailureException,
    adb_exc.PushFailedError,
)
_TIMEOUTS: tuple[type[BaseException], ...] = (adb_exc.TcpTimeoutException, adb_exc.AdbTimeoutError)

# The wrapper around every command. $1 stderr file, $2 stdin file or "", $3 $4 the two marker halves, rest: argv.
# stdout stays on the stream; the exit line and the stderr file follow it, then the marker alone ends the output.
_RUN_SCRIPT = r"""
e=$1 i=$2 m=$3$4; shift 4
mkdir -p "${e%/*}" 2>/dev/null
if [ -n "$i" ]; then "$@" <"$i" 2>"$e"; else "$@" </dev/null 2>"$e"; fi
rc=$?
if [ -n "$i" ]; then rm -f "$i"; fi
printf '\n%s %d\n' "$m" "$rc"
cat "$e" 2>/dev/null; rm -f "$e"
printf '\n%s\n' "$m"
"""


CHECKSUM_PATCHED = adb_checksum.install()
"""Whether adb-shell uses the numpy checksum (bench/bench_adb_push.py, docs/adb-transport.md)."""


def keygen(path: Path | str) -> bool:
    """Create an ADB key pair at ``path`` (+ ``.pub``) unless the private key exists; True if it was created.

    The private key file is created empty with mode 0600 first, so the key is never readable by others, not even
    for the moment between adb-shell writing it and a chmod.
    """
    private = Path(os.path.expanduser(str(path)))
    if private.exists():
        return False
    private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        adb_keygen(str(private))  # reopens with 'wb': truncates, keeps our mode
    except BaseException:
        private.unlink(missing_ok=True)
        raise
    os.chmod(private, 0o600)
    return True


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``, or a bare host for adbd's default 5555)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address.strip("[]"), DEFAULT_PORT
    return host.strip("[]"), int(port)


class _Tcp(TcpTransport):  # type: ignore[misc]
    """adb-shell's TCP transport without traps 1 and 3.

    The socket stays blocking with a deadline (``io_timeout_s``): ``sendall`` either delivers every byte or raises.
    Reads wait with ``select`` for the per-call limit adb-shell passes down, and end-of-stream or a reset raises
    ConnectionError instead of returning ``b""`` for adb-shell to spin on.
    """

    def __init__(self, host: str, port: int, connect_timeout_s: float, io_timeout_s: float) -> None:
        super().__init__(host, port)
        self.connect_timeout_s = connect_timeout_s
        self.io_timeout_s = io_timeout_s

    def connect(self, transport_timeout_s: float | None) -> None:  # the argument is ignored: trap 1
        sock = socket.create_connection((self._host, self._port), timeout=self.connect_timeout_s)
        sock.settimeout(self.io_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, opt):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
        self._connection = sock

    def _sock(self) -> socket.socket:
        sock: socket.socket | None = self._connection
        if sock is None:
            raise ConnectionError("not connected")
        return sock

    def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
        sock = self._sock()
        readable, _, _ = select.select([sock], [], [], transport_timeout_s)
        if not readable:
            raise adb_exc.TcpTimeoutException(f"no data from {self._host}:{self._port} for {transport_timeout_s}s")
        data = sock.recv(numbytes)
        if not data:
            raise ConnectionError("the device closed the connection")
        return data

    def bulk_write(self, data: bytes, transport_timeout_s: float | None) -> int:  # sendall: never a short write
        self._sock().sendall(data)
        return len(data)

    def wake(self) -> None:
        """Make a blocked ``select``/``recv`` in another thread return (used by the watchdog); never closes the fd."""
        sock = self._connection
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def looks_closed(self) -> bool:
        """True if the device has closed (or reset) the idle connection since the last call."""
        sock = self._connection
        if sock is None:
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""  # unsolicited data on an idle link: still alive
        except (OSError, ValueError):
            return True


class _Deadline(Exception):
    """A command overran its host-side deadline (the connection has been dropped)."""


class AdbHeld:
    """A held command on a connection of its own (adb-shell runs one stream at a time on a connection).

    adbd (and the farm's emulator) kill a shell stream's process group when the stream or its connection closes:
    by ``close``, or when the controller dies and its kernel closes the socket.
    """

    def __init__(self, link: AdbLink, stream: Iterator[bytes], first_line: str) -> None:
        self.link = link
        self._stream = stream  # kept referenced: a collected generator would close the stream on its own
        self.first_line = first_line

    def alive(self) -> bool:
        tcp = self.link._tcp
        return tcp is not None and not tcp.looks_closed()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.link.close()


class AdbLink:
    """One phone's ADB connection; calls are serialised (one device session owns it)."""

    def __init__(self, device_id: str, settings: AdbSettings) -> None:
        self.device_id = device_id
        self.settings = settings
        where = settings.address if settings.address else f"usb:{settings.serial}"
        self.description = f"adb {where}"
        self.key_path = Path(os.path.expanduser(settings.key))
        self.reconnects = 0
        self.opened = 0
        self._dev: AdbDevice | None = None
        self._tcp: _Tcp | None = None
        self._lock = threading.RLock()
        self._connected_once = False
        self._has_timeout: bool | None = None

    # -- connection -----------------------------------------------------------------------------------
    def _err(self, what: str, unreachable: bool = False) -> TransportError:
        cls = Unreachable if unreachable else TransportError
        return cls(f"{self.device_id}: {self.description}: {what}")

    def _signer(self) -> CryptographySigner:
        key = self.key_path
        if not key.is_file():
            raise self._err(
                f"ADB key {key} does not exist; create it with 'farm devices keygen' and accept it on the phone",
                unreachable=True,
            )
        if (why := adb_key_problem(key)) is not None:  # the inventory refused it at load; it may have changed since
            raise InputError(f"{self.device_id}: {why}")
        pub = Path(f"{key}.pub")
        try:
            if not pub.is_file():
                write_public_keyfile(str(key), str(pub))  # adb-shell's signer wants the .pub beside the key
            return CryptographySigner(str(key))
        except (OSError, ValueError, TypeError) as exc:
            raise self._err(f"cannot load ADB key {key}: {exc}", unreachable=True) from None

    def connect(self) -> None:
        """Connect and authenticate. Raises Unreachable (naming the key file when the phone refuses it)."""
        s = self.settings
        signer = self._signer()
        if s.address:
            host, port = parse_address(s.address)
            tcp = _Tcp(host, port, s.connect_timeout_s, s.io_timeout_s)
            dev = AdbDevice(tcp, default_transport_timeout_s=None)  # trap 1: never a timeout at connect
        else:
            tcp = None
            try:
                dev = AdbDeviceUsb(serial=s.serial, default_transport_timeout_s=None)
            except Exception as exc:  # adb-shell raises several types for "no usb extra / no libusb / no device"
                hint = ""
                if isinstance(exc, adb_exc.InvalidTransportError):
                    hint = " (USB needs the farm's usb extra: pip install 'codec-farm[usb]')"
                raise self._err(f"cannot open USB device: {exc}{hint}", unreachable=True) from None
        asked = threading.Event()  # set when every signature was rejected and we offer the public key

        def on_prompt(_dev: Any) -> None:
            asked.set()

        try:
            dev.connect(
                rsa_keys=[signer],
                transport_timeout_s=s.connect_timeout_s,  # reads during the handshake only; see _Tcp.connect
                auth_timeout_s=s.auth_timeout_s,
                read_timeout_s=s.connect_timeout_s,
                auth_callback=on_prompt,
            )
        except (*_LINK_ERRORS, *_TIMEOUTS, adb_exc.DeviceAuthError) as exc:
            dev.close()
            if asked.is_set():
                raise self._err(
                    f"the phone did not accept ADB key {self.key_path} (public key {self.key_path}.pub) within "
                    f"{s.auth_timeout_s:g}s: allow USB debugging for this key on the phone, or install the .pub in "
                    f"its adb_keys",
                    unreachable=True,
                ) from None
            raise self._err(f"cannot connect: {type(exc).__name__}: {exc}", unreachable=True) from None
        self._dev, self._tcp = dev, tcp
        self._connected_once = True

    def _device(self) -> AdbDevice:
        """The live connection, reconnecting once if the previous one died or was dropped after a failure."""
        with self._lock:
            if self._dev is not None and (self._tcp is None or not self._tcp.looks_closed()):
                return self._dev
            self.drop()
            if self._connected_once:
                self.reconnects += 1
            self.connect()
            assert self._dev is not None
            return self._dev

    def drop(self) -> None:
        """Forget the connection (after a failure) so the next call reconnects."""
        with self._lock:
            if self._dev is not None:
                with contextlib.suppress(Exception):
                    self._dev.close()
            self._dev, self._tcp = None, None

    def close(self) -> None:
        self.drop()

    @contextlib.contextmanager
    def _watchdog(self, seconds: float) -> Iterator[threading.Event]:
        """Wake the socket if a call runs past ``seconds`` (a device that trickles output never trips a read limit)."""
        fired = threading.Event()
        tcp = self._tcp

        def expire() -> None:
            fired.set()
            if tcp is not None:
                tcp.wake()

        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        timer.start()
        try:
            yield fired
        finally:
            timer.cancel()

    def _call(self, what: str, fn: Callable[[AdbDevice], T], deadline_s: float | None = None) -> T:
        """Run one adb-shell operation; any failure drops the connection (its stream state is unknown).

        Raises _Deadline when the host-side deadline passed, TransportError for everything else.
        """
        self.opened += 1  # one adb stream per call (shell, push, pull)
        with self._lock:
            dev = self._device()
            try:
                if deadline_s is None:
                    return fn(dev)
                with self._watchdog(deadline_s) as fired:
                    try:
                        return fn(dev)
                    except (*_LINK_ERRORS, *_TIMEOUTS):
                        if fired.is_set():
                            raise _Deadline from None
                        raise
            except (adb_exc.AdbCommandFailureException, adb_exc.PushFailedError) as exc:
                # the phone's sync service answered FAIL (no such file, permission denied): the link carried it
                self.drop()  # adb-shell's stream state after a FAIL is not worth trusting: reconnect next time
                raise CommandFailed(self.device_id, what, None, str(exc)[-300:]) from None
            except _TIMEOUTS as exc:
                self.drop()
                if deadline_s is not None:
                    raise _Deadline from None
                raise self._err(f"the phone stopped answering during {what}: {exc}") from None
            except _LINK_ERRORS as exc:
                self.drop()
                raise self._err(f"connection failed during {what}: {type(exc).__name__}: {exc}") from None
            except _Deadline:
                self.drop()
                raise

    # -- commands -------------------------------------------------------------------------------------
    def _timeout_available(self) -> bool:
        if self._has_timeout is None:
            res = self._exec(["sh", "-c", "command -v timeout >/dev/null 2>&1"], None, 30.0)
            self._has_timeout = res.exit_status == 0
        return self._has_timeout

    def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None) -> Completed:
        command = list(argv)
        if self._timeout_available():
            # the phone enforces the deadline itself (and kills the whole group), even if we lose the link
            command = ["timeout", "-k", str(KILL_GRACE_S), f"{timeout:g}", *argv]
        res = self._exec(command, stdin, timeout + KILL_GRACE_S + DEADLINE_MARGIN_S, argv=tuple(argv))
        if res.exit_status in (124, 137) and self._has_timeout:
            return logged(self.device_id, Completed(res.argv, None, res.stdout, res.stderr, True, res.seconds))
        return logged(self.device_id, res)

    def _exec(
        self, command: Sequence[str], stdin: bytes | None, deadline_s: float, argv: tuple[str, ...] = ()
    ) -> Completed:
        argv = argv or tuple(command)
        start = time.monotonic()
        token = secrets.token_hex(16)
        halves = (token[:16], token[16:])
        marker = token.encode()
        scratch = f"{self.settings.tmpdir.rstrip('/')}/farm-{secrets.token_hex(6)}"
        stdin_file = ""
        if stdin is not None:
            stdin_file = f"{scratch}.in"
            self._call(
                f"sending stdin for {argv[0]!r}",
                lambda dev: dev.push(
                    io.BytesIO(stdin),
                    stdin_file,
                    st_mode=stat.S_IFREG | 0o600,
                    transport_timeout_s=self.settings.io_timeout_s,
                    read_timeout_s=self.settings.io_timeout_s,
                ),
            )
        line = shlex.join(["sh", "-c", _RUN_SCRIPT, "farm-run", f"{scratch}.err", stdin_file, *halves, *command])
        try:
            raw = self._call(
                f"running {argv[0]!r}",
                # trap 4: a silent command may be silent for its whole budget, so every read limit is that budget
                lambda dev: dev.shell(line, transport_timeout_s=deadline_s, read_timeout_s=deadline_s, decode=False),
                deadline_s=deadline_s,
            )
        except _Deadline:
            if self._has_timeout:
                # the phone's own `timeout -k` should have ended the command long before: the link is dead
                raise self._err(f"did not answer for {deadline_s:g} s while running {argv[0]!r}") from None
            return Completed(argv, None, b"", b"", True, time.monotonic() - start)
        status, out, err = self._parse(raw, marker, argv)
        return Completed(argv, status, out, err, False, time.monotonic() - start)

    def _parse(self, raw: bytes, marker: bytes, argv: tuple[str, ...]) -> tuple[int, bytes, bytes]:
        """Split the wrapper's output into (exit status, stdout, stderr); see _RUN_SCRIPT for the layout."""
        end = b"\n" + marker + b"\n"
        head = b"\n" + marker + b" "
        at = raw.find(head)
        if not raw.endswith(end) or at < 0:
            self.drop()
            raise self._err(
                f"no exit status came back for {argv[0]!r} (the shell was killed or the stream cut short): "
                f"{raw[-200:].decode('utf-8', 'replace')!r}"
            )
        rest = raw[at + len(head) : -len(end)]
        status_text, _, err = rest.partition(b"\n")
        try:
            status = int(status_text)
        except ValueError:
            raise self._err(f"garbled exit status {status_text[:40]!r} for {argv[0]!r}") from None
        return status, raw[:at], err

    def spawn(self, argv: Sequence[str]) -> Background:
        res = self._exec(["sh", "-c", SPAWN_SCRIPT, "farm-spawn", *argv], None, 30.0, tuple(argv))
        pid = res.stdout.decode().strip()
        if res.exit_status != 0 or not pid.isdigit():
            raise self._err(f"cannot start {argv[0]!r} in the background: {res.error_tail(300)}")
        return Background(argv=tuple(argv), handle=int(pid))

    def kill(self, proc: Background) -> None:
        self._exec(["sh", "-c", KILL_SCRIPT, "farm-kill", str(proc.handle)], None, 30.0)

    def hold(self, argv: Sequence[str], *, timeout: float) -> AdbHeld:
        """Run argv on a second connection to the phone and return once it printed its first line."""
        if not self.settings.address:
            # one USB handle carries one connection; a second stream on it needs adb-shell to multiplex streams
            raise CommandFailed(self.device_id, f"holding {argv[0]!r}", None, "not supported over USB yet (TCP only)")
        self.opened += 1
        link = AdbLink(self.device_id, self.settings)
        link.connect()
        dev = link._dev
        assert dev is not None
        first = b""
        try:
            stream = dev.streaming_shell(
                shlex.join(argv), transport_timeout_s=timeout, read_timeout_s=timeout, decode=False
            )
            for chunk in stream:
                first += chunk
                if b"\n" in first:
                    break
        except (*_LINK_ERRORS, *_TIMEOUTS) as exc:
            link.close()
            raise link._err(f"connection failed while starting {argv[0]!r}: {type(exc).__name__}: {exc}") from None
        if b"\n" not in first:
            link.close()
            raise CommandFailed(self.device_id, f"holding {argv[0]!r}", None, first.decode(errors="replace")[-300:])
        return AdbHeld(link, stream, first.split(b"\n", 1)[0].decode(errors="replace").strip())

    # -- transfers ------------------------------------------------------------------------------------
    def push(self, local: Path, remote: str) -> int:
        """Push with adb's sync protocol; every DATA is acknowledged, so a short write cannot go unnoticed."""
        info = local.stat()
        io_s = self.settings.io_timeout_s
        self._call(
            f"pushing {local.name}",
            lambda dev: dev.push(
                str(local),
                remote,
                st_mode=stat.S_IFREG | stat.S_IMODE(info.st_mode),
                mtime=int(info.st_mtime) or 1,
                transport_timeout_s=io_s,
                read_timeout_s=io_s,
            ),
        )
        return info.st_size

    def pull(self, remote: str, local: Path) -> int:
        local.parent.mkdir(parents=True, exist_ok=True)
        io_s = self.settings.io_timeout_s
        try:
            self._call(
                f"pulling {remote!r}",
                lambda dev: dev.pull(remote, str(local), transport_timeout_s=io_s, read_timeout_s=io_s),
            )
        except (TransportError, CommandFailed):
            local.unlink(missing_ok=True)  # never leave a partial file that looks like a result
            raise
        return local.stat().st_size
