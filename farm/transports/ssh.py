"""Linux boards over SSH (paramiko), held to the standard of a real lab.

- Host keys are checked against a known_hosts file; an unknown or changed key refuses the device (RejectPolicy).
  ``farm devices trust ID`` is the explicit way to record a board's key. Key auth only (file or agent).
- Every command runs under the board's ``timeout -k`` so a hung decoder is killed on the board even if the
  link dies; the host keeps its own deadline on top. stdout and stderr are drained while the command runs,
  so a chatty command can never fill the channel window and deadlock before its exit status arrives.
- ``spawn`` uses ``setsid`` so ``kill`` can take down the whole process group on the board.
- Connections use short connect timeouts, TCP keepalive and a heartbeat the board must answer (a frozen board
  is reported as "did not answer for N s"); a dropped connection is reopened on the next call (once), so one
  flaky board costs a retry, not the run. A command that ran and failed raises CommandFailed, never a
  TransportError: retrying it cannot help.
- ``hold`` keeps a command on its own channel for as long as the link lives (the device's tether).
- Transfers stream through ``cat`` on an exec channel with a large window, whole-packet writes and AES-GCM
  preferred: faster than paramiko's SFTP; about 0.8x of scp on the same cipher on a loaded 2-core loopback
  (docs/performance.md says what limits it). Integrity is checked by sha256 on the board by the device layer.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import select
import shlex
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import paramiko

from farm.config.inventory import SshTransport as SshSettings
from farm.errors import CommandFailed
from farm.fileio import write_atomic
from farm.transports.base import KILL_SCRIPT, SPAWN_SCRIPT, Background, Completed, TransportError, Unreachable, logged

CHUNK = 256 << 10  # measured: 256 KiB writes beat 1-4 MiB ones (bench/bench_ssh_push.py); pushes round to packets
WINDOW = 64 << 20
# AES-GCM first: its MAC is computed inside OpenSSL with the cipher, while paramiko's CTR + HMAC costs a
# second pass per packet; on loopback this is the difference between ~0.65x and ~1.2x of scp. Others stay as
# fallbacks for boards without GCM.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
KILL_GRACE_S = 5
ANSWER_TIMEOUT_S = 10.0
"""A board that leaves a heartbeat unanswered this long (or ``io_timeout_s`` if shorter) is declared dead."""
HEARTBEAT_S = 2.0


def _whole_packets(chan: paramiko.Channel) -> int:
    """A write size of whole SSH packets, about ``CHUNK``.

    paramiko cuts a write into packets of the peer's max packet size minus 64 bytes (32704 for OpenSSH), so a
    256 KiB write went out as 8 full packets and a 512-byte one: 1 packet in 9 carried almost nothing, and the
    per-packet cost (framing, AES-GCM call, socket send, all in Python) is what limits a push.
    """
    payload: int = max(chan.out_max_packet_size - 64, 1)
    return max(CHUNK // payload, 1) * payload


class _Stall:
    """Calls ``on_stall`` once no ``kick`` came for ``seconds``: one thread for a whole transfer."""

    def __init__(self, seconds: float, on_stall: Callable[[], object]) -> None:
        self.seconds = seconds
        self.fired = threading.Event()
        self._on_stall = on_stall
        self._last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="farm-ssh-stall", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        self._last = time.monotonic()

    def stop(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while True:
            left = self._last + self.seconds - time.monotonic()
            if left <= 0:
                self.fired.set()
                self._on_stall()
                return
            if self._done.wait(left):
                return


class _Heartbeat:
    """Asks the board for a reply every few seconds and calls ``on_silence`` when one is overdue.

    paramiko's own keepalive asks for no reply, and TCP keepalive is answered by the board's kernel even when sshd
    (or the whole userland) is stopped, so neither notices a frozen board: a long decode would wait for its full
    deadline. OpenSSH answers an unknown global request with REQUEST_FAILURE, and any answer proves sshd is alive.
    paramiko's ``global_request`` waits without a limit, so the request runs in one thread and a second one watches.
    """

    def __init__(self, transport: paramiko.Transport, bound_s: float, on_silence: Callable[[], None]) -> None:
        self._transport = transport
        self._bound_s = bound_s
        self._on_silence = on_silence
        self._stop = threading.Event()
        self._pending_since: float | None = None
        for target in (self._ping, self._watch):
            threading.Thread(target=target, name="farm-ssh-heartbeat", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _ping(self) -> None:
        while not self._stop.wait(HEARTBEAT_S) and self._transport.is_active():
            self._pending_since = time.monotonic()
            with contextlib.suppress(Exception):  # a dead transport is the watcher's (or the caller's) business
                self._transport.global_request("keepalive@openssh.com", wait=True)
            self._pending_since = None

    def _watch(self) -> None:
        while not self._stop.wait(0.25) and self._transport.is_active():  # a dead transport needs no watching
            since = self._pending_since
            if since is not None and time.monotonic() - since > self._bound_s:
                self._stop.set()
                self._on_silence()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style fingerprint, so users can compare it with ``ssh-keygen -lf``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _tcp(host: str, port: int, timeout: float) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise Unreachable(f"ssh {host}:{port}: cannot connect: {exc}") from exc
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # keepalive probes find a silent peer when idle; TCP_USER_TIMEOUT also when data sits unacknowledged
    for opt, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", 30000)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _transport_factory(sock: socket.socket, **kwargs: Any) -> paramiko.Transport:
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    known = tuple(options.ciphers)
    options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in known) + tuple(
        c for c in known if c not in PREFERRED_CIPHERS
    )
    return transport


def scan_host_key(host: str, port: int, timeout: float = 5.0) -> paramiko.PKey:
    """The key a server presents, fetched without authenticating (for ``farm devices trust``)."""
    transport = paramiko.Transport(_tcp(host, port, timeout))
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise TransportError(f"ssh {host}:{port}: no host key: {exc}") from exc
    finally:
        transport.close()


def trust_host_key(known_hosts: Path, host: str, port: int, key: paramiko.PKey) -> None:
    """Record (or replace) the key for host:port in known_hosts, keeping every other line as it was.

    The file is edited as text (paramiko would drop comments and entries it cannot parse, such as security-key
    types or @cert-authority lines) and replaced atomically.
    """
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    name = known_hosts_name(host, port)
    lines = known_hosts.read_text().splitlines(keepends=True) if known_hosts.is_file() else []
    kept = [line for line in lines if not _names_host(line, name)]
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"
    kept.append(f"{name} {key.get_name()} {key.get_base64()}\n")
    mode = known_hosts.stat().st_mode & 0o777 if known_hosts.exists() else 0o600
    write_atomic(known_hosts, "".join(kept), mode)


def _names_host(line: str, name: str) -> bool:
    fields = line.split()
    if not fields or fields[0].startswith(("#", "@")):
        return False
    return name in fields[0].split(",")


def load_known_hosts(client: paramiko.SSHClient, known_hosts: Path, name: str) -> None:
    """Load the entries paramiko understands; a host listed as @revoked is refused outright.

    paramiko raises on marker lines (@cert-authority, @revoked) that OpenSSH accepts, which would take down
    every device sharing the user's known_hosts; those lines are skipped (host certificates are not supported,
    so a certificate-only host stays unknown and is refused).
    """
    if not known_hosts.is_file():
        return
    usable: list[str] = []
    for line in known_hosts.read_text(errors="replace").splitlines():
        fields = line.split()
        if fields[:1] == ["@revoked"] and len(fields) > 1 and name in fields[1].split(","):
            raise Unreachable(f"{name} is marked @revoked in {known_hosts}")
        if not fields or fields[0].startswith(("#", "@")):
            continue
        try:
            if paramiko.hostkeys.HostKeyEntry.from_line(line) is not None:
                usable.append(line)
        except (paramiko.SSHException, ValueError, TypeError):
            continue  # a key type paramiko does not know (e.g. sk-ssh-ed25519): not usable for us anyway
    with tempfile.NamedTemporaryFile("w", suffix=".known_hosts") as tmp:
        tmp.write("\n".join(usable) + "\n")
        tmp.flush()
        client.load_host_keys(tmp.name)


class SshHeld:
    """A held command on its own channel. The board ends it when the channel closes: by ``close``, when the
    connection drops, or when the controller dies and its kernel closes the socket (sshd then closes the pipes)."""

    def __init__(self, chan: paramiko.Channel, first_line: str) -> None:
        self.chan = chan
        self.first_line = first_line

    def alive(self) -> bool:
        transport = self.chan.get_transport()
        return not self.chan.closed and transport is not None and transport.is_active()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.chan.shutdown_write()  # end of input first: the command ends cleanly even if CLOSE is lost
        with contextlib.suppress(Exception):
            self.chan.close()


class SshLink:
    """One board's SSH connection; thread-safe for the device session that owns it."""

    def __init__(self, device_id: str, settings: SshSettings) -> None:
        self.device_id = device_id
        self.settings = settings
        self.description = f"ssh {settings.user}@{settings.host}:{settings.port}"
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._has_timeout: bool | None = None
        self.reconnects = 0
        self.opened = 0
        self._connected_once = False
        self.answer_timeout_s = min(settings.io_timeout_s, ANSWER_TIMEOUT_S)
        self._heartbeat: _Heartbeat | None = None
        self._silent_s: float | None = None  # set when the board stopped answering: errors then say so

    def _err(self, what: str, unreachable: bool = False) -> TransportError:
        cls = Unreachable if unreachable else TransportError
        if self._silent_s is not None:
            return cls(f"{self.device_id}: did not answer for {self._silent_s:g} s ({self.description}; {what})")
        return cls(f"{self.device_id}: {self.description}: {what}")

    def _went_silent(self, client: paramiko.SSHClient, seconds: float) -> None:
        """Close a connection whose board stopped answering: every call blocked on it wakes with an error."""
        self._silent_s = seconds
        with contextlib.suppress(Exception):
            client.close()

    # -- connection -----------------------------------------------------------------------------------

    def connect(self) -> None:
        s = self.settings
        known_hosts = Path(os.path.expanduser(s.known_hosts))
        client = paramiko.SSHClient()
        load_known_hosts(client, known_hosts, known_hosts_name(s.host, s.port))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            sock = _tcp(s.host, s.port, s.connect_timeout_s)
        except Unreachable as exc:
            raise self._err(str(exc).split(": ", 1)[-1], unreachable=True) from None
        key = os.path.expanduser(s.key) if s.key else None
        try:
            client.connect(
                s.host, port=s.port, username=s.user, key_filename=key, look_for_keys=False,
                allow_agent=key is None, timeout=s.connect_timeout_s, banner_timeout=s.connect_timeout_s,
                auth_timeout=s.connect_timeout_s, sock=sock, transport_factory=_transport_factory,
            )  # fmt: skip
        except paramiko.BadHostKeyException as exc:
            sock.close()
            raise self._err(
                f"HOST KEY CHANGED: the board presents {fingerprint(exc.key)}, {known_hosts} has "
                f"{fingerprint(exc.expected_key)}. Refusing. If the board was re-imaged, run "
                f"'farm devices trust {self.device_id}'.",
                unreachable=True,
            ) from None
        except paramiko.SSHException as exc:
            sock.close()
            if "not found in known_hosts" in str(exc):
                raise self._err(
                    f"unknown host key (not in {known_hosts}); refusing. Check it and run "
                    f"'farm devices trust {self.device_id}'.",
                    unreachable=True,
                ) from None
            if "No existing session" in str(exc) or "banner" in str(exc):
                # paramiko's way of saying the server accepted TCP (a kernel does that for a frozen sshd) and
                # then said nothing within the connect timeout
                self._silent_s = s.connect_timeout_s
                raise self._err("no SSH handshake while connecting", unreachable=True) from None
            raise self._err(f"SSH failed: {exc}", unreachable=True) from None
        except (OSError, EOFError) as exc:
            sock.close()
            raise self._err(f"connection failed: {exc}", unreachable=True) from None
        transport = client.get_transport()
        assert transport is not None
        transport.default_window_size = WINDOW
        self._client = client
        self._silent_s = None
        self._heartbeat = _Heartbeat(
            transport, self.answer_timeout_s, lambda: self._went_silent(client, self.answer_timeout_s)
        )
        self._connected_once = True

    def _transport(self) -> paramiko.Transport:
        """The live transport, reconnecting once if the previous connection died."""
        with self._lock:
            if self._client is not None:
                t = self._client.get_transport()
                if t is not None and t.is_active():
                    return t
                self._client.close()
                self._client = None
            if self._connected_once:
                self.reconnects += 1
            self.connect()
            assert self._client is not None
            t = self._client.get_transport()
            assert t is not None
            return t

    @contextlib.contextmanager
    def _watchdog(self, seconds: float, what: str) -> Iterator[Callable[[], None]]:
        """Close the connection if a paramiko call that has no timeout of its own blocks past ``seconds``.

        A frozen board (process stopped, kernel still ACKing) never fails a TCP read or write, and paramiko's
        channel requests wait without limit; closing the transport wakes every waiter with an error. The
        context yields ``kick``: a transfer calls it after each chunk, so one watchdog covers the whole
        transfer and fires only when no chunk moved for ``seconds`` (a thread per chunk cost about 2 % of a
        push's throughput).
        """
        client = self._client

        def expire() -> None:
            if client is not None:
                self._went_silent(client, seconds)

        stall = _Stall(seconds, expire)
        try:
            yield stall.kick
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if stall.fired.is_set():
                raise EOFError(f"board stopped answering for {seconds:g}s during {what}") from exc
            raise
        finally:
            stall.stop()

    @staticmethod
    def _exit_status(chan: paramiko.Channel, seconds: float) -> int:
        if not chan.status_event.wait(seconds):
            raise EOFError(f"no exit status within {seconds:g}s")
        status = int(chan.recv_exit_status())
        if status == -1:  # paramiko's value when the channel closed without one: the link died, not the command
            raise EOFError("the connection closed before the exit status")
        return status

    def _session(self) -> paramiko.Channel:
        self.opened += 1  # every exec, hold, push and pull comes through here: one channel each
        try:
            # window size: the transport default set at connect (WINDOW)
            chan = self._transport().open_session(timeout=self.settings.io_timeout_s)
            chan.settimeout(self.settings.io_timeout_s)  # every send/recv on it: a stalled board raises
            return chan
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.drop()
            raise self._err(f"cannot open a channel: {exc}") from None

    def drop(self) -> None:
        """Forget the connection (after a failure) so the next call reconnects."""
        with self._lock:
            if self._heartbeat is not None:
                self._heartbeat.stop()
                self._heartbeat = None
            if self._client is not None:
                self._client.close()
                self._client = None

    def close(self) -> None:
        self.drop()

    # -- commands -------------------------------------------------------------------------------------
    def _timeout_available(self) -> bool:
        if self._has_timeout is None:
            res = self._exec("command -v timeout >/dev/null 2>&1", None, 30.0)
            self._has_timeout = res.exit_status == 0
        return self._has_timeout

    def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None) -> Completed:
        command = shlex.join(argv)
        if self._timeout_available():
            # the board enforces the deadline itself (and kills the whole group), even if we lose the link
            command = shlex.join(["timeout", "-k", str(KILL_GRACE_S), f"{timeout:g}", *argv])
        res = self._exec(command, stdin, timeout + KILL_GRACE_S + 10, argv=tuple(argv))
        if res.exit_status in (124, 137) and self._has_timeout and res.seconds >= timeout * 0.98:
            return logged(self.device_id, Completed(res.argv, None, res.stdout, res.stderr, True, res.seconds))
        return logged(self.device_id, res)

    def _exec(self, command: str, stdin: bytes | None, deadline_s: float, argv: tuple[str, ...] = ()) -> Completed:
        start = time.monotonic()
        chan = self._session()
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            with self._watchdog(self.settings.io_timeout_s, "a command start"):
                chan.exec_command(command)
            with self._watchdog(self.settings.io_timeout_s, "sending stdin"):
                if stdin:
                    chan.sendall(stdin)
                chan.shutdown_write()
            while True:
                # drain both streams before asking for the exit status (no window deadlock)
                while chan.recv_ready():
                    out.append(chan.recv(CHUNK))
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(CHUNK))
                # the exit status may arrive before the last output: only the board's EOF ends the output
                if chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed and not chan.eof_received:
                    raise EOFError("channel closed without end of output")
                if time.monotonic() - start > deadline_s:
                    # the board's own `timeout -k` should have ended the command long ago: the link is dead
                    raise EOFError(f"no answer within {deadline_s:g}s (board or link dead)")
                if not chan.get_transport() or not chan.get_transport().is_active():
                    raise EOFError("connection lost")
                select.select([chan], [], [], 0.5)
            status = self._exit_status(chan, self.settings.io_timeout_s)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.drop()
            raise self._err(f"connection dropped while running {argv[0] if argv else command!r}: {exc}") from None
        finally:
            chan.close()
        return Completed(argv or (command,), status, b"".join(out), b"".join(err), False, time.monotonic() - start)

    def spawn(self, argv: Sequence[str]) -> Background:
        res = self._exec(shlex.join(["sh", "-c", SPAWN_SCRIPT, "farm-spawn", *argv]), None, 30.0, tuple(argv))
        pid = res.stdout.decode().strip()
        if res.exit_status != 0 or not pid.isdigit():
            raise CommandFailed(
                self.device_id, f"starting {argv[0]!r} in the background", res.exit_status, res.error_tail(300)
            )
        return Background(argv=tuple(argv), handle=int(pid))

    def kill(self, proc: Background) -> None:
        self._exec(shlex.join(["sh", "-c", KILL_SCRIPT, "farm-kill", str(proc.handle)]), None, 30.0)

    def hold(self, argv: Sequence[str], *, timeout: float) -> SshHeld:
        """Not under ``timeout -k``: a held command lives as long as its channel, which is the point."""
        chan = self._session()
        line = b""
        try:
            with self._watchdog(self.settings.io_timeout_s, "a held command start"):
                chan.exec_command(shlex.join(argv))
            deadline = time.monotonic() + timeout
            while not line.endswith(b"\n") and time.monotonic() < deadline:
                if chan.recv_ready():
                    line += chan.recv(1)  # one byte at a time: nothing after the first line is consumed
                elif chan.eof_received or chan.closed:
                    break
                else:
                    select.select([chan], [], [], 0.2)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            chan.close()
            self.drop()
            raise self._err(f"connection dropped while starting {argv[0]!r}: {exc}") from None
        if not line.endswith(b"\n"):
            err = chan.recv_stderr(CHUNK) if chan.recv_stderr_ready() else b""
            status = chan.recv_exit_status() if chan.exit_status_ready() else None
            chan.close()
            raise CommandFailed(self.device_id, f"holding {argv[0]!r}", status, err.decode(errors="replace")[-300:])
        return SshHeld(chan, line.decode(errors="replace").strip())

    # -- transfers ------------------------------------------------------------------------------------
    def push(self, local: Path, remote: str) -> int:
        chan = self._session()
        sent = 0
        try:
            with self._watchdog(self.settings.io_timeout_s, "a push start"):
                chan.exec_command(shlex.join(["sh", "-c", 'cat >"$1"', "farm-push", remote]))
            chunk_size = _whole_packets(chan)
            # paramiko retries a stalled socket write forever: only closing the client frees it
            with local.open("rb") as f, self._watchdog(self.settings.io_timeout_s, "a push") as kick:
                while chunk := f.read(chunk_size):
                    chan.sendall(chunk)
                    sent += len(chunk)
                    kick()
            with self._watchdog(self.settings.io_timeout_s, "a push"):
                chan.shutdown_write()
            status = self._exit_status(chan, self.settings.io_timeout_s)
            err = b""
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(CHUNK)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.drop()
            raise self._err(f"connection dropped while pushing {local.name}: {exc}") from None
        finally:
            chan.close()
        if status != 0:  # the link carried every byte: the board refused them (permissions, a full disk)
            raise CommandFailed(self.device_id, f"push to {remote!r}", status, err.decode(errors="replace")[-300:])
        return sent

    def pull(self, remote: str, local: Path) -> int:
        chan = self._session()
        received = 0
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._watchdog(self.settings.io_timeout_s, "a pull start"):
                chan.exec_command(shlex.join(["cat", "--", remote]))
            chan.shutdown_write()
            with local.open("wb") as f:
                while True:
                    chunk = chan.recv(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
            status = self._exit_status(chan, self.settings.io_timeout_s)
            err = b""
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(CHUNK)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.drop()
            raise self._err(f"connection dropped while pulling {remote!r}: {exc}") from None
        finally:
            chan.close()
        if status != 0:
            local.unlink(missing_ok=True)  # never leave a partial file that looks like a result
            raise CommandFailed(self.device_id, f"pull of {remote!r}", status, err.decode(errors="replace")[-300:])
        return received
