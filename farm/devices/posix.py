"""A device with a POSIX shell (this machine, a Linux board over SSH, an Android phone over ADB).

Everything is built from the transport's five verbs and small fixed ``sh`` scripts. Untrusted text (paths,
decoder arguments) only ever reaches a script as a positional argument, never pasted into its source, so a
file name cannot become shell syntax on any device. Scripts stay within what GNU coreutils, busybox and toybox
all provide.
"""

from __future__ import annotations

import dataclasses
import posixpath
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from farm.config.inventory import ChargerSuspend, PowerSettings
from farm.devices import posix_decode, posix_power
from farm.devices.base import (
    AppRef,
    DecodeOutcome,
    DecodeRequest,
    MeasuredDecode,
    PowerMeter,
    PowerProbe,
    TransferCounter,
    measure_around,
)
from farm.devices.posix_decode import hottest_millidegrees, parse_decode, parse_stats
from farm.errors import CommandFailed, InfraError
from farm.power import battery, probe
from farm.power.battery import BatteryState, Gauge
from farm.power.instrument import Instrument, Window
from farm.power.sampler import PowerSample
from farm.power.sysfs import SysfsInstrument
from farm.transports.base import AWAIT_SESSION_LEADER, Background, Held, Transport

__all__ = ["DecodeOutcome", "PosixDevice", "TransferCounter", "hottest_millidegrees", "parse_decode", "parse_stats"]

# For each file argument print "<index> <sha256>  -" if it exists (one round trip). Hashing stdin keeps
# sha256sum from escaping odd names in its output; indices keep names out of the output altogether. printf is
# the shell's own, so a file costs the device one process (sha256sum).
_HASH_SCRIPT = r"""
i=0
for f do
  if [ -f "$f" ]; then printf '%s ' "$i"; sha256sum <"$f"; fi
  i=$((i + 1))
done
"""

# Move a pushed temp file into place only if its sha256 on the device is what the host sent.
_COMMIT_SCRIPT = r"""
tmp=$1; dst=$2; want=$3
got=$(sha256sum <"$tmp"); got=${got%% *}
if [ "$got" != "$want" ]; then rm -f "$tmp"; echo "sha256 mismatch after push: $got" >&2; exit 1; fi
chmod "$4" "$tmp" && mv -f "$tmp" "$dst"
"""

# Kill what a decode left in job folder $1: the decoder, the samplers and the decode script (each has a *.pid).
_KILL_JOB_SCRIPT = r"""
for f in "$1"/*.pid; do
  p=; { read -r p <"$f"; } 2>/dev/null
  case $p in '' | *[!0-9]*) continue ;; esac
  kill -KILL "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null
done
exit 0
"""

# Tether, part (a): $1 run dir, $2 the watchdog script. Starts the watchdog in a session of its own (so a device
# that kills this command's process group when its stream closes spares it; see SPAWN_SCRIPT) with this command's
# stdin, the link, as its own; waits until it leads that session, says so, then reads stdin until the link ends.
# A background job's stdin is /dev/null unless redirected, hence the copy on fd 3.
_TETHER_SCRIPT = (
    r"""
d=$1 w=$2
mkdir -p "$d" || exit 1
exec 3<&0
setsid sh -c "$w" farm-watchdog "$d" <&3 3<&- >/dev/null 2>&1 &
p=$!"""
    + AWAIT_SESSION_LEADER
    + """echo "tethered $p"
exec cat >/dev/null 2>&1 3<&-
"""
)

# Tether, part (b): $1 run dir. Its stdin is the link: reading it blocks until the link ends (end of input, or an
# error once the device closed the stream), so the watchdog costs the device nothing while the run goes on: no
# polling, no process started until then. Then it kills every process group recorded under the run dir, twice (in
# case a pid file appeared while the first round ran), and removes the run dir.
_WATCHDOG_SCRIPT = r"""
d=$1
while read -r _; do :; done 2>/dev/null
exec </dev/null
for round in 1 2; do
  find "$d" -name '*.pid' -type f 2>/dev/null | while IFS= read -r f; do
    p=; { read -r p <"$f"; } 2>/dev/null
    case $p in '' | *[!0-9]*) continue ;; esac
    kill -KILL "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null
  done
done
rm -rf "$d"
"""

