"""The updater daemon behind a virtual board's SIMULATED sensors: CPU time of the board's processes -> sysfs.

Why a daemon per board: the board's power must follow what *that board* runs (decoders, samplers, shells),
not what the machine runs, so something has to watch the board's own process tree and keep its sysfs files
current while the farm samples them with plain ``sh``. Run as::

    python -m farm.sim.loadd --root DIR --pid-file SSHD_PIDFILE [--period 0.1] [model options] [-- SSHD ARGV...]

Every ``--period`` seconds it sums ``utime + stime`` (``/proc/<pid>/stat``, in ``SC_CLK_TCK`` ticks) over the
board's processes, turns the increase into busy cores, steps :class:`farm.sim.loadmodel.LoadModel` and rewrites
the files of :class:`farm.sim.sysfs.SysfsTree`. It exits when the sshd listener is gone (or, with
``--exit-with-parent``, when the process that started it is gone).

Two modes:

* **Supervisor** (what :class:`farm.sim.sshboard.SshBoard` uses): with ``-- ARGV`` after the options, loadd
  makes itself a *child subreaper* (``PR_SET_CHILD_SUBREAPER``) and starts sshd from ARGV. sshd daemonizes, and
  because loadd is a subreaper the daemon, and every process of the board that is later orphaned (a
  ``setsid ... &`` background job whose session ended, a double-forked decoder), is re-parented to loadd
  instead of init. The board is then exactly loadd's process tree: nothing escapes the power accounting, and on
  exit loadd kills and reaps the whole tree, so no process of a stopped board is left behind.
* **Monitor**: without ARGV it only watches the tree under the pid in ``--pid-file`` and leaves it running.

Which CPU time is counted. A process's ``cutime + cstime`` holds the CPU time of the children it has reaped
(and of theirs), so the board's total is ``sum(utime + stime + cutime + cstime)`` over its live processes (in
supervisor mode loadd's own ``utime + stime`` is left out: watching is not the board's load). A process that
exits between two samples is therefore still counted, through its parent. Limitations, all bounded:

* A process reaped by a process *outside* the board (only possible in monitor mode, where an orphan goes to
  init) takes the CPU time it used after the last sample with it. Processes once seen stay counted while they
  live, even after leaving the tree.
* A parent that ignores ``SIGCHLD`` (``SA_NOCLDWAIT``) never accumulates its children's time.
* Reading ``/proc`` is not atomic: a child reaped between reading its parent and reading it briefly
  disappears. The counted total is a high-water mark, so such a dip only delays that CPU time to the next
  sample; it is never counted twice.
* Resolution is one clock tick (10 ms at 100 Hz): at a 0.1 s period one sample's busy cores are +-0.1 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import NamedTuple

from farm.sim.loadmodel import LoadModel, LoadParams
from farm.sim.sysfs import DEFAULT_ENERGY_RANGE_UJ, SysfsTree

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36


class ProcStat(NamedTuple):
    """The fields of ``/proc/<pid>/stat`` the accounting needs (times in clock ticks)."""

    pid: int
    ppid: int
    state: str
    starttime: int
    own_ticks: int
    """utime + stime: this process's own CPU time (all its threads)."""
    child_ticks: int
    """cutime + cstime: CPU time of the children it has reaped."""


def parse_stat(text: str) -> ProcStat:
    """Parse one ``/proc/<pid>/stat`` line; the command name may contain spaces and parentheses."""
    pid_part, _, rest = text.partition(" (")
    fields = rest[rest.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5); field n is fields[n - 3].
    return ProcStat(
        pid=int(pid_part),
        ppid=int(fields[1]),
        state=fields[0],
        starttime=int(fields[19]),
        own_ticks=int(fields[11]) + int(fields[12]),
        child_ticks=int(fields[13]) + int(fields[14]),
    )


def read_stat(pid: int) -> ProcStat | None:
    """``/proc/<pid>/stat`` of a process, or None if it does not exist (any more)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return parse_stat(handle.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


def proc_table() -> dict[int, ProcStat]:
    """Every process on the machine, in ascending pid order (parents are usually read before children)."""
    pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    table: dict[int, ProcStat] = {}
    for pid in pids:
        stat = read_stat(pid)
        if stat is not None:
            table[pid] = stat
    return table


def descendants(table: Mapping[int, ProcStat], root: int) -> set[int]:
    """The pids below ``root`` in ``table`` (children, grandchildren, ...), not ``root`` itself."""
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    stack = list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


class TreeScanner:
    """Reads ``/proc/<pid>/stat`` only where it matters: the tree's processes and pids not seen before.

    A process outside the tree can never join it (a process only enters a tree by being forked inside it), so
    once a pid is known to be someone else's it is skipped until it disappears from ``/proc``. That makes a
    sample cost a ``listdir`` plus a handful of reads instead of one read per process on the machine. (A pid
    that is freed and reused between two samples would be missed; with 0.1 s samples that needs the whole pid
    space to wrap within 0.1 s.)
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self._others: set[int] = set()

    def scan(self, members: Iterable[int]) -> dict[int, ProcStat]:
        """A table of the root, ``members`` (the tree at the last sample) and every new process."""
        pids = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        self._others &= pids
        table: dict[int, ProcStat] = {}
        for pid in sorted(pids - self._others):
            stat = read_stat(pid)
            if stat is not None:
                table[pid] = stat
        tree = descendants(table, self.root) | {self.root} | set(members)
        self._others |= {pid for pid in table if pid not in tree}
        return table


