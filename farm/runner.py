"""One device's session: connect, check health, cool down, stage, measure the idle baseline, decode, collect.

The session writes every job to the store as soon as it finishes, so a crash (of the device, the link or the
farm itself) loses nothing already measured. A device that cannot be reached, or dies mid-session, turns its
remaining jobs into failed jobs with the reason: they are never silently dropped from the run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farm.bundle import Bundle
from farm.config.inventory import Device
from farm.config.manifest import substitute
from farm.config.suite import Suite
from farm.devices.base import AppRef, DecodeOutcome, FarmDevice, PowerMeter
from farm.devices.connect import connect
from farm.errors import FarmError
from farm.fileio import sha256_file
from farm.media import Bitstream, Source
from farm.power import battery, sampler
from farm.power import energy as power_energy
from farm.quality.y4m import QualityError, read_y4m_info
from farm.store import Measurement, Store
from farm.timing import frame_stats
from farm.transports.base import TransportError, Unreachable

Event = Callable[[str, str, dict[str, Any]], None]


@dataclass(frozen=True)
class JobSpec:
    role: str  # test | anchor
    bundle: Bundle
    source: Source
    bitstream: Bitstream
    repeat: int


@dataclass
class JobRecord:
    spec: JobSpec
    device_id: str
    job_id: int
    status: str
    output_sha: str | None
    local_output: Path | None
    error: str | None = None
    fps: float | None = None


class DecodedCache:
    """Host cache of decoded outputs by digest: identical outputs from any device are pulled once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._busy: dict[str, threading.Lock] = {}
        self.pulled_bytes = 0
        self.pulls = 0

    def path(self, digest: str) -> Path:
        return self.root / f"{digest}.y4m"

    def fetch(self, digest: str, pull: Callable[[Path], int]) -> Path:
        """The decoded output with this digest, pulled only if the host does not have it yet.

        A pulled file is hashed on the host before it enters the cache, so a damaged transfer can never
        poison later runs under a digest it does not have.
        """
        with self._lock:
            lock = self._busy.setdefault(digest, threading.Lock())
        with lock:
            dest = self.path(digest)
            if not dest.is_file():
                self.root.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix=f".{digest[:16]}.", suffix=".part", dir=self.root)
                os.close(fd)
                tmp = Path(name)
                try:
                    size = pull(tmp)
                    got = sha256_file(tmp)
                    if got != digest:
                        raise TransportError(f"pulled output hashes to {got[:16]}, the device reported {digest[:16]}")
                    tmp.replace(dest)
                finally:
                    tmp.unlink(missing_ok=True)
                with self._lock:
                    self.pulled_bytes += size
                    self.pulls += 1
            return dest


@dataclass
class SessionReport:
    device_id: str
    reached: bool
    error: str | None
    records: list[JobRecord] = field(default_factory=list)
    pushed_bytes: int = 0
    pushed_files: int = 0
    reused_files: int = 0
    properties: dict[str, Any] = field(default_factory=dict)


APP_ARGS = ("{input}", "{output}", "{stats}")
"""An app target without a ``decode`` template gets the decoder contract's three paths as its arguments."""


