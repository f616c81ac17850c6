"""The on-device power sampler: a POSIX sh loop started before a decode and killed after it.

Sampling on the device (rather than polling over SSH/ADB) keeps the sample rate independent of link latency
and keeps the samples on the same clock as the decode window. The loop is a fixed script; the output path and
the node paths are positional arguments, so no path can become shell syntax. Each sample costs two short
processes (``date``, ``sleep``); the nodes are read with the shell's ``read`` builtin, never ``cat``. Raw
numbers are written as they are and converted on the host (:func:`parse_samples`), where units, sign and
counter wrap-around are known.

Clock: ``date +%s%N``, i.e. CLOCK_REALTIME in nanoseconds. It is the clock the decode script in
``farm.devices.posix`` stamps the decode window with, so samples and window line up without any offset
estimate; a monotonic clock with ns resolution is not reachable from plain sh on GNU, busybox and toybox alike
(``/proc/uptime`` only has 10 ms). The cost: an NTP *step* during a measurement distorts it (slewing is
harmless). A ``date`` without ``%N`` (BSD, busybox built without it) makes the sampler write one ``#`` line
and exit, so that power is reported missing rather than computed on a 1 s clock.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from farm.power.meters import Meter

CLOCK = "realtime_ns"
"""The sampler's timestamp clock (CLOCK_REALTIME, ns, from ``date +%s%N``); record it with every result."""

CLOCK_COMMAND = "date +%s%N"

# $1 output file (truncated), $2 period in seconds, $3... node paths. One line per sample:
#   <realtime ns> <raw value of node 1> ... <raw value of node n>
# with "-" for a node that could not be read. The line is written with one builtin echo (one write), so a
# kill lands between lines or leaves at most one partial last line; echo, not printf, because printf is not
# a builtin in Android's mksh, and the line starts with digits so echo cannot mistake it for an option. A
# sleep that refuses a fractional period (very old busybox) falls back to 1 s rather than spinning.
SAMPLER_SCRIPT = r"""
o=$1; p=$2; shift 2
: >"$o" || exit 1
t=$(date +%s%N)
case $t in '' | *[!0-9]*)
  echo "# farm-sampler: 'date +%s%N' gives no nanoseconds here ($t)" >>"$o"; exit 3 ;;
esac
echo "# farm-sampler clock=realtime_ns period=$p nodes=$#" >>"$o"
while :; do
  l=$(date +%s%N)
  for n do
    v=; { read -r v <"$n"; } 2>/dev/null
    l="$l ${v:--}"
  done
  echo "$l" >>"$o"
  sleep "$p" 2>/dev/null || { p=1; sleep 1; }
done
"""


# $1 sampler output, $2 tries (50 ms apart), $3 lines wanted: "+N" = N more sample lines than there are now,
# else an absolute count (the header is line 1). Returns when they are there, or after the tries (never fails).
# Spawning over ADB/SSH returns before the loop has run, and a starved sampler may lag: waiting for real samples
# on both sides of a decode, rather than sleeping a fixed margin, is what makes the window always bracketed.
_SAMPLES_SCRIPT = r"""
n=$(wc -l <"$1" 2>/dev/null); n=${n:-0}
case $3 in +*) want=$((n + ${3#+})) ;; *) want=$3 ;; esac
i=0
while [ "$i" -lt "$2" ]; do
  [ "$n" -ge "$want" ] && exit 0
  sleep 0.05 2>/dev/null || sleep 1
  n=$(wc -l <"$1" 2>/dev/null); n=${n:-0}
  i=$((i + 1))
done
exit 0
"""


def await_samples_argv(out_path: str, *, first: int = 0, more: int = 0, wait_s: float = 5.0) -> list[str]:
    """argv that returns once the sampler writing ``out_path`` has ``first`` samples, or ``more`` samples beyond
    those it has now (whichever is given), or after ``wait_s``. It never fails: a sampler that does not keep up
    shows up as samples not covering the window (power missing), never as a wrong number.
    """
    want = f"+{more}" if more else str(1 + first)
    return ["sh", "-c", _SAMPLES_SCRIPT, "farm-await-samples", out_path, str(max(1, round(wait_s / 0.05))), want]