def is_alive(pid: int, starttime: int | None = None) -> bool:
    """True if ``pid`` exists, is not a zombie and (when given) started at ``starttime`` (guards pid reuse)."""
    stat = read_stat(pid)
    return stat is not None and stat.state != "Z" and (starttime is None or stat.starttime == starttime)


class TreeCpu:
    """Cumulative CPU ticks used by the process tree under ``root`` (see the module docstring for the rules)."""

    def __init__(self, root: int, *, count_root_own: bool) -> None:
        self.root = root
        self.count_root_own = count_root_own
        self._members: dict[int, tuple[int, int, int]] = {}  # pid -> (starttime, last ppid, last ticks)
        self._retired = 0
        self._high = 0

    def members(self) -> set[int]:
        """The pids counted at the last sample."""
        return set(self._members)

    def sample(self, table: Mapping[int, ProcStat]) -> int:
        """The tree's cumulative CPU ticks now (monotone non-decreasing)."""
        tree = descendants(table, self.root)
        if self.root in table:
            tree.add(self.root)
        for pid, (start, _, _) in self._members.items():
            stat = table.get(pid)
            if stat is not None and stat.starttime == start:
                tree.add(pid)  # once a board's process, always one (an orphan re-parented outside)
        current: dict[int, tuple[int, int, int]] = {}
        measured = 0
        for pid in tree:
            stat = table[pid]
            ticks = stat.child_ticks + (stat.own_ticks if pid != self.root or self.count_root_own else 0)
            measured += ticks
            current[pid] = (stat.starttime, stat.ppid, ticks)
        for pid, (start, _, ticks) in self._members.items():
            if pid in current and current[pid][0] == start:
                continue
            if not self._reaped_inside(pid, current):
                self._retired += ticks
        self._members = current
        self._high = max(self._high, measured + self._retired)
        return self._high

    def _reaped_inside(self, pid: int, current: Mapping[int, tuple[int, int, int]]) -> bool:
        """Whether a vanished member's time went to a live member (its last parent chain reaches one)."""
        seen: set[int] = set()
        while pid not in seen:
            seen.add(pid)
            ppid = self._members[pid][1] if pid in self._members else None
            if ppid is None:
                return False
            if ppid in current:
                return True
            pid = ppid
        return False


def set_child_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants (Linux ``prctl``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(errno)}")


def reap_children() -> bool:
    """Collect every exited child without blocking (a subreaper inherits them all); False if none is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_tree(root: int, *, grace_s: float = 1.0, reap: bool = False) -> None:
    """SIGTERM everything below ``root``, then SIGKILL what is left after ``grace_s``, until nothing is left.

    ``reap``: ``root`` is this process (a subreaper), so it collects the exit statuses itself.
    """
    deadline = time.monotonic() + grace_s
    sent_term: set[int] = set()
    while True:
        if reap:
            reap_children()
        table = proc_table()
        alive = {pid for pid in descendants(table, root) if table[pid].state != "Z"}
        if not alive:
            return
        if time.monotonic() < deadline:
            signal_all(alive - sent_term, signal.SIGTERM)
            sent_term |= alive
        else:
            signal_all(alive, signal.SIGKILL)
        time.sleep(0.02)


def wait_for_pid_file(path: Path, timeout_s: float, *, reap: bool = False) -> int:
    """The pid written in ``path`` once it names a live process; raises TimeoutError after ``timeout_s``.

    ``reap`` (supervisor mode): the daemonized sshd is our child, so when no child is left before the pid file
    names one, sshd has died (e.g. it daemonizes before binding and then finds its port taken): fail at once.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if reap and not reap_children():
            raise TimeoutError(f"sshd exited before writing {path} (its log says why)")
        try:
            pid = int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            pid = 0
        if pid > 0 and is_alive(pid):
            return pid
        if time.monotonic() > deadline:
            raise TimeoutError(f"no live pid in {path} after {timeout_s:g}s")
        time.sleep(0.01)