class DeviceSession:
    def __init__(
        self, device: Device, suite: Suite, jobs: list[JobSpec], *, run_id: str, store: Store, state_dir: Path,
        decoded: DecodedCache, emit: Event,
    ) -> None:  # fmt: skip
        self.device = device
        self.suite = suite
        self.jobs = jobs
        self.run_id = run_id
        self.store = store
        self.state_dir = state_dir
        self.decoded = decoded
        self.emit = emit
        self.report = SessionReport(device.id, reached=False, error=None)
        self._zone_list: list[str] = []
        self._power_reason: str | None = None
        self._charger_suspended = False
        self._warned_charging = False

    # -- the session ----------------------------------------------------------------------------------
    def run(self) -> SessionReport:
        dev: FarmDevice | None = None
        try:
            self._status("connecting")
            dev = connect(self.device, self.state_dir)
            dev.prepare(f"jobs/{self.run_id}")
            props = dev.info()
            self.report.properties = props
            dev.check_target(self.device.target, props)  # a device that cannot run the target never ran
            self.report.reached = True
            zones = self._zone_list = self._zones(props)
            self._suspend_charger(dev)
            meter = self._meter(dev)
            why_not = self._power_reason or "power reported as missing"
            props["power_meter"] = meter.description if meter else f"none ({why_not})"
            if meter and self.device.power.simulated:
                props["power_meter"] += " [SIMULATED]"
            if self.device.thermal.simulated:
                props["thermal"] = "SIMULATED"
            self.report.properties = props
            self._cooldown(dev, zones)
            self._status("staging")
            self._retrying_stage(dev)
            baseline_w = self._baseline(dev, meter)
            for index, spec in enumerate(self.jobs):
                self._status(f"{spec.role} {spec.source.sequence_id} @{spec.bitstream.rate_kbps:g}k r{spec.repeat}")
                attempt = functools.partial(self._job, dev, index, spec, meter, baseline_w, zones)
                record = self._retrying(dev, index, spec, attempt)
                self.report.records.append(record)
                self.emit(self.device.id, "job", {"done": index + 1, "total": len(self.jobs), "record": record})
        except FarmError as exc:
            self._fail_rest(str(exc))
        except Exception as exc:  # a bug or an unexpected device answer must not take down the other devices
            self._fail_rest(f"{type(exc).__name__}: {exc}")
        finally:
            # one row per device, written once its outcome is known
            self._record_device("failed" if self.report.error else "ok", self.report.error)
            if dev is not None:
                self._resume_charger(dev)
                self._cleanup(dev)
                self.report.pushed_bytes = dev.counter.pushed_bytes
                self.report.pushed_files = dev.counter.pushed_files
                self.report.reused_files = dev.counter.reused_files
                dev.close()
        self._status("done" if self.report.error is None else "failed")
        return self.report

    def _status(self, text: str) -> None:
        self.emit(self.device.id, "status", {"text": text})

    def _record_device(self, status: str, error: str | None) -> None:
        self.store.add_device(
            self.run_id, self.device.id, self.device.platform, self.device.target, list(self.device.tags),
            self.report.properties, status, error,
        )  # fmt: skip

    def _fail_rest(self, error: str) -> None:
        """Every job not yet run becomes a failed job with the reason, so the run shows what was lost."""
        self.report.error = error
        now = time.time()
        for spec in self.jobs[len(self.report.records) :]:
            job_id = self.store.add_job(self.run_id, self._job_row(spec, "failed", error, now, now), [])
            self.report.records.append(JobRecord(spec, self.device.id, job_id, "failed", None, None, error))

    # -- set-up ---------------------------------------------------------------------------------------
    @property
    def _throttle_c(self) -> float | None:
        if self.device.thermal.throttle_c is not None:
            return self.device.thermal.throttle_c
        trip = self.report.properties.get("passive_trip_c")
        return float(trip) if trip is not None else None

    def _zones(self, props: dict[str, Any]) -> list[str]:
        if self.device.thermal.zones == "auto":
            return [z for z in str(props.get("thermal_zones", "")).split(",") if z]
        return list(self.device.thermal.zones)

    def _meter(self, dev: FarmDevice) -> PowerMeter | None:
        """The device's power meter (each device kind measures in its own way); None: power is missing."""
        probe = dev.probe_power(self.device.power, self.device.platform, self._charger_suspended)
        self._power_reason = probe.reason
        return probe.meter

    def _suspend_charger(self, dev: FarmDevice) -> None:
        """Stop charging for the session (rooted phones), so the battery alone powers what is measured."""
        node = self.device.power.charger_suspend
        if node is None or not dev.set_charging(node, enabled=False):
            return
        self._charger_suspended = True
        self.report.properties["charger"] = f"suspended for the run ({node.node}={node.suspend})"

    def _resume_charger(self, dev: FarmDevice) -> None:
        node = self.device.power.charger_suspend
        if self._charger_suspended and node is not None:
            with contextlib.suppress(FarmError):
                dev.set_charging(node, enabled=True)
                self._charger_suspended = False

    def _battery(self, dev: FarmDevice) -> battery.BatteryState | None:
        return dev.battery()

    def _cooldown(self, dev: FarmDevice, zones: list[str]) -> None:
        """Wait (bounded) until the hottest zone is below the suite's start temperature, so runs start alike."""
        limit = self.suite.thermal.start_below_c
        if limit is None or not zones:
            return
        start = time.monotonic()
        deadline = start + self.suite.thermal.timeout_s
        while True:
            temps = [t for t in dev.temperatures(zones) if t is not None]
            hottest = max(temps) if temps else None
            if hottest is None or hottest < limit:
                self.report.properties["cooldown_s"] = round(time.monotonic() - start, 1)
                return
            if time.monotonic() > deadline:
                raise FarmError(
                    f"still {hottest:.1f} C after {self.suite.thermal.timeout_s:g}s of cooldown "
                    f"(suite wants < {limit:g} C before the first job)"
                )
            self._status(f"cooling: {hottest:.1f} C > {limit:g} C ({time.monotonic() - start:.0f}s)")
            time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))

    def _bundle_dir(self, dev: FarmDevice, bundle: Bundle) -> str:
        return f"{dev.workdir}/bundles/{bundle.digest}"

    def _bitstream_path(self, dev: FarmDevice, bs: Bitstream) -> str:
        return f"{dev.workdir}/cas/{bs.sha256}{bs.path.suffix}"

    def _retrying(self, dev: FarmDevice, index: int, spec: JobSpec, attempt: Callable[[int], JobRecord]) -> JobRecord:
        """A job whose link dropped is retried once after reconnecting; then it fails with both reasons.

        Each attempt decodes in its own folder, and the first attempt's decoder (which may outlive the dead
        connection on the board) is killed before the retry, so it can neither load the board nor write into
        the retry's output. ``Unreachable`` (the device cannot be reconnected at all) is not retried.
        """
        try:
            return attempt(0)
        except Unreachable:
            raise
        except TransportError as first:
            self._status(f"link dropped, retrying job {index + 1}")
            try:
                dev.kill_job(self._job_dir(dev, index, 0))
                return attempt(1)
            except Unreachable:
                raise
            except TransportError as second:
                error = f"link failed, retried once: {first} / retry: {second}"
                now = time.time()
                job_id = self.store.add_job(self.run_id, self._job_row(spec, "failed", error, now, now), [])
                return JobRecord(spec, self.device.id, job_id, "failed", None, None, error)

    def _job_dir(self, dev: FarmDevice, index: int, attempt: int) -> str:
        return f"{dev.workdir}/jobs/{self.run_id}/{index}" + (f".{attempt}" if attempt else "")

    def _retrying_stage(self, dev: FarmDevice) -> None:
        try:
            self._stage(dev)
        except Unreachable:
            raise
        except TransportError:
            self._status("link dropped while staging, retrying")
            self._stage(dev)

    def _app(self, bundle: Bundle) -> AppRef | None:
        """The app a bundle's target ships for this device (iOS), or None when it ships an executable."""
        target = bundle.manifest.targets[self.device.target]
        if target.app is None or target.bundle_id is None:
            return None
        return AppRef(target.bundle_id, bundle.root / target.app, bundle.files[target.app])

    def _stage(self, dev: FarmDevice) -> dict[str, str]:
        files: list[tuple[Path, str, str]] = []
        seen: set[str] = set()
        for spec in self.jobs:
            bundle = spec.bundle
            if bundle.digest not in seen:
                seen.add(bundle.digest)
                app = self._app(bundle)
                if app is not None:
                    dev.install_app(app)  # before the files: an app's files live in its own container
                target = bundle.manifest.targets[self.device.target]
                for rel in target.files:
                    files.append((bundle.root / rel, f"{self._bundle_dir(dev, bundle)}/{rel}", bundle.files[rel]))
            remote = self._bitstream_path(dev, spec.bitstream)
            if remote not in seen:
                seen.add(remote)
                files.append((spec.bitstream.path, remote, spec.bitstream.sha256))
        dev.stage(files)
        return {remote: sha for _, remote, sha in files}

    def _baseline(self, dev: FarmDevice, meter: PowerMeter | None) -> float | None:
        if meter is None or self.suite.power.baseline_s <= 0:
            return None
        state = self._battery(dev)
        if state is not None and state.charging is not False:
            self._warn_charging(state)
            self.report.properties["power_baseline"] = f"none: battery {state.status} during the idle baseline"
            return None
        self._status(f"idle baseline {self.suite.power.baseline_s:g}s")
        # same state as the jobs: the thermal sampler runs during the baseline too
        samples, _ = self._window(
            dev, meter, self._zone_list, "baseline", lambda: time.sleep(self.suite.power.baseline_s)
        )
        if len(samples) < 2:
            self.report.properties["power_baseline"] = f"none: {len(samples)} power sample(s) in the idle baseline"
            return None
        return power_energy.mean_watts(samples, samples[0].t_s, samples[-1].t_s)

    def _window(
        self, dev: FarmDevice, meter: PowerMeter | None, zones: list[str], name: str, during: Callable[[], Any]
    ) -> tuple[list[sampler.PowerSample], list[float]]:
        """Run ``during`` while the device samples power (and, slower, temperature).

        Returns the power samples and the hottest zone temperature of each thermal sample.
        """
        base = f"{dev.workdir}/jobs/{self.run_id}"  # made once per session by _prepare
        lifetime_s = self.suite.timeout_s + self.suite.power.baseline_s + 120
        return dev.power_window(meter, zones, base, name, self.suite.power.sample_hz, lifetime_s, during)

    # -- one job --------------------------------------------------------------------------------------
    def _job_row(self, spec: JobSpec, status: str, error: str | None, t0: float, t1: float) -> dict[str, Any]:
        return {
            "device_id": self.device.id, "role": spec.role, "sequence": spec.source.sequence_id,
            "rate_kbps": spec.bitstream.rate_kbps, "repeat": spec.repeat, "status": status, "error": error,
            "bitstream_sha": spec.bitstream.sha256, "bitstream_bytes": spec.bitstream.size,
            "source_sha": spec.source.sha256, "started_at": t0, "finished_at": t1,
        }  # fmt: skip

    def _job(
        self, dev: FarmDevice, index: int, spec: JobSpec, meter: PowerMeter | None,
        baseline_w: float | None, zones: list[str], attempt: int = 0,
    ) -> JobRecord:  # fmt: skip
        t0 = time.time()
        job_dir = self._job_dir(dev, index, attempt)
        target = spec.bundle.manifest.targets[self.device.target]
        template = target.decode if target.decode is not None else APP_ARGS
        values = {
            **dev.runtime,
            "input": self._bitstream_path(dev, spec.bitstream),
            "output": f"{job_dir}/out.y4m",
            "stats": f"{job_dir}/stats.jsonl",
            "bundle": self._bundle_dir(dev, spec.bundle),
        }
        argv = substitute(template, values)
        app = self._app(spec.bundle)
        box: list[DecodeOutcome] = []
        before = self._battery(dev)
        timeout = self.suite.timeout_s
        samples, temps = self._window(
            dev, meter, zones, str(index), lambda: box.append(dev.decode(argv, job_dir, timeout, zones, app))
        )
        after = self._battery(dev)
        outcome = box[0]
        thermal = _thermal(temps, outcome.temp_start_c, outcome.temp_end_c, self._throttle_c)
        t1 = time.time()

        error = _failure(outcome, self.suite.timeout_s)
        row = self._job_row(spec, "failed" if error else "ok", error, t0, t1)
        row["stderr_tail"] = outcome.stderr_tail or None
        row["output_sha"] = outcome.output_sha
        row["frame_times_ns"] = outcome.frame_times_ns
        local_output: Path | None = None
        frames: int | None = None
        if error is None and outcome.output_sha is not None:
            remote_out = f"{job_dir}/out.y4m"
            local_output = self.decoded.fetch(outcome.output_sha, lambda dst: dev.pull(remote_out, dst))
            try:
                frames = read_y4m_info(local_output).frames
            except QualityError as exc:
                # a broken output fails this job only; its timing and power are still recorded
                error = f"decoder output is not valid Y4M: {exc}"
                row.update(status="failed", error=error)
        row["frames"] = frames
        charging = self._charging(before, after, dev.charging_advice)
        ms = self._measurements(spec, outcome, frames, samples, meter, baseline_w, dev.power_sampled_on, charging)
        ms += thermal
        ms += _battery_measurements(before, after, charging)
        job_id = self.store.add_job(self.run_id, row, ms)
        fps = next((m.value for m in ms if m.name == "fps"), None)
        return JobRecord(spec, self.device.id, job_id, row["status"], outcome.output_sha, local_output, error, fps)

    def _charging(
        self, before: battery.BatteryState | None, after: battery.BatteryState | None, advice: str
    ) -> str | None:
        """Why the fuel gauge does not show the phone's draw for this job (None when it does, or no battery)."""
        states = [s for s in (before, after) if s is not None]
        if not states:
            return None
        if any(s.charging is None for s in states):
            return "battery status unreadable, so charging cannot be ruled out"
        dirty = [s for s in states if s.charging]
        if not dirty:
            return None
        self._warn_charging(dirty[0])
        return f"battery was {dirty[0].status!r} (on the charger the gauge reads charger minus load); {advice}"

    def _warn_charging(self, state: battery.BatteryState) -> None:
        if not self._warned_charging:
            self._warned_charging = True
            self._status(f"warning: battery {state.status}: power will be reported missing while on the charger")

    def _measurements(
        self, spec: JobSpec, outcome: DecodeOutcome, frames: int | None, samples: list[Any],
        meter: PowerMeter | None, baseline_w: float | None, sampled_on: str, charging: str | None = None,
    ) -> list[Measurement]:  # fmt: skip
        wall = (
            outcome.end_ns - outcome.start_ns if outcome.start_ns is not None and outcome.end_ns is not None else None
        )
        n = frames or len(outcome.frame_times_ns)
        stats = frame_stats(
            outcome.frame_times_ns, warmup=self.suite.warmup_frames, sequence_fps=spec.source.fps,
            wall_ns=wall, frames=n,
        )  # fmt: skip
        timing_conv = (
            f"{stats.source}; steady state after {self.suite.warmup_frames} warm-up frames; "
            f"deadline {1000 / spec.source.fps:.3f} ms; wall from device `date +%s%N` incl. start-up"
        )
        units = {"fps": "fps", "deadline_misses": "frames", "wall_s": "s"}
        ms = [
            Measurement(name, value, units.get(name.split(".")[0], "ms" if "ms" in name else "fps"), timing_conv,
                        None if value is not None else f"not measurable ({stats.source} timing)")
            for name, value in stats.as_metrics().items()
        ]  # fmt: skip
        power_w = energy_j = per_frame = None
        reason = None
        if meter is None:
            gauge_why = self._power_reason
            reason = f"no usable power meter: {gauge_why}" if gauge_why else "device has no power meter"
        if meter is not None and outcome.start_ns is not None and outcome.end_ns is not None:
            t0, t1 = outcome.start_ns / 1e9, outcome.end_ns / 1e9
            power_w = power_energy.mean_watts(samples, t0, t1)
            energy_j = power_energy.energy_joules(samples, t0, t1)
            per_frame = power_energy.energy_per_frame(energy_j, baseline_w, t1 - t0, n)
            if energy_j is None:
                reason = "power samples did not cover the decode window"
            elif per_frame is None:
                reason = "no idle baseline"
        if charging is not None:
            power_w = energy_j = per_frame = None
            reason = charging
        power_conv = (
            f"{meter.description}; {self.suite.power.sample_hz:g} Hz {sampled_on}; trapezoid over decode window"
            if meter
            else "no meter"
        )
        ms += [
            Measurement("power_w", power_w, "W", power_conv, None if power_w is not None else reason),
            Measurement("energy_j", energy_j, "J", power_conv, None if energy_j is not None else reason),
            Measurement(
                "energy_per_frame_j",
                per_frame,
                "J",
                power_conv + "; (E - baseline_w*t)/frames",
                None if per_frame is not None else reason,
            ),
        ]
        if baseline_w is not None:
            ms.append(Measurement("baseline_w", baseline_w, "W", power_conv + "; idle before jobs"))
        return ms

    def _cleanup(self, dev: FarmDevice) -> None:
        """Decoded outputs are large: drop this run's job folders; the content-addressed cache stays."""
        with contextlib.suppress(FarmError):
            dev.remove(f"{dev.workdir}/jobs/{self.run_id}")


