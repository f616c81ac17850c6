"""A decode in one round trip on a device with a POSIX shell: the script that measures it, and its reply.

Why one script: a job used to cost about 11 commands over the link (spawn the power sampler, wait for its first
samples, spawn the thermal sampler, decode, kill both, wait, read both files back, read the battery twice, remove
the folder), about 137 ms per job over SSH. Here the decode script itself reads the battery and the thermal zones,
takes the opening power readings, starts both samplers, runs the decoder, takes the closing readings, stops the
samplers, hashes the output and prints everything in one reply, so a warm job is one exec channel.

The measurement conventions do not change (docs/measurement.md): samples are ``date +%s%N`` on the device, the
clock the decode window is stamped with; the sampler runs at the suite's rate; the window is bracketed by
readings on both sides (two for an energy counter, whose power sits between two readings). The bracketing
readings are taken by the script right before the decoder starts and right after it ends, rather than by
waiting for the sampler's next tick (up to one period at each end); with a meter, the window's own stamps are
the last opening and the first closing reading's ``date`` (the same call the stamp used to be, one process
fewer at each end), so the window starts and ends exactly on a sample.

Every process the script starts in the background records its pid under the job folder, so a tether's watchdog
(docs/tethers.md) kills it on a stop. After the decoder ends the script writes no file (the closing readings go
to a variable), so a watchdog removing the run folder at that moment cannot race with it.
Untrusted text reaches the script only as positional arguments; lists are one argument each, joined by newlines,
so a path with a newline is refused here before it reaches a device.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from farm.devices.base import DecodeOutcome, DecodeRequest
from farm.devices.posix_power import THERMAL_MAX_HZ
from farm.power import sampler
from farm.power.battery import BatteryState, parse_state
from farm.power.meters import Meter
from farm.power.sampler import PowerSample
from farm.provenance import runtime_line, runtime_of

# $1 job dir, $2 decoder timeout (s), $3 a per-call random marker, $4 the sampler script, $5 the samplers' bounded
# life (s), $6 the power sampler's period (s, "-": no meter), $7 opening/closing readings (1, or 2 for a counter),
# $8 the thermal sampler's period, $9 thermal zone files, $10 power nodes, $11 battery files (status, capacity,
# temp), $12 earlier job folders to remove first: each list one argument, newline-separated. Then the decoder argv.
# Every section header starts on a fresh line with the marker, so nothing the decoder writes (stats without a
# final newline, or lines that imitate headers) can be mistaken for the farm's own report. A sample file whose
# last line a kill cut short runs into the next header: the parser drops that partial line (no `tail` needed).
# Each external command costs a fork and exec on the device (milliseconds on a loaded board), so the script runs
# as few as it can: the helpers set $s rather than print (no $(...) subshell), the shell's own `read` reads the
# nodes and prints the sample files (a last line that a kill cut short fails `read` and is dropped), and with a
# power meter the same sampler reads the thermal zones in the same line instead of a second sampler.
DECODE_SCRIPT = r"""
d=$1 t=$2 m=$3 S=$4 life=$5 pp=$6 need=$7 tp=$8 zs=$9
shift 9
pn=$1 bf=$2 old=$3
shift 3
nl='
'
ws=$IFS
set -f
IFS=$nl; for o in $old; do rm -rf -- "$o"; done; IFS=$ws
mkdir -p "$d" && cd "$d" || exit 125
if [ -e out.y4m ] || [ -e stats.jsonl ]; then rm -f out.y4m stats.jsonl; fi
tmo=; command -v timeout >/dev/null 2>&1 && tmo=1
temps() { s=; IFS=$nl; for f in $zs; do v=; { read -r v <"$f"; } 2>/dev/null; s="$s ${v:--}"; done; IFS=$ws; }
values() { s=; IFS=$nl; for f in $bf; do v=; { read -r v <"$f"; } 2>/dev/null; s="$s${v:--}$nl"; done; IFS=$ws; }
readings() { s=; i=0; while [ "$i" -lt "$need" ]; do
  l=$(date +%s%N); [ "$i" = 0 ] && first=$l; last=$l
  IFS=$nl; for f in $pn; do v=; { read -r v <"$f"; } 2>/dev/null; l="$l ${v:--}"; done
  IFS=$ws; s="$s$l$nl"; i=$((i + 1)); done; }