class Stop(Exception):
    """Raised by the signal handler to leave the sampling loop."""


def on_signal(signum: int, frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def add_param_options(parser: argparse.ArgumentParser) -> None:
    defaults = LoadParams()
    for field in dataclasses.fields(LoadParams):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=float,
            default=getattr(defaults, field.name),
            help=f"load model: {field.name} (default %(default)s)",
        )


def params_to_argv(params: LoadParams) -> list[str]:
    """The command-line options that give :func:`main` these model parameters."""
    argv: list[str] = []
    for field in dataclasses.fields(LoadParams):
        argv += [f"--{field.name.replace('_', '-')}", repr(float(getattr(params, field.name)))]
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m farm.sim.loadd",
        description="Drive a virtual board's SIMULATED sysfs power/thermal files from its processes' CPU time.",
        epilog="Anything after '--' is the sshd command line to start and supervise (supervisor mode).",
    )
    parser.add_argument("--root", type=Path, required=True, help="the board's virtual root (holds sys/...)")
    parser.add_argument("--pid-file", type=Path, required=True, help="sshd's PidFile")
    parser.add_argument("--period", type=float, default=0.1, help="seconds between updates (default 0.1)")
    parser.add_argument("--start-timeout", type=float, default=10.0, help="seconds to wait for the pid file")
    parser.add_argument("--energy-range-uj", type=int, default=DEFAULT_ENERGY_RANGE_UJ, help="energy counter range")
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="stop the board when the process that started loadd exits"
    )
    add_param_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the daemon; returns the exit status (0 after a normal stop, 3 if sshd could not be started)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in args_list:
        split = args_list.index("--")
        args_list, command = args_list[:split], args_list[split + 1 :]
    args = build_parser().parse_args(args_list)
    if not args.period > 0:
        print("loadd: --period must be > 0", file=sys.stderr)
        return 2
    params = LoadParams(**{f.name: getattr(args, f.name) for f in dataclasses.fields(LoadParams)})
    model = LoadModel(params)
    sysfs = SysfsTree(args.root, energy_range_uj=args.energy_range_uj)
    sysfs.create(model)
    parent = os.getppid()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    supervise = bool(command)
    try:
        if supervise:
            set_child_subreaper()
            args.pid_file.unlink(missing_ok=True)
            starter = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            status = starter.wait(timeout=args.start_timeout)  # sshd's foreground part exits after daemonizing
            if status != 0:
                print(f"loadd: {command[0]} exited with status {status} while starting", file=sys.stderr)
                return 3
        sshd = wait_for_pid_file(args.pid_file, args.start_timeout, reap=supervise)
        sshd_start = read_stat(sshd)
        if sshd_start is None:
            return 3
        account = TreeCpu(os.getpid() if supervise else sshd, count_root_own=not supervise)
        print(f"loadd: watching sshd pid {sshd} ({'supervisor' if supervise else 'monitor'} mode)", file=sys.stderr)
        _loop(args, model, sysfs, account, sshd, sshd_start.starttime, parent, supervise)
    except Stop as stop:
        print(f"loadd: {stop}", file=sys.stderr)
    except (TimeoutError, subprocess.TimeoutExpired) as error:
        print(f"loadd: {error}", file=sys.stderr)
        return 3
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if supervise:
            kill_tree(os.getpid(), reap=True)
    return 0


def _loop(
    args: argparse.Namespace,
    model: LoadModel,
    sysfs: SysfsTree,
    account: TreeCpu,
    sshd: int,
    sshd_start: int,
    parent: int,
    supervise: bool,
) -> None:
    scanner = TreeScanner(account.root)
    last_ticks = account.sample(scanner.scan(()))
    last = time.monotonic()
    next_tick = last + args.period
    while True:
        time.sleep(max(0.0, next_tick - time.monotonic()))
        next_tick += args.period
        now = time.monotonic()
        if next_tick < now:  # fell behind (suspended, overloaded): resynchronise instead of bursting
            next_tick = now + args.period
        if supervise:
            reap_children()
        table = scanner.scan(account.members())
        sshd_stat = table.get(sshd)
        if sshd_stat is None or sshd_stat.state == "Z" or sshd_stat.starttime != sshd_start:
            print(f"loadd: sshd pid {sshd} is gone; stopping", file=sys.stderr)
            return
        if args.exit_with_parent and os.getppid() != parent:
            print(f"loadd: parent {parent} is gone; stopping", file=sys.stderr)
            return
        ticks = account.sample(table)
        model.step((ticks - last_ticks) / CLK_TCK, now - last)
        sysfs.update(model)
        last_ticks, last = ticks, now


if __name__ == "__main__":
    sys.exit(main())
