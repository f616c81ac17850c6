"""A virtual Linux board: a real OpenSSH sshd on loopback with its own workdir and SIMULATED sensors.

Why a real sshd: the farm's SSH transport, host-key checks, timeouts, kills and fault handling must be proven
against the server they meet in a lab, not a mock. Each board is one Debian ``/usr/sbin/sshd`` with a private
config (key auth only, one ed25519 host key, listening on 127.0.0.1 on a free port), started and supervised by
:mod:`farm.sim.loadd`, which also keeps the board's virtual sysfs (:mod:`farm.sim.sysfs`) current from the CPU
time the board's processes use (:mod:`farm.sim.loadmodel`). Power and temperature are simulated; the SSH
server, the shells and the processes a test runs on the board are real.

Layout of a board directory::

    sshd_config  ssh_host_ed25519_key(.pub)  authorized_keys  known_hosts  sshd.pid  sshd.log  loadd.log
    workdir/     the board's working directory for the farm (the inventory's ``workdir``)
    sys/...      the virtual sysfs tree (power, thermal, powercap)

Processes: ``loadd`` (a child subreaper, in its own session) -> ``sshd`` listener -> per-connection sshd ->
shells, decoders. :meth:`SshBoard.stop` ends all of them; :func:`stop_recorded` does the same from another
process given the pids in ``state.json`` (``farm sim down``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import farm
from farm.errors import InfraError
from farm.sim.identity import BoardIdentity
from farm.sim.loadd import descendants, is_alive, params_to_argv, proc_table, read_stat
from farm.sim.loadmodel import LoadParams
from farm.sim.sysfs import SysfsTree

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
LOCALHOST = "127.0.0.1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PORT_ATTEMPTS = 5


class SimError(InfraError):
    """A virtual board could not be started or stopped."""


@dataclass(frozen=True)
class Proc:
    """A process identified by pid and start time (so a recycled pid is never mistaken for it)."""

    pid: int
    starttime: int

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        stat = read_stat(pid)
        return None if stat is None else cls(pid, stat.starttime)

    def alive(self) -> bool:
        return is_alive(self.pid, self.starttime)


def current_user() -> str:
    """The user the boards accept (sshd running as a user only lets that user log in)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def free_port(host: str = LOCALHOST, avoid: range = range(0)) -> int:
    """A TCP port that was free a moment ago, outside ``avoid`` (the caller retries if it loses the race)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            return port


def sshd_version(sshd: Path = SSHD) -> tuple[int, int]:
    """OpenSSH's (major, minor), from ``sshd -V`` (older versions print it in their usage message)."""
    result = subprocess.run([str(sshd), "-V"], capture_output=True, text=True, check=False, timeout=10)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", result.stdout + result.stderr)
    if match is None:
        raise SimError(f"{sshd} -V printed no OpenSSH version: {(result.stdout + result.stderr).strip()!r}")
    return int(match.group(1)), int(match.group(2))


def generate_key(path: Path, comment: str) -> None:
    """An ed25519 key pair at ``path`` (mode 0600) and ``path.pub``, unless one is already there."""
    if path.exists() and path.with_name(path.name + ".pub").exists():
        return
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    path.chmod(0o600)


def _config_value(value: Path | str) -> str:
    """One sshd_config argument, double-quoted; refuses what sshd would expand or split."""
    text = str(value)
    if any(c in text for c in '"%\\\n\r\0'):
        raise SimError(f"cannot use {text!r} in sshd_config (no quotes, '%', backslashes or newlines)")
    return f'"{text}"'