@dataclass(frozen=True, slots=True)
class PowerSample:
    """Watts at device time ``t_s`` (seconds on :data:`CLOCK`)."""

    t_s: float
    watts: float


def sampler_argv(meter: Meter, hz: float, out_path: str) -> list[str]:
    """argv that samples ``meter`` at ``hz`` into ``out_path`` on the device until its process group is killed.

    Start it with the transport's ``spawn`` (own process group) and stop it with ``kill``; the loop never
    ends on its own. The output file is truncated at start.
    """
    if not out_path or "\0" in out_path:
        raise ValueError("sampler output path must be a non-empty path")
    return ["sh", "-c", SAMPLER_SCRIPT, "farm-sampler", out_path, period(hz), *meter.nodes]


def period(hz: float) -> str:
    """The sampler's sleep between samples for a rate of ``hz``, as ``sleep`` takes it."""
    if not (math.isfinite(hz) and hz > 0):
        raise ValueError(f"sample rate must be a positive number of Hz, not {hz}")
    text = f"{1.0 / hz:.6f}".rstrip("0").rstrip(".")
    return "0.000001" if text in ("", "0") else text


def parse_samples(meter: Meter, text: str) -> list[PowerSample]:
    """Watts over time from the sampler's output.

    Lines that are comments, malformed, partial (the sampler is killed mid-write), have an unreadable node
    (``-``) or do not advance the clock are skipped. Energy counters (RAPL) give one sample per pair of
    good readings, at the midpoint of the interval, with power = energy delta / dt; a counter that goes
    backwards has wrapped at ``meter.wrap`` (without a known wrap that interval is dropped).
    """
    rows = _rows(meter, text)
    if meter.is_counter:
        return _counter_power(meter, rows)
    out: list[PowerSample] = []
    for t_s, values in rows:
        if meter.pairs:
            watts = sum(
                values[i] * meter.scale[i] * values[i + 1] * meter.scale[i + 1] for i in range(0, len(values), 2)
            )
        else:
            watts = sum(v * s for v, s in zip(values, meter.scale, strict=True))
        out.append(PowerSample(t_s, watts * meter.sign))
    return out


def _rows(meter: Meter, text: str) -> list[tuple[float, list[float]]]:
    return raw_rows(len(meter.nodes), text)


def raw_rows(nodes: int, text: str) -> list[tuple[float, list[float]]]:
    """(seconds, raw node values) of every complete, well-formed sampler line (any sysfs nodes, e.g. thermal)."""
    width = nodes + 1
    rows: list[tuple[float, list[float]]] = []
    last_ns: int | None = None
    lines = text.split("\n")
    # the last line is complete only if the text ends with a newline; a cut one may still look like numbers
    for line in lines[:-1]:
        fields = line.split()
        if len(fields) != width or not (fields[0].isascii() and fields[0].isdigit()):
            continue
        try:
            values = [float(f) for f in fields[1:]]
        except ValueError:
            continue
        if not all(math.isfinite(v) for v in values):
            continue
        ns = int(fields[0])
        if last_ns is not None and ns <= last_ns:
            continue
        last_ns = ns
        rows.append((ns / 1e9, values))
    return rows


def _counter_power(meter: Meter, rows: list[tuple[float, list[float]]]) -> list[PowerSample]:
    out: list[PowerSample] = []
    for (t0, e0), (t1, e1) in itertools.pairwise(rows):
        joules = 0.0
        for a, b, s in zip(e0, e1, meter.scale, strict=True):
            delta = (b - a) * s
            if delta < 0:
                if meter.wrap is None:
                    break
                delta += meter.wrap
            joules += delta
        else:
            out.append(PowerSample((t0 + t1) / 2, meter.sign * joules / (t1 - t0)))
    return out