# $1 a watchdog's pid, $2 how many tenths of a second to wait for it to end.
_SETTLE_SCRIPT = r"""
i=0
while kill -0 "$1" 2>/dev/null && [ "$i" -lt "$2" ]; do sleep 0.1; i=$((i + 1)); done
exit 0
"""

# Record this process (the session leader SPAWN_SCRIPT made) in $1, then become argv: the recorded pid is the
# process group a tether's watchdog kills.
_RECORD_SCRIPT = r"""
f=$1; shift
mkdir -p "${f%/*}" && echo "$$" >"$f" || exit 126
exec "$@"
"""

# Free space (KiB) of the file system holding $1, or of its nearest existing parent. -P: one line per file system.
_FREE_SCRIPT = r"""
p=$1
while [ ! -e "$p" ]; do
  case $p in */*) p=${p%/*} ;; *) p=. ;; esac
  [ -n "$p" ] || p=/
done
df -Pk "$p" | { read -r _; read -r l; echo "$l"; }
"""

# What the device is, in as few processes as the shell allows (a phone pays several ms for each): one uname,
# one getconf, and the shell's own ``read`` for /proc/cpuinfo and the thermal zones' files.
_INFO_SCRIPT = r"""
set -- $(uname -srm)
echo "kernel=$1 $2"
echo "machine=$3"
echo "cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)"
while IFS= read -r l; do
  case $l in 'model name'*) echo "cpu=${l#*: }"; break ;; esac
done 2>/dev/null </proc/cpuinfo
one() { v=; { IFS= read -r v <"$1"; } 2>/dev/null; return 0; }
for z in /sys/class/thermal/thermal_zone*; do
  if [ -r "$z/temp" ]; then one "$z/type"; t=$v; one "$z/temp"; echo "thermal=$z/temp $t $v"; fi
  for t in "$z"/trip_point_*_type; do
    if [ -r "$t" ]; then one "$t"; [ "$v" = passive ] && one "${t%_type}_temp" && echo "passive_trip=$v"; fi
  done
done
exit 0
"""

_TEMP_SCRIPT = r"""
for f do v=; { IFS= read -r v <"$f"; } 2>/dev/null; echo "${v:--}"; done
"""

# $1 the workdir, then folders relative to it: the cache, the job root and those, made by one mkdir.
_PREPARE_SCRIPT = r"""
w=$1; shift; n=$#
for s do set -- "$@" "$w/$s"; done
shift "$n"
mkdir -p -- "$w/cas" "$w/jobs" "$@"
"""