def read_banner(host: str, port: int, timeout_s: float) -> str:
    """The SSH identification line the server sends first (raises OSError if it cannot be read)."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        data = b""
        while b"\n" not in data and len(data) < 256:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    line = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    if not line.startswith("SSH-"):
        raise OSError(f"no SSH banner from {host}:{port} (got {line!r})")
    return line


def _wait_gone(procs: list[Proc], timeout_s: float) -> list[Proc]:
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in procs if p.alive()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


def stop_recorded(
    loadd: Proc | None, sshd: Proc | None, *, popen: subprocess.Popen[bytes] | None = None, timeout_s: float = 5.0
) -> None:
    """Stop a board's supervisor, sshd and every process below them; returns when none is left.

    loadd is asked first (SIGTERM: it terminates and reaps the whole tree it supervises); whatever is still
    there after ``timeout_s`` (or if loadd was already gone) is killed with SIGKILL.
    """
    table = proc_table()
    victims: dict[int, Proc] = {}
    for root in (loadd, sshd):
        if root is not None and root.alive():
            victims[root.pid] = root
            for pid in descendants(table, root.pid):
                victims[pid] = Proc(pid, table[pid].starttime)
    if loadd is not None and loadd.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(loadd.pid, signal.SIGTERM)
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=timeout_s)
        else:
            _wait_gone([loadd], timeout_s)
    for _ in range(250):
        table = proc_table()
        if sshd is not None and sshd.alive():
            for pid in descendants(table, sshd.pid):
                victims.setdefault(pid, Proc(pid, table[pid].starttime))
        alive = [p for p in victims.values() if p.alive()]
        if not alive:
            break
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        time.sleep(0.02)
    else:
        raise SimError(f"processes {sorted(p.pid for p in victims.values() if p.alive())} survived SIGKILL")
    if popen is not None:
        popen.wait()


@dataclass
class SshBoard(BoardIdentity):
    """One virtual board. ``start()`` brings it up, ``stop()`` removes every process it had.

    ``port`` 0 picks a free port at the first start; a restarted board keeps its port and host key, so the
    inventory and known_hosts written for it stay valid.
    """

    name: str
    base_dir: Path
    client_public_key: str
    """The authorized key line (``ssh-ed25519 AAAA... comment``) the board accepts."""
    params: LoadParams = field(default_factory=LoadParams)
    period_s: float = 0.1
    exit_with_parent: bool = False
    """Stop the board when the process that started it exits (test fixtures: no board outlives pytest)."""
    port: int = 0
    host: str = LOCALHOST
    user: str = field(default_factory=current_user)
    start_timeout_s: float = 10.0
    loadd: Proc | None = None
    sshd: Proc | None = None
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise SimError(f"board name {self.name!r} is not a device id (letters, digits, '_', '.', '-')")
        self.base_dir = Path(os.path.abspath(self.base_dir))

    # --- paths and identity -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.base_dir / "sshd_config"

    @property
    def known_hosts_path(self) -> Path:
        """A known_hosts file holding only this board's key (written by :meth:`start`)."""
        return self.base_dir / "known_hosts"

    @property
    def authorized_keys_path(self) -> Path:
        return self.base_dir / "authorized_keys"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "sshd.pid"

    @property
    def sshd_log(self) -> Path:
        return self.base_dir / "sshd.log"

    @property
    def loadd_log(self) -> Path:
        return self.base_dir / "loadd.log"

    @property
    def workdir(self) -> Path:
        return self.base_dir / "workdir"

    @property
    def sysfs(self) -> SysfsTree:
        return SysfsTree(self.base_dir)

    @property
    def sysfs_root(self) -> Path:
        """The board's virtual ``/``: its sysfs files are under ``sysfs_root / "sys"``."""
        return self.base_dir

    @property
    def power_node(self) -> Path:
        """hwmon ``power1_input`` (uW, simulated)."""
        return self.sysfs.power_node

    @property
    def thermal_zone(self) -> Path:
        """thermal_zone0 ``temp`` (millidegrees C, simulated)."""
        return self.sysfs.temp_node

    @property
    def throttle_node(self) -> Path:
        """``1`` while the simulated board is above its throttle temperature."""
        return self.sysfs.throttle_node

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> SshBoard:
        """Create what the board needs, start sshd under loadd and wait for its SSH banner."""
        if self.loadd is not None and self.loadd.alive():
            raise SimError(f"board {self.name} is already running (loadd pid {self.loadd.pid})")
        if not os.access(SSHD, os.X_OK):
            raise SimError(f"{SSHD} not found: install openssh-server (scripts/system-deps)")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(exist_ok=True)
        generate_key(self.host_key_path, f"farm-sim {self.name}")
        self.authorized_keys_path.write_text(self.client_public_key.strip() + "\n")
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        fixed = self.port != 0
        for attempt in range(1 if fixed else _PORT_ATTEMPTS):
            if not fixed:
                self.port = free_port(self.host)
            self._write_config()
            error = self._launch()
            if error is None:
                self.known_hosts_path.write_text(self.known_hosts_line + "\n")
                return self
            if fixed or "Address already in use" not in error or attempt == _PORT_ATTEMPTS - 1:
                raise SimError(error)
        raise AssertionError("unreachable")

    def _write_config(self) -> None:
        lines = [
            "# sshd for the farm's virtual board " + self.name + " (written by farm.sim.sshboard; do not edit)",
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {_config_value(self.host_key_path)}",
            f"PidFile {_config_value(self.pid_file)}",
            f"AuthorizedKeysFile {_config_value(self.authorized_keys_path)}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "PrintMotd no",
            "PrintLastLog no",
            "PermitUserRC no",
            "MaxStartups 100",
            "MaxSessions 100",
            "ClientAliveInterval 0",
            "UseDNS no",
            "Subsystem sftp internal-sftp",
            # SHLVL=1 keeps bash from sourcing the login user's ~/.bashrc for every command (bash does that when
            # it sees it was started by sshd); a slow or locked rc file (pyenv rehash) must not stall the board
            f"SetEnv {_config_value('FARM_SIM_BOARD=' + self.name)} SHLVL=1",
        ]
        if sshd_version() >= (9, 8):
            lines.append("PerSourcePenalties no")  # fault tests fail auth on purpose; never lock out loopback
        self.config_path.write_text("\n".join(lines) + "\n")

    def _launch(self) -> str | None:
        """Start loadd (which starts sshd); None when the banner is read, else the reason it failed."""
        self.pid_file.unlink(missing_ok=True)
        self.sshd_log.write_text("")
        argv = [
            sys.executable,
            "-m",
            "farm.sim.loadd",
            "--root",
            str(self.sysfs_root),
            "--pid-file",
            str(self.pid_file),
            "--period",
            repr(float(self.period_s)),
            "--start-timeout",
            repr(float(self.start_timeout_s)),
            *params_to_argv(self.params),
            *(["--exit-with-parent"] if self.exit_with_parent else []),
            "--",
            str(SSHD),
            "-f",
            str(self.config_path),
            "-E",
            str(self.sshd_log),
        ]
        env = dict(os.environ)
        package_root = str(Path(farm.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        with open(self.loadd_log, "wb") as log:
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env=env,
                start_new_session=True,
            )
        self.loadd = Proc.of(self._popen.pid)
        deadline = time.monotonic() + self.start_timeout_s
        last_error = "sshd wrote no pid file"
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                return self._failure(f"loadd exited with status {self._popen.returncode}")
            try:
                self.sshd = Proc.of(int(self.pid_file.read_text().strip()))
            except (FileNotFoundError, ValueError):
                self.sshd = None
            if self.sshd is not None:
                try:
                    read_banner(self.host, self.port, timeout_s=2.0)
                    return None
                except OSError as error:
                    last_error = f"no SSH banner on {self.host}:{self.port}: {error}"
            time.sleep(0.02)
        return self._failure(f"not ready after {self.start_timeout_s:g}s ({last_error})")

    def _failure(self, reason: str) -> str:
        self.stop()
        tail = "".join(
            f"\n  {path.name}: {line}"
            for path in (self.sshd_log, self.loadd_log)
            if path.exists()
            for line in path.read_text(errors="replace").splitlines()[-5:]
        )
        return f"virtual board {self.name}: sshd on {self.host}:{self.port} failed: {reason}; see {self.sshd_log}{tail}"

    def stop(self) -> None:
        """Stop loadd, sshd and every session, shell and decoder of the board; no process of it is left."""
        stop_recorded(self.loadd, self.sshd, popen=self._popen)
        self._popen = None

    def running(self) -> bool:
        return self.loadd is not None and self.loadd.alive() and self.sshd is not None and self.sshd.alive()

    def processes(self) -> list[int]:
        """Pids of the board's live processes: loadd, sshd and everything below them."""
        table = proc_table()
        pids: set[int] = set()
        for root in (self.loadd, self.sshd):
            if root is not None and root.alive():
                pids |= {root.pid} | descendants(table, root.pid)
        return sorted(pid for pid in pids if pid in table and table[pid].state != "Z")

    def session_processes(self) -> list[int]:
        """Pids below the sshd listener: connections, and the shells and programs they run."""
        if self.sshd is None or not self.sshd.alive():
            return []
        table = proc_table()
        return sorted(pid for pid in descendants(table, self.sshd.pid) if table[pid].state != "Z")

    def drop_connections(self) -> None:
        """Kill every connection (and what it runs) but keep the listener: a dropped link, the board stays up."""
        for pid in self.session_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP the listener and every connection: the board stops answering without closing sockets."""
        self._signal_sshd_tree(signal.SIGSTOP)

    def thaw(self) -> None:
        """Undo :meth:`freeze`."""
        self._signal_sshd_tree(signal.SIGCONT)

    def _signal_sshd_tree(self, sig: int) -> None:
        if self.sshd is None or not self.sshd.alive():
            raise SimError(f"board {self.name} is not running")
        for pid in [self.sshd.pid, *self.session_processes()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    # --- descriptions -------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """What :func:`stop_recorded` needs to stop this board from another process (part of ``state.json``)."""
        return {
            "id": self.name,
            "dir": str(self.base_dir),
            "host": self.host,
            "port": self.port,
            "config": str(self.config_path),
            "loadd": None if self.loadd is None else [self.loadd.pid, self.loadd.starttime],
            "sshd": None if self.sshd is None else [self.sshd.pid, self.sshd.starttime],
        }

    def inventory_entry(self, key: Path, known_hosts: Path, *, connect_timeout_s: float = 5.0) -> dict[str, Any]:
        """This board as a devices.yaml entry (farm inventory schema), with absolute paths."""
        import imageio_ffmpeg

        from farm.config.inventory import local_target

        return {
            "id": self.name,
            "platform": "linux",
            "transport": {
                "kind": "ssh",
                "host": self.host,
                "port": self.port,
                "user": self.user,
                "key": str(Path(key).resolve()),
                "known_hosts": str(Path(known_hosts).resolve()),
                "connect_timeout_s": connect_timeout_s,
            },
            "target": local_target(),
            "tags": ["sim", "ssh"],
            "workdir": str(self.workdir),
            "runtime": {
                "ffmpeg": str(Path(imageio_ffmpeg.get_ffmpeg_exe()).resolve()),
                "python": sys.executable,
                "onnxruntime": sys.executable,  # a python that imports onnxruntime (docs/learned-codec.md)
            },
            "power": {"meter": "hwmon", "nodes": [str(self.power_node)], "unit": "uW", "simulated": True},
            "thermal": {"zones": [str(self.thermal_zone)], "throttle_c": self.params.throttle_c, "simulated": True},
        }


def proc_from_state(value: Any) -> Proc | None:
    """A :class:`Proc` from its ``[pid, starttime]`` form in ``state.json``."""
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return Proc(value[0], value[1])
    return None
