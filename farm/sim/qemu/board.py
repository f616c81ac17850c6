"""One emulated Debian arm64 board: qemu-system-aarch64 (TCG) booting the cached image, reachable over SSH.

Why these choices (docs/qemu-boards.md): machine ``virt`` with virtio-mmio disks and network (no PCI, no
firmware: ``-kernel``/``-initrd`` boot straight into Debian's kernel); user-mode networking with one loopback
host forward for SSH (no root, no bridge, nothing reachable from outside the host); a throw-away qcow2 overlay
per board over the shared base; and a small seed disk per board carrying its fixed host key, the client's
public key and its hostname, written before boot, so known_hosts is strict from the first connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.sim.identity import BoardIdentity
from farm.sim.qemu.image import Image, run_step
from farm.sim.qemu.recipe import FFMPEG_ON_BOARD, PYTHON_ON_BOARD, SEED_LABEL
from farm.sim.qemu.runtime import ORT_PYTHON, RuntimeDisk, mount_argv
from farm.sim.sshboard import LOCALHOST, Proc, SimError, free_port, generate_key

QEMU = "qemu-system-aarch64"
BOOT_TIMEOUT_S = 900.0
"""TCG boots to SSH in about a minute on an idle 2-core host, and took 3-7 minutes at a load average of 20-30
(five engineers' test runs on the same 2 cores): the bound is for the loaded case."""
PORT_ATTEMPTS = 5
"""Ports tried for the SSH forward: one taken between choosing it and qemu binding it makes qemu exit at once."""
FORWARD_WAIT_S = 30.0
"""How long qemu may take to bind its forward (it does before the guest runs: well under a second when idle)."""
POWEROFF_TIMEOUT_S = 120.0  # 19 s at load ~21, about 60 s at load ~18 with a second VM booting
WORKDIR = "/var/lib/codec-farm"


def qemu_argv(
    image: Image, overlay: Path, seed: Path, port: int, console: Path, qmp: Path, runtime: Path | None = None
) -> list[str]:
    """The board's QEMU command line (cortex-a72, 2 vCPUs, 2 GiB, multi-threaded TCG); ``runtime``: the ONNX
    Runtime disk, attached read-only (several boards share the one cached file)."""
    extra = [] if runtime is None else [
        "-drive", f"if=none,id=runtime,format=raw,readonly=on,file={runtime}",
        "-device", "virtio-blk-device,drive=runtime",
    ]  # fmt: skip
    return [
        QEMU,
        "-M",
        "virt",
        "-cpu",
        "cortex-a72",
        "-smp",
        "2",
        "-m",
        "2048",
        "-accel",
        "tcg,thread=multi",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        "root=LABEL=farmroot rw console=ttyAMA0 net.ifnames=0",
        "-drive",
        f"if=none,id=root,format=qcow2,file={overlay}",
        "-device",
        "virtio-blk-device,drive=root",
        "-drive",
        f"if=none,id=seed,format=raw,readonly=on,file={seed}",
        "-device",
        "virtio-blk-device,drive=seed",
        *extra,
        "-netdev",
        f"user,id=net0,hostfwd=tcp:{LOCALHOST}:{port}-:22",
        "-device",
        "virtio-net-device,netdev=net0",
        "-device",
        "virtio-rng-device",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{console}",
        "-qmp",
        f"unix:{qmp},server=on,wait=off",
    ]


def _exit_with_parent() -> None:
    """In the child before exec: die with the process that started us (test fixtures; Linux only)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class QemuBoard(BoardIdentity):
    """One emulated board. ``start()`` boots it and waits for SSH; ``stop()`` powers it off (no qemu left)."""

    name: str
    base_dir: Path
    image: Image
    client_key: Path
    """The fleet's client key (private; ``.pub`` beside it is what the board authorizes)."""
    exit_with_parent: bool = False
    runtime: RuntimeDisk | None = None
    """The ONNX Runtime disk (farm.sim.qemu.runtime), mounted after boot; None: the board has no onnxruntime."""
    port: int = 0
    host: str = LOCALHOST
    boot_timeout_s: float = BOOT_TIMEOUT_S
    qemu: Proc | None = None
    boot_s: float | None = None
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    _started: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.base_dir = Path(os.path.abspath(self.base_dir))

    # -- files -------------------------------------------------------------------------------------------
    @property
    def console_log(self) -> Path:
        return self.base_dir / "console.log"

    def _seed(self) -> Path:
        """The seed disk: host key, authorized client key and hostname, as a small ext4 image (no root needed)."""
        generate_key(self.host_key_path, f"{self.name} host key")
        files = self.base_dir / "seed"
        files.mkdir(parents=True, exist_ok=True)
        for src, name in (
            (self.host_key_path, "ssh_host_ed25519_key"),
            (self.host_key_path.with_name(self.host_key_path.name + ".pub"), "ssh_host_ed25519_key.pub"),
            (self.client_key.with_name(self.client_key.name + ".pub"), "authorized_keys"),
        ):
            (files / name).write_bytes(src.read_bytes())
        (files / "hostname").write_text(self.name + "\n")
        seed = self.base_dir / "seed.img"
        seed.unlink(missing_ok=True)
        run_step(
            ["mkfs.ext4", "-q", "-F", "-L", SEED_LABEL, "-d", str(files), str(seed), "4M"], self.base_dir / "seed.log"
        )
        return seed

    def _overlay(self) -> Path:
        """A fresh copy-on-write overlay over the shared base: every boot starts from the built image."""
        overlay = self.base_dir / "overlay.qcow2"
        overlay.unlink(missing_ok=True)
        run_step(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(self.image.base), str(overlay)],
            self.base_dir / "seed.log",
        )
        return overlay

    # -- life cycle ----------------------------------------------------------------------------------------
    def start(self) -> QemuBoard:
        """Boot and wait until SSH answers with this board's host key; on any failure no qemu is left."""
        self.launch()
        return self.wait_ready()

    def launch(self) -> None:
        """Start qemu (returns at once). Call it from the thread that lives as long as the board should:
        with ``exit_with_parent`` the kernel kills qemu when the *thread* that forked it exits (PR_SET_PDEATHSIG
        follows the forking thread, not the process), so a fleet launches in its main thread and only waits
        for SSH in worker threads."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._cancelled.clear()
        self._started = time.monotonic()
        try:
            self._launch()
        except BaseException:
            self.kill()
            raise

    def wait_ready(self) -> QemuBoard:
        """Wait until the launched board answers SSH (any thread); on failure or timeout no qemu is left."""
        try:
            self._wait_for_ssh(self._started + self.boot_timeout_s)
        except BaseException:
            self.kill()
            raise
        self.boot_s = time.monotonic() - self._started
        return self

    def _launch(self) -> None:
        """Start qemu on a loopback port; a port taken meanwhile (qemu cannot bind its forward and exits) is
        replaced by another, up to :data:`PORT_ATTEMPTS` ports."""
        seed, overlay = self._seed(), self._overlay()
        tried: list[int] = []
        while True:
            self.port = self.port or free_port(self.host)
            self._popen_qemu(seed, overlay)
            if self._forwarding():
                break
            tried.append(self.port)
            if len(tried) >= PORT_ATTEMPTS:
                raise SimError(self._failure(f"no free SSH port: qemu could not forward any of {tried}"))
            self.port = 0
        self.write_known_hosts()
        if self._cancelled.is_set():  # kill() ran on another thread (Ctrl-C) while this one was launching
            raise SimError(f"qemu board {self.name}: start cancelled")

    def _forwarding(self) -> bool:
        """True once qemu listens on its SSH port; False if it exited because the port was taken."""
        popen, deadline = self._popen, time.monotonic() + FORWARD_WAIT_S
        assert popen is not None
        while time.monotonic() < deadline and not self._cancelled.is_set():
            if popen.poll() is not None:
                if "host forwarding" not in (self.base_dir / "qemu.log").read_text(errors="replace"):
                    raise SimError(self._failure(f"qemu exited with status {popen.returncode}"))
                return False
            if _listens(popen.pid, self.port):
                return True
            time.sleep(0.05)
        return True  # still running: the SSH poll decides (and reports) from here

    def _popen_qemu(self, seed: Path, overlay: Path) -> None:
        qmp = self.base_dir / "qmp.sock"
        qmp.unlink(missing_ok=True)
        runtime = None if self.runtime is None else self.runtime.path
        argv = qemu_argv(self.image, overlay, seed, self.port, self.console_log, qmp, runtime)
        (self.base_dir / "qemu.argv").write_text(shlex.join(argv) + "\n")
        with open(self.base_dir / "qemu.log", "wb") as log:
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=True,
                preexec_fn=_exit_with_parent if self.exit_with_parent else None,
            )
        self.qemu = Proc.of(self._popen.pid)

    def _wait_for_ssh(self, deadline: float) -> None:
        """Poll until a strict SSH login runs ``true``; paramiko's tracebacks for a guest sshd that is not up
        yet (connection reset during the banner) are expected here and kept out of the user's terminal."""
        paramiko_log = logging.getLogger("paramiko")
        level = paramiko_log.level
        paramiko_log.setLevel(logging.CRITICAL)
        try:
            self._poll_ssh(deadline)
        finally:
            paramiko_log.setLevel(level)

    def _poll_ssh(self, deadline: float) -> None:
        from farm.transports.base import TransportError
        from farm.transports.ssh import SshLink

        last = "no answer yet"
        while time.monotonic() < deadline:
            popen = self._popen
            if popen is None or popen.poll() is not None or self._cancelled.is_set():
                status = "was stopped" if popen is None else f"exited with status {popen.returncode}"
                raise SimError(self._failure(f"qemu {status}"))
            if _port_open(self.host, self.port):
                link = SshLink(self.name, self.ssh_settings(connect_timeout_s=30.0))
                try:
                    link.connect()
                    link.run(["true"], timeout=30)
                    self._mount_runtime(link)
                    return
                except TransportError as error:
                    last = str(error)
                finally:
                    link.close()
            time.sleep(1.0)
        raise SimError(self._failure(f"no SSH after {self.boot_timeout_s:g}s ({last})"))

    def _mount_runtime(self, link: Any) -> None:
        """The runtime disk at its mount point, so the inventory's ``onnxruntime`` interpreter works."""
        if self.runtime is None:
            return
        done = link.run(mount_argv(), timeout=120)
        if not done.ok:
            why = done.stderr.decode(errors="replace").strip() or f"exit status {done.exit_status}"
            raise SimError(self._failure(f"mounting the runtime disk failed: {why}"))

    def _failure(self, reason: str) -> str:
        tail = "".join(f"\n  {line}" for line in _tail(self.console_log, 8) + _tail(self.base_dir / "qemu.log", 4))
        return f"qemu board {self.name} ({self.host}:{self.port}): {reason}; see {self.console_log}{tail}"

    def ssh_settings(self, connect_timeout_s: float = 30.0) -> Any:
        from farm.config.inventory import SshTransport

        return SshTransport(
            kind="ssh",
            host=self.host,
            port=self.port,
            user="root",
            key=str(self.client_key),
            known_hosts=str(self.base_dir / "known_hosts"),
            connect_timeout_s=connect_timeout_s,
        )

    def write_known_hosts(self) -> None:
        (self.base_dir / "known_hosts").write_text(self.known_hosts_line + "\n")

    def stop(self) -> float | None:
        """Clean poweroff over SSH, then SIGTERM/SIGKILL after a timeout; returns the seconds a clean one took."""
        poweroff_s = power_off(self.qemu, self.host, self.port, self.client_key, self.base_dir / "known_hosts")
        self.kill()
        return poweroff_s

    def kill(self) -> None:
        """qemu gone, now: SIGTERM (it exits at once, as after a power cut), SIGKILL if it lingers.

        Safe from another thread while :meth:`start` runs: a board still launching is cancelled."""
        self._cancelled.set()
        kill_qemu(self.qemu)
        popen = self._popen
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=10)

    def state(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "dir": str(self.base_dir),
            "host": self.host,
            "port": self.port,
            "key": str(self.client_key),
            "qemu": None if self.qemu is None else [self.qemu.pid, self.qemu.starttime],
        }

    def inventory_entry(self, known_hosts: Path) -> dict[str, Any]:
        """This board as a devices.yaml entry: an aarch64 Linux board over SSH, emulated, with no power meter."""
        return {
            "id": self.name,
            "platform": "linux",
            "transport": {
                "kind": "ssh",
                "host": self.host,
                "port": self.port,
                "user": "root",
                "key": str(self.client_key.resolve()),
                "known_hosts": str(Path(known_hosts).resolve()),
                "connect_timeout_s": 30.0,
                "io_timeout_s": 600.0,
            },
            "target": "linux-aarch64",
            "tags": ["sim", "qemu", "emulated"],
            "emulated": True,
            "workdir": WORKDIR,
            "runtime": self._runtimes(),
            "power": {"meter": "none"},
            "thermal": {"zones": []},
        }

    def _runtimes(self) -> dict[str, str]:
        found = {"python": PYTHON_ON_BOARD, "ffmpeg": FFMPEG_ON_BOARD}
        return found | ({"onnxruntime": ORT_PYTHON} if self.runtime is not None else {})