sampler() {
  o=$1 p=$2; IFS=$nl; set -- $3; IFS=$ws
  set -- sh -c "$S" farm-sampler "$o" "$p" "$@"
  if [ -n "$tmo" ]; then set -- timeout "$life" "$@"; fi
  "$@" </dev/null >/dev/null 2>&1 &
  echo "$!" >"$o.pid"
}
lines() { if [ -f "$1" ]; then while IFS= read -r l; do echo "$l"; done <"$1"; fi; }
stop() { if [ -f "$1.pid" ]; then read -r p <"$1.pid"; kill -KILL "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; fi; }
temps; z0=$s; values; b0=$s; r0=; r1=
if [ "$pp" != - ]; then sampler power.samples "$pp" "$pn${zs:+$nl$zs}"
elif [ -n "$zs" ]; then sampler thermal.samples "$tp" "$zs"; fi
if [ -n "$tmo" ]; then set -- timeout -k 2 "$t" "$@"; fi
if [ "$pp" != - ]; then readings; r0=$s; t0=$last; else t0=$(date +%s%N); fi
"$@" >decoder.stdout 2>decoder.stderr </dev/null &
echo $! >decoder.pid
wait $!
rc=$?
if [ "$pp" != - ]; then readings; r1=$s; t1=$first; stop power.samples; else t1=$(date +%s%N); fi
stop thermal.samples
temps; z1=$s; values; b1=$s
echo "@@$m timing $t0 $t1 $rc"
echo "@@$m temps_start$z0"
echo "@@$m temps_end$z1"
if [ -f out.y4m ]; then echo "@@$m sha" $(sha256sum <out.y4m; wc -c <out.y4m); fi
if [ "$rc" != 0 ]; then set -- $(df -Pk . 2>/dev/null | tail -n 1); echo "@@$m free_kb ${4:--}"; fi
echo "@@$m power"
if [ -n "$r0" ]; then echo "$r0"; lines power.samples; fi
echo "@@$m power_end"
if [ -n "$r1" ]; then echo "$r1"; fi
echo "@@$m thermal"
lines thermal.samples
echo "@@$m battery_start"
echo "$b0"
echo "@@$m battery_end"
echo "$b1"
echo "@@$m stats"
if [ -f stats.jsonl ]; then cat stats.jsonl; fi
echo
echo "@@$m stderr"
if [ -s decoder.stderr ]; then tail -c 4000 decoder.stderr; fi
"""

SECTIONS = ("power", "power_end", "thermal", "battery_start", "battery_end", "stats", "stderr")


@dataclass(frozen=True)
class Sampling:
    """What the script samples besides the decode: the power meter (None: none), battery files, and how."""

    meter: Meter | None
    battery_nodes: tuple[str, ...]
    hz: float
    lifetime_s: float


@dataclass
class Reply:
    """The script's reply split up: header fields and the sections' lines."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    body: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in SECTIONS})


def decode_argv(request: DecodeRequest, sampling: Sampling, marker: str) -> list[str]:
    """The argv of one measured decode (``sh -c`` with the script and its positional arguments)."""
    meter = sampling.meter
    power_period = "-" if meter is None else sampler.period(sampling.hz)
    need = 2 if meter is not None and meter.is_counter else 1
    return [
        "sh", "-c", DECODE_SCRIPT, "farm-decode", request.job_dir, f"{request.timeout_s:g}", marker,
        sampler.SAMPLER_SCRIPT, f"{sampling.lifetime_s:g}", power_period, str(need),
        sampler.period(min(sampling.hz, THERMAL_MAX_HZ)), _lines(request.zones),
        _lines(meter.nodes if meter is not None else ()), _lines(sampling.battery_nodes), _lines(request.discard),
        *request.argv,
    ]  # fmt: skip


def new_marker() -> str:
    return secrets.token_hex(8)


def _lines(items: Sequence[str]) -> str:
    for item in items:
        if "\n" in item or not item:
            raise ValueError(f"device path {item!r} is empty or has a newline: refused")
    return "\n".join(items)


def split_reply(text: str, marker: str) -> Reply:
    """Header lines (before the first section) by name, and each section's lines."""
    head = f"@@{marker} "
    reply = Reply()
    section = ""
    for line in text.splitlines():
        at = line.find(head)
        if at > 0:  # a header run into a line without its newline: a cut sample, or the decoder's last stats line
            if section in ("stats", "stderr"):
                reply.body[section].append(line[:at])
            line = line[at:]
        if line.startswith(head):
            parts = line[len(head) :].split()
            if len(parts) == 1 and parts[0] in SECTIONS:
                section = parts[0]
            elif parts and section == "":
                reply.fields[parts[0]] = parts[1:]
            continue
        if section:
            reply.body[section].append(line)
    return reply


def parse_decode(text: str, shell_status: int | None, marker: str, timeout_s: float | None = None) -> DecodeOutcome:
    """Parse the decode script's report. A decoder's bad stats are noted, never fatal to the timing."""
    return outcome_of(split_reply(text, marker), shell_status, timeout_s)


def outcome_of(reply: Reply, shell_status: int | None, timeout_s: float | None) -> DecodeOutcome:
    """The decode's outcome from the script's reply (``shell_status``: the script's own exit status)."""
    timing = [_int(v) for v in reply.fields.get("timing", [])]
    start, end, status = timing if len(timing) == 3 else (None, None, None)
    sha_fields = [f for f in reply.fields.get("sha", []) if f != "-"]  # sha256sum names stdin "-"
    sha, size = (
        (sha_fields[0], _int(sha_fields[1])) if len(sha_fields) == 2 and len(sha_fields[0]) == 64 else (None, None)
    )
    free = reply.fields.get("free_kb", [])
    free_kb = _int(free[0]) if len(free) == 1 else None
    if status is None:
        status = 125 if shell_status in (None, 0) else shell_status
    frame_times, stats_error = parse_stats(reply.body["stats"])
    runtime, runtime_error = runtime_of(reply.body["stats"])
    return DecodeOutcome(
        exit_status=status,
        timed_out=_ran_out(status, start, end, timeout_s),
        start_ns=start,
        end_ns=end,
        output_sha=sha,
        output_bytes=size,
        frame_times_ns=frame_times,
        stderr_tail="\n".join(reply.body["stderr"])[-4000:],
        stats_error=stats_error or runtime_error,
        temp_start_c=hottest_millidegrees(reply.fields.get("temps_start", [])),
        temp_end_c=hottest_millidegrees(reply.fields.get("temps_end", [])),
        free_bytes=None if free_kb is None else free_kb * 1024,
        runtime=runtime,
    )


def parse_power(reply: Reply, meter: Meter | None, zones: int = 0) -> tuple[PowerSample, ...]:
    """Watts from the opening readings, the sampler's lines and the closing readings, in time order.

    With thermal ``zones`` the sampler's lines carry the zones' values after the meter's: they are cut off here.
    """
    if meter is None:
        return ()
    width = 1 + len(meter.nodes)
    rows = [line.split() for line in [*reply.body["power"], *reply.body["power_end"]]]
    rows = sorted((f for f in rows if len(f) in (width, width + zones) and f[0].isdigit()), key=lambda f: int(f[0]))
    text = "".join(" ".join(f[:width]) + "\n" for f in rows)
    return tuple(sampler.parse_samples(meter, text))


def parse_temp_trace(reply: Reply, zones: int, meter: Meter | None = None) -> tuple[tuple[float, float], ...]:
    """(device-clock seconds, hottest zone's degrees C) of each thermal sample, in time order: the thermal
    sampler's lines, or the power sampler's lines past the meter's own values."""
    if not zones:
        return ()
    lines = list(reply.body["thermal"])
    if meter is not None:
        skip = 1 + len(meter.nodes)
        rows = [line.split() for line in reply.body["power"]]
        lines += [" ".join([f[0], *f[skip:]]) for f in rows if len(f) == skip + zones]
    rows_ = sampler.raw_rows(zones, "".join(f"{line}\n" for line in lines))
    return tuple(sorted((t, max(values) / 1000.0) for t, values in rows_ if values))


def parse_battery(reply: Reply, section: str, nodes: int) -> BatteryState | None:
    return parse_state([line for line in reply.body[section] if line]) if nodes else None


def hottest_millidegrees(tokens: Sequence[str]) -> float | None:
    """Degrees C of the hottest readable zone from sysfs millidegree values ("-" = unreadable)."""
    values = [int(t) / 1000.0 for t in tokens if t.lstrip("-").isdigit()]
    return max(values) if values else None


def _ran_out(status: int, start: int | None, end: int | None, timeout_s: float | None) -> bool:
    """124/137 mean a timeout only if the time really ran out: an OOM-killed decoder also exits 137."""
    if status not in (124, 137):
        return False
    if timeout_s is None or start is None or end is None:
        return True
    return (end - start) / 1e9 >= timeout_s * 0.98


def parse_stats(lines: Sequence[str]) -> tuple[tuple[int, ...], str | None]:
    """Per-frame decode times from the decoder contract's JSON lines, in frame order."""
    times: dict[int, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if runtime_line(rec):
                continue  # the runtime report (farm.provenance.runtime_of)
            frame, ns = int(rec["frame"]), int(rec["decode_ns"])
        except (ValueError, KeyError, TypeError):
            return (), f'stats line {lineno}: expected {{"frame": i, "decode_ns": n}}'
        if ns < 0 or frame < 0 or frame in times:
            return (), f"stats line {lineno}: bad frame index or negative time"
        times[frame] = ns
    if times and sorted(times) != list(range(len(times))):
        return (), "stats: frame indices are not 0..n-1"
    return tuple(times[i] for i in range(len(times))), None


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