def _battery_measurements(
    before: battery.BatteryState | None, after: battery.BatteryState | None, charging: str | None
) -> list[Measurement]:
    """The battery's state around a job: charging (1/0), level at start (ratio) and hottest cell temperature."""
    if before is None and after is None:
        return []
    states = [s for s in (before, after) if s is not None]
    status = "/".join(s.status or "?" for s in states)
    unknown = any(s.charging is None for s in states)
    temps = [s.temp_c for s in states if s.temp_c is not None]
    level = before.level if before is not None else None
    return [
        Measurement(
            "charging", None if unknown else float(charging is not None), "bool", f"battery status start/end: {status}",
            "battery status unreadable" if unknown else None,
        ),
        Measurement("battery_level", level, "ratio", f"battery level at job start ({states[0].source})",
                    None if level is not None else "battery capacity unreadable"),
        Measurement("battery_temp_c", max(temps) if temps else None, "C",
                    f"hottest battery temperature at start/end ({states[0].source})",
                    None if temps else "battery temperature unreadable"),
    ]  # fmt: skip


def _thermal(
    during: list[float], start: float | None, end: float | None, throttle_c: float | None
) -> list[Measurement]:
    """Temperatures around and during a job, and whether the board reached its throttling temperature."""
    conv = "hottest thermal zone; during = sampled on the device over the decode window"
    seen = [t for t in [start, end, *during] if t is not None]
    peak = max(seen) if seen else None
    no_zone = "no readable thermal zone"
    throttled: float | None = None
    why = no_zone if peak is None else "no throttle temperature known (thermal.throttle_c or a passive trip)"
    if peak is not None and throttle_c is not None:
        throttled = 1.0 if peak >= throttle_c else 0.0
    return [
        Measurement("temp_start_c", start, "C", conv, None if start is not None else no_zone),
        Measurement("temp_end_c", end, "C", conv, None if end is not None else no_zone),
        Measurement("temp_max_c", peak, "C", conv, None if peak is not None else no_zone),
        Measurement(
            "throttled", throttled, "bool", f"peak >= throttle_c ({throttle_c})", None if throttled is not None else why
        ),
    ]


def _failure(outcome: DecodeOutcome, timeout_s: float) -> str | None:
    if outcome.timed_out:
        return f"decoder timed out after {timeout_s:g}s and was killed"
    if outcome.failure is not None:
        return outcome.failure
    if outcome.exit_status != 0:
        tail = outcome.stderr_tail.strip().splitlines()[-1:] if outcome.stderr_tail.strip() else []
        return f"decoder exited {outcome.exit_status}" + (f": {tail[0][:300]}" if tail else "")
    if outcome.output_sha is None:
        return "decoder exited 0 but wrote no output"
    if outcome.stats_error:
        return f"decoder stats malformed: {outcome.stats_error}"
    return None