def _tail(path: Path, n: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except FileNotFoundError:
        return []


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a listening TCP socket on ``port`` (its fds against /proc/PID/net/tcp):
    the port being open is not enough, since whoever took it first answers too."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:[") : -1])
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in table:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
            return True
    return False


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2.0):
        return True
    return False


def power_off(qemu: Proc | None, host: str, port: int, key: Path, known_hosts: Path) -> float | None:
    """``poweroff`` over SSH and wait for qemu to exit; the seconds it took, or None if it did not."""
    if qemu is None or not qemu.alive():
        return None
    started = time.monotonic()
    argv = [
        "ssh",
        "-F",
        "/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-i",
        str(key),
        "-p",
        str(port),
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        f"root@{host}",
        "systemctl poweroff --no-block",
    ]
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)
    while time.monotonic() - started < POWEROFF_TIMEOUT_S:
        if not qemu.alive():
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def kill_qemu(qemu: Proc | None, grace_s: float = 5.0) -> None:
    """SIGTERM then SIGKILL one recorded qemu (pid and start time must match, so a recycled pid is spared)."""
    if qemu is None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not qemu.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(qemu.pid, sig)
        deadline = time.monotonic() + wait_s
        while qemu.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    if qemu.alive():
        raise SimError(f"qemu pid {qemu.pid} survived SIGKILL")