@dataclass
class PosixDevice:
    """One device with a POSIX shell. ``workdir`` holds its content-addressed cache and job folders."""

    device_id: str
    transport: Transport
    workdir: str
    runtime: dict[str, str] = field(default_factory=dict)
    command_timeout: float = 60.0
    counter: TransferCounter = field(default_factory=TransferCounter)
    unfinished: set[str] = field(default_factory=set)
    """Temp files of pushes that did not complete (removed by the next ``stage``)."""
    gauge: Gauge | None = None
    """The battery fuel gauge found by ``probe_power`` (phones), read by ``battery``."""
    charging_advice: str = "set power.charger_suspend on a rooted phone, or unplug it"
    power_sampled_on: str = "on device"
    tethered_run: str | None = None
    """The run folder of the open tether: ``spawn`` records each process there so the watchdog can kill it."""

    # -- basics ---------------------------------------------------------------------------------------
    def sh(self, script: str, *args: str, timeout: float | None = None, name: str | None = None) -> str:
        """Run a fixed script with positional args and return its stdout.

        Raises CommandFailed when the script ran and failed (it would fail the same way again, so it must not be
        retried as a dropped link), and TransportError (from the transport) only when the link itself failed.
        ``name`` says what the script is in that error; by default its first line.
        """
        res = self.transport.run(["sh", "-c", script, "farm", *args], timeout=timeout or self.command_timeout)
        if not res.ok:
            what = name or script_name(script)
            raise CommandFailed(self.device_id, what, res.exit_status, res.error_tail(400), timed_out=res.timed_out)
        return res.text()

    def prepare(self, *subdirs: str) -> None:
        """Create the workdir's cache and any session folders (relative to the workdir) in one round trip."""
        self.sh(_PREPARE_SCRIPT, self.workdir, *subdirs, name="mkdir -p")

    def info(self) -> dict[str, str]:
        props: dict[str, str] = {}
        for line in self.sh(_INFO_SCRIPT).splitlines():
            key, _, value = line.partition("=")
            if key == "thermal":
                props.setdefault("thermal_zones", "")
                props["thermal_zones"] += ("," if props["thermal_zones"] else "") + value.split(" ", 1)[0]
            elif key == "passive_trip" and value.strip().isdigit():
                trip = str(int(value) / 1000.0)
                props["passive_trip_c"] = min(props.get("passive_trip_c", trip), trip, key=float)
            elif key:
                props[key] = value.strip()
        return props

    def check_target(self, target: str, props: dict[str, str]) -> None:
        """Refuse a device whose machine cannot run ``target`` (devices.yaml naming the wrong board)."""
        machine = props.get("machine", "")
        arch = target.partition("-")[2]
        if machine and not _same_arch(arch, machine):
            raise InfraError(f"devices.yaml says target {target} but `uname -m` says {machine}")

    def temperatures(self, zones: Sequence[str]) -> list[float | None]:
        """Degrees Celsius of each thermal zone file (millidegrees on Linux); None where unreadable."""
        if not zones:
            return []
        out: list[float | None] = []
        for token in self.sh(_TEMP_SCRIPT, *zones).split():
            try:
                out.append(int(token) / 1000.0)
            except ValueError:
                out.append(None)
        return out

    # -- content-addressed staging --------------------------------------------------------------------
    def present(self, paths: Sequence[str]) -> dict[str, str]:
        """sha256 of those device files that exist, computed on the device."""
        found: dict[str, str] = {}
        for chunk in _chunks(list(paths), 200):
            for line in self.sh(_HASH_SCRIPT, *chunk).splitlines():
                index, digest = [*line.split(), "", ""][:2]
                if index.isdigit() and int(index) < len(chunk) and len(digest) == 64:
                    found[chunk[int(index)]] = digest
        return found

    def stage(self, files: Sequence[tuple[Path, str, str]]) -> None:
        """Ensure each (host file, device path, sha256) is on the device; push only what is missing or wrong.

        Every pushed file is verified by sha256 on the device before it is moved into place, so a
        half-written or corrupted copy can never be mistaken for a cached one.
        """
        if self.unfinished:  # a push cut by a dropped link left its temp file: ours, so remove it now
            self.sh('rm -f -- "$@"', *sorted(self.unfinished))
            self.unfinished.clear()
        have = self.present([remote for _, remote, _ in files])
        for local, remote, digest in files:
            if have.get(remote) == digest:
                self.counter.reused_files += 1
                continue
            self.sh('mkdir -p "$1"', posixpath.dirname(remote))
            tmp = f"{remote}.part.{secrets.token_hex(4)}"  # two runs staging the same file never share it
            self.unfinished.add(tmp)
            sent = self.transport.push(local, tmp)
            mode = "755" if local.stat().st_mode & 0o111 else "644"
            self.sh(_COMMIT_SCRIPT, tmp, remote, digest, mode)
            self.unfinished.discard(tmp)
            self.counter.pushed_bytes += sent
            self.counter.pushed_files += 1

    # -- decoding -------------------------------------------------------------------------------------
    def install_app(self, app: AppRef) -> None:
        """A shell device runs executables, not apps: a bundle target with an app is for iOS."""
        raise InfraError(f"{self.device_id}: cannot install app {app.bundle_id}: apps are for iOS targets")

    def decode(
        self, argv: Sequence[str], job_dir: str, timeout: float, zones: Sequence[str] = (), app: AppRef | None = None
    ) -> DecodeOutcome:
        """Decode once, no power meter; ``zones`` are read just before and after the decoder, in the same round trip."""
        request = DecodeRequest(tuple(argv), job_dir, timeout, tuple(zones))
        return self.measured_decode(request, None, Window(job_dir, "decode", 1.0, timeout + 120)).outcome

    def measured_decode(self, request: DecodeRequest, meter: PowerMeter | None, window: Window) -> MeasuredDecode:
        """Decode, power and thermal samples, battery before and after, and the hash: one command on the device.

        An instrument the shell cannot sample itself (not a sysfs meter of this device) measures around the
        decode with its own commands instead (:func:`farm.devices.base.measure_around`).
        """
        if meter is not None and not isinstance(meter, Instrument):
            raise TypeError(f"{type(meter).__name__} is not a power instrument (farm.power.instrument.Instrument)")
        own = meter.meter if isinstance(meter, SysfsInstrument) and meter.shell is self else None
        if meter is not None and own is None:
            return measure_around(self, request, meter, window)
        nodes = battery.state_nodes(self.gauge) if self.gauge is not None else ()
        sampling = posix_decode.Sampling(own, nodes, window.hz, window.lifetime_s)
        marker = posix_decode.new_marker()
        res = self.transport.run(posix_decode.decode_argv(request, sampling, marker), timeout=request.timeout_s + 30)
        if res.timed_out:
            why = "decode exceeded its timeout on the link"
            return MeasuredDecode(DecodeOutcome(None, True, None, None, None, None, (), why), (), (), None, None)
        reply = posix_decode.split_reply(res.text(), marker)
        outcome = posix_decode.outcome_of(reply, res.exit_status, request.timeout_s)
        if out_of_space(outcome):
            free = "?" if outcome.free_bytes is None else f"{outcome.free_bytes / 1e6:.1f}"
            outcome = dataclasses.replace(
                outcome, failure=f"no space left on the device ({free} MB free in {self.workdir})"
            )
        temps = posix_decode.parse_temp_trace(reply, len(request.zones), own)
        return MeasuredDecode(
            outcome,
            posix_decode.parse_power(reply, own, len(request.zones)),
            tuple(c for _, c in temps),
            posix_decode.parse_battery(reply, "battery_start", len(nodes)),
            posix_decode.parse_battery(reply, "battery_end", len(nodes)),
            temps,
        )

    def kill_job(self, job_dir: str) -> None:
        """Kill whatever a previous decode in ``job_dir`` left running (no error if nothing is left)."""
        self.sh(_KILL_JOB_SCRIPT, job_dir)

    def pull(self, remote: str, local: Path) -> int:
        return self.transport.pull(remote, local)

    def remove(self, path: str) -> None:
        self.sh('rm -rf -- "$1"', path)

    def free_bytes(self, path: str) -> int | None:
        """``df -Pk`` on the device; None when it has no df or prints something unexpected."""
        try:
            fields = self.sh(_FREE_SCRIPT, path, name="df -Pk").split()
        except CommandFailed:
            return None
        # Filesystem 1024-blocks Used Available Capacity Mounted-on
        return int(fields[3]) * 1024 if len(fields) >= 6 and fields[3].isdigit() else None

    # -- background processes -------------------------------------------------------------------------
    def spawn(self, argv: Sequence[str]) -> Background:
        """Start in the background; while tethered, the process records its group under the run folder."""
        if self.tethered_run is None:
            return self.transport.spawn(argv)
        pid_file = f"{self.tethered_run}/pids/spawn-{secrets.token_hex(6)}.pid"
        return self.transport.spawn(["sh", "-c", _RECORD_SCRIPT, "farm-record", pid_file, *argv])

    def tether(self, run_dir: str) -> ShellTether:
        """Hold a shell on the link (part a) with a detached watchdog (part b) that cleans ``run_dir`` up.

        Bound after the controller dies: the link's end reaches the device (at once for a local device or a TCP
        peer whose kernel closes the socket; after the sshd/adbd keepalive otherwise), then the kills at once.
        Decoders record themselves in ``decoder.pid`` of their job folder, and ``spawn`` records everything else,
        so both must live under ``run_dir``.
        """
        argv = ["sh", "-c", _TETHER_SCRIPT, "farm-tether", run_dir, _WATCHDOG_SCRIPT]
        held = self.transport.hold(argv, timeout=self.command_timeout)
        word, _, pid = held.first_line.partition(" ")
        if word != "tethered" or not pid.isdigit():
            held.close()
            raise CommandFailed(self.device_id, "tether", None, f"unexpected answer {held.first_line[:200]!r}")
        self.tethered_run = run_dir
        return ShellTether(self, held, run_dir, int(pid))

    def kill(self, proc: Background) -> None:
        self.transport.kill(proc)

    def read_text(self, path: str) -> str:
        return self.sh('cat -- "$1" 2>/dev/null; exit 0', path)

    def close(self) -> None:
        self.transport.close()

    def set_charging(self, control: ChargerSuspend, enabled: bool) -> bool:
        """Boards run from their supply: there is no charger to control (phones override this)."""
        return False

    # -- power: instruments (farm.power) sampled through this device's shell ----------------------------------
    POWER_SOURCES: ClassVar[tuple[str, ...]] = ("sysfs",)
    """The power sources ``power.meter: auto`` tries, in order (farm/power/sources): a board's sysfs meters."""

    def probe_power(self, settings: PowerSettings, platform: str, charger_suspended: bool) -> PowerProbe:
        """``platform`` is kept for callers but not consulted: devices.yaml and ``POWER_SOURCES`` decide."""
        found = probe.probe(self, settings, auto=self.POWER_SOURCES, charger_suspended=charger_suspended)
        self.gauge = found.gauge
        return PowerProbe(found.instrument, found.reason)

    def battery(self) -> BatteryState | None:
        return posix_power.read_battery(self, self.gauge)

    def power_window(
        self, meter: PowerMeter | None, zones: Sequence[str], folder: str, name: str, hz: float, lifetime_s: float,
        during: Callable[[], Any],
    ) -> tuple[list[PowerSample], list[float]]:  # fmt: skip
        if meter is not None and not isinstance(meter, Instrument):
            raise TypeError(f"{type(meter).__name__} is not a power instrument (farm.power.instrument.Instrument)")
        return posix_power.window(self, meter, zones, Window(folder, name, hz, lifetime_s), during)


@dataclass
class ShellTether:
    """A held shell on the device's link plus its watchdog's pid (``watchdog_pid``: tests look for it)."""

    device: PosixDevice
    held: Held
    run_dir: str
    watchdog_pid: int

    def alive(self) -> bool:
        return self.held.alive()

    def close(self) -> None:
        """End the held shell: the watchdog sees the link end at once and cleans up. Never raises."""
        if self.device.tethered_run == self.run_dir:
            self.device.tethered_run = None
        self.held.close()

    def settle(self, timeout_s: float) -> None:
        """Wait until the watchdog is gone (it exits right after removing the run folder), at most ``timeout_s``."""
        self.device.sh(_SETTLE_SCRIPT, str(self.watchdog_pid), str(max(1, int(timeout_s * 10))), name="settle")


NO_SPACE = ("No space left on device", "ENOSPC", "Disk quota exceeded")
LOW_SPACE_BYTES = 1 << 20


def out_of_space(outcome: DecodeOutcome) -> bool:
    """A failed decode that said ENOSPC, or that left less than 1 MiB free: a full disk, not a broken decoder.

    Decoders do not always print strerror (a bare exit 1 from a failed fwrite), hence the free-space check; a
    failed decode's partial output is still on the disk, so a full one reads as (nearly) 0 free.
    """
    if outcome.exit_status in (0, None) or outcome.timed_out:
        return False
    said = any(text in outcome.stderr_tail for text in NO_SPACE)
    return said or (outcome.free_bytes is not None and outcome.free_bytes < LOW_SPACE_BYTES)


_ARCH_ALIASES = ({"x86_64", "amd64"}, {"aarch64", "arm64"}, {"armv7", "armv7l", "armhf"}, {"x86", "i386", "i686"})


def script_name(script: str) -> str:
    """A fixed script's first line, to name it in a CommandFailed (the scripts are anonymous strings)."""
    first = next((line.strip() for line in script.splitlines() if line.strip()), "sh")
    return f"`{first[:60]}`"


def _same_arch(arch: str, machine: str) -> bool:
    return arch == machine or any(arch in group and machine in group for group in _ARCH_ALIASES)


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
