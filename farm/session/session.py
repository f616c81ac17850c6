"""One device's session: connect, check health, cool down, stage, measure the idle baseline, decode, clean up.

``run_session`` runs in whatever process has the device (a controller thread, an agent later) and reports by
events through ``env.emit``; it never touches the store or the UI. A device that cannot be reached, or dies
mid-session, turns its remaining jobs into failed jobs with the reason, so nothing is silently dropped. A stop
request ends it within seconds: the tether's watchdog kills the decoder and samplers on the device, the run's
folder is removed, a suspended charger is resumed, and jobs not run are simply absent (a resume runs them).
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from farm import provenance
from farm.config.inventory import Device
from farm.config.manifest import substitute
from farm.devices.base import AppRef, DecodeOutcome, DecodeRequest, FarmDevice, NullTether, PowerMeter, Tether
from farm.devices.connect import connect, disconnect
from farm.emulation import EMULATED_NOTE
from farm.errors import CommandFailed, FarmError
from farm.power import energy as power_energy
from farm.power.battery import BatteryState
from farm.power.instrument import Window
from farm.power.sampler import PowerSample
from farm.quality.y4m import QualityError, read_y4m_info
from farm.session import measure
from farm.session.cancel import Cancel
from farm.session.events import Counters, DeviceDone, Event, JobDone, Status
from farm.session.layout import Layout
from farm.session.spec import BundleRef, JobSpec, SessionSpec
from farm.transports.base import TransportError, Unreachable

APP_ARGS = ("{input}", "{output}", "{stats}")
"""An app target without a ``decode`` template gets the decoder contract's three paths as its arguments."""

RETETHER_WAIT_S = 5.0
"""How long a retry waits for the dropped link's watchdog to finish cleaning (at once, then its kills)."""

SAMPLER_SPARE_S = 120
"""A sampler whose kill is lost still ends on its own this long after its window could have ended."""


class OutputCache(Protocol):
    """Where a session puts pulled decoded outputs; identical outputs are pulled once (see farm.artifacts)."""

    def fetch(self, digest: str, pull: Callable[[Path], int]) -> Path: ...


@dataclass
class SessionEnv:
    """What the process running a session provides; built there, never sent (it holds threads and files)."""

    state_dir: Path
    artifact: Callable[[str], Path]  # a staged file's digest -> its file on this host
    outputs: OutputCache
    cancel: Cancel
    emit: Callable[[Event], None]
    connect: Callable[[Device, Path], FarmDevice] = connect
    """How to reach a device (its kind's connect and setup); tests hand in a fake device here."""
    disconnect: Callable[[Device, FarmDevice], None] = disconnect
    """How to let it go (its kind's teardown)."""
    bitstream: Callable[[JobSpec, bool], JobSpec | None] = lambda job, _wait: job
    """A pipelined run's job with its bitstream, once encoded (waiting for it when asked; None when it is not
    there yet, or never will be: the run stopped). Jobs planned after their encodes are returned as they are."""


class Interrupted(Exception):
    """The run was asked to stop: unwind, clean the device, report ``interrupted``."""


def run_session(spec: SessionSpec, env: SessionEnv) -> DeviceDone:
    """Run every job of ``spec`` on its device; the last event sent is the returned ``DeviceDone``."""
    done = _Session(spec, env).run()
    env.emit(done)
    return done


class _Session:
    def __init__(self, spec: SessionSpec, env: SessionEnv) -> None:
        self.spec = spec
        self.env = env
        self.device = spec.device
        self.props: dict[str, str | float] = {}
        self.reached = False
        self.finished = 0
        self.charger_suspended = False
        self.warned_charging = False
        self.no_meter_reason: str | None = None
        self.tether: Tether = NullTether("not connected yet")
        self.layout_session = secrets.token_hex(4)
        """This session's part of its device folder's name (farm.session.layout: why)."""
        self.counters = Counters()
        self.stale: list[str] = []
        """Job folders the next decode removes before it starts (their outputs were pulled, or never will be)."""
        self.staged: set[str] = set()
        """Bitstreams on the device; a pipelined run stages those encoded after the session began job by job."""

    # -- the session ----------------------------------------------------------------------------------
    def run(self) -> DeviceDone:
        dev: FarmDevice | None = None
        status, error = "ok", None
        try:
            self._check()
            self._status("connecting", "connecting")
            dev = self.env.connect(self.device, self.env.state_dir)
            self._on_device(dev)
        except Interrupted:
            status = "interrupted"
        except Exception as exc:
            if self.env.cancel.is_set():
                status = "interrupted"  # whatever broke while stopping was the stop itself
            else:
                status, error = "failed", str(exc) if isinstance(exc, FarmError) else f"{type(exc).__name__}: {exc}"
                self._fail_rest(error)
        finally:
            if dev is not None:
                self._cleanup(dev)
        self._status(status if status != "ok" else "done", status if status != "ok" else "done")
        return DeviceDone(self.device.id, status, error, self.reached, dict(self.props), self.counters)

    def _on_device(self, dev: FarmDevice) -> None:
        layout = Layout(dev.workdir, self.spec.run_id, self.layout_session)
        dev.prepare(layout.run_subdir)
        self.tether = dev.tether(layout.run_dir)
        try:
            with self.env.cancel.on_cancel(lambda: self.tether.close()):
                meter, zones = self._set_up(dev, layout)
                baseline_w = self._baseline(dev, layout, meter, zones)
                ctx = self._power_context(dev, meter, baseline_w)
                for pending in self.spec.jobs:
                    self._check()
                    job = self._encoded(pending)
                    self._status("job", job.key.label())
                    attempt = functools.partial(self._job, dev, layout, job, meter, zones, ctx)
                    self._emit_job(self._retrying(dev, layout, job, attempt))
        finally:
            self.tether.close()

    def _encoded(self, job: JobSpec) -> JobSpec:
        """The job with its bitstream, waiting for its encode only now that the device has reached it."""
        if job.ready:
            return job
        ready = self.env.bitstream(job, False)
        if ready is None:
            self._status("job", f"{job.key.label()}: waiting for its encode")
            ready = self.env.bitstream(job, True)
        if ready is None:
            raise Interrupted  # the run was stopped (by the user, or by a failed encode) while it waited
        return ready

    def _re_tether(self, dev: FarmDevice, layout: Layout) -> None:
        """After a dropped link the old tether's watchdog cleans the run folder: let it finish, then tie again."""
        self.tether.close()
        self.tether.settle(RETETHER_WAIT_S)
        self.tether = dev.tether(layout.run_dir)

    def _emit_job(self, done: JobDone) -> None:
        if done.status != "ok" and self.env.cancel.is_set():
            raise Interrupted  # killed by the stop: not a failure of the decoder, and a resume runs it again
        self.finished += 1
        self.env.emit(done)

    def _check(self) -> None:
        if self.env.cancel.is_set():
            raise Interrupted

    def _status(self, phase: str, text: str, warning: bool = False) -> None:
        self.env.emit(Status(self.device.id, phase, text, warning))

    def _fail_rest(self, error: str) -> None:
        """Every job not yet run becomes a failed job with the reason, so the run shows what was lost."""
        now = time.time()
        for job in self.spec.jobs[self.finished :]:
            self.env.emit(self._failed(job, error, now))  # the device broke: real failures, even during a stop
            self.finished += 1

    def _failed(self, job: JobSpec, error: str, t0: float) -> JobDone:
        n = len(self.spec.jobs)
        return JobDone(
            self.device.id, job, "failed", error, None, None, (), None, t0, time.time(), (), self.finished + 1, n
        )

    def _cleanup(self, dev: FarmDevice) -> None:
        """Resume the charger, drop this run's folder (the content-addressed cache stays), close the link."""
        self._status("cleanup", "cleaning up")
        node = self.device.power.charger_suspend
        if self.charger_suspended and node is not None:
            with contextlib.suppress(FarmError):
                dev.set_charging(node, enabled=True)
                self.charger_suspended = False
        with contextlib.suppress(FarmError):
            dev.remove(Layout(dev.workdir, self.spec.run_id, self.layout_session).run_dir)
        c = dev.counter
        self.counters = Counters(c.pushed_bytes, c.pushed_files, c.reused_files)
        with contextlib.suppress(FarmError):
            self.env.disconnect(self.device, dev)

    # -- set-up ---------------------------------------------------------------------------------------
    def _set_up(self, dev: FarmDevice, layout: Layout) -> tuple[PowerMeter | None, list[str]]:
        info = dev.info()
        self.props.update(info)
        dev.check_target(self.device.target, info)  # a device that cannot run the target never ran
        self.reached = True
        zones = self._zones(info)
        self._suspend_charger(dev)
        probe = dev.probe_power(self.device.power, self.device.platform, self.charger_suspended)
        self.no_meter_reason = probe.reason
        meter = probe.meter
        self.props["power_meter"] = (
            meter.description if meter else f"none ({probe.reason or 'power reported as missing'})"
        )
        if meter and self.device.power.simulated:
            self.props["power_meter"] = f"{self.props['power_meter']} [SIMULATED]"
        if self.device.thermal.simulated:
            self.props["thermal"] = "SIMULATED"
        if self.device.emulated:
            self.props["cpu_timing"] = EMULATED_NOTE
        self._cooldown(dev, zones)
        self._check()
        self._status("staging", self._staging_text())
        self._check_space(dev, "before staging")
        pushed = dev.counter.pushed_files
        self._retrying_stage(dev, layout)
        if dev.counter.pushed_files != pushed:  # only a push changes the free space (one round trip less)
            self._check_space(dev, "after staging")
        return meter, zones

    def _staging_text(self) -> str:
        """What staging may push, so a CI log shows why a device sits in this phase (most are already there)."""
        sizes = {ref.digest: ref.size for bundle in self.spec.bundles for ref in bundle.files}
        sizes |= {job.bitstream.digest: job.bitstream.size for job in self.spec.jobs}
        return f"staging {len(sizes)} files / {sum(sizes.values())} bytes (only what the device lacks is pushed)"

    def _zones(self, props: dict[str, str]) -> list[str]:
        if self.device.thermal.zones == "auto":
            return [z for z in props.get("thermal_zones", "").split(",") if z]
        return list(self.device.thermal.zones)

    @property
    def _throttle_c(self) -> float | None:
        if self.device.thermal.throttle_c is not None:
            return self.device.thermal.throttle_c
        trip = self.props.get("passive_trip_c")
        return float(trip) if trip is not None else None

    def _suspend_charger(self, dev: FarmDevice) -> None:
        """Stop charging for the session (rooted phones), so the battery alone powers what is measured."""
        node = self.device.power.charger_suspend
        if node is None or not dev.set_charging(node, enabled=False):
            return
        self.charger_suspended = True
        self.props["charger"] = f"suspended for the run ({node.node}={node.suspend})"

    def _cooldown(self, dev: FarmDevice, zones: list[str]) -> None:
        """Wait (bounded) until the hottest zone is below the suite's start temperature, so runs start alike."""
        limit = self.spec.suite.thermal.start_below_c
        if limit is None or not zones:
            return
        start = time.monotonic()
        deadline = start + self.spec.suite.thermal.timeout_s
        while True:
            temps = [t for t in dev.temperatures(zones) if t is not None]
            hottest = max(temps) if temps else None
            if hottest is None or hottest < limit:
                self.props["cooldown_s"] = round(time.monotonic() - start, 1)
                return
            if time.monotonic() > deadline:
                raise FarmError(
                    f"still {hottest:.1f} C after {self.spec.suite.thermal.timeout_s:g}s of cooldown "
                    f"(suite wants < {limit:g} C before the first job)"
                )
            self._status("cooling", f"cooling: {hottest:.1f} C > {limit:g} C ({time.monotonic() - start:.0f}s)")
            if self.env.cancel.wait(min(1.0, deadline - time.monotonic())):
                raise Interrupted

    def _check_space(self, dev: FarmDevice, when: str) -> None:
        """A decode needs room for its output: say so up front rather than fail each job with a bare exit code."""
        need = max((j.output_bytes for j in self.spec.jobs), default=0)
        free = dev.free_bytes(dev.workdir)
        if free is not None and free < need:
            raise FarmError(
                f"not enough space on the device {when}: a decoded output needs {need / 1e6:.1f} MB, "
                f"{free / 1e6:.1f} MB free in {dev.workdir}"
            )

    def _app(self, bundle: BundleRef) -> AppRef | None:
        if bundle.app is None or bundle.bundle_id is None:
            return None
        return AppRef(bundle.bundle_id, self.env.artifact(bundle.app.digest), bundle.app.digest)

    def _stage(self, dev: FarmDevice, layout: Layout) -> None:
        files: dict[str, tuple[Path, str, str]] = {}
        for bundle in self.spec.bundles:
            app = self._app(bundle)
            if app is not None:
                dev.install_app(app)  # before the files: an app's files live in its own container
            for ref in bundle.files:
                remote = layout.bundle_file(bundle, ref)
                files[remote] = (self.env.artifact(ref.digest), remote, ref.digest)
        for pending in self.spec.jobs:
            job = self.env.bitstream(pending, False)  # in a pipelined run, those already encoded
            if job is None or not job.ready:
                continue
            remote = layout.bitstream(job.bitstream)
            files.setdefault(remote, (self.env.artifact(job.bitstream.digest), remote, job.bitstream.digest))
            self.staged.add(job.bitstream.digest)
        dev.stage(list(files.values()))

    def _stage_bitstream(self, dev: FarmDevice, layout: Layout, job: JobSpec) -> None:
        """A bitstream encoded after staging goes to the device just before its first job (pushed if lacking)."""
        digest = job.bitstream.digest
        if digest not in self.staged:
            dev.stage([(self.env.artifact(digest), layout.bitstream(job.bitstream), digest)])
            self.staged.add(digest)

    def _retrying_stage(self, dev: FarmDevice, layout: Layout) -> None:
        try:
            self._stage(dev, layout)
        except Unreachable:
            raise
        except TransportError:
            self._status("retry", "link dropped while staging, retrying")
            self._re_tether(dev, layout)
            self._stage(dev, layout)

    # -- power ------------------------------------------------------------------------------------------
    def _window_of(self, layout: Layout, name: str) -> Window:
        suite = self.spec.suite
        lifetime_s = suite.timeout_s + suite.power.baseline_s + SAMPLER_SPARE_S
        return Window(layout.run_dir, name, suite.power.sample_hz, lifetime_s)

    def _window(
        self, dev: FarmDevice, layout: Layout, meter: PowerMeter | None, zones: list[str], name: str,
        during: Callable[[], object],
    ) -> tuple[list[PowerSample], list[float]]:  # fmt: skip
        w = self._window_of(layout, name)
        return dev.power_window(meter, zones, w.folder, w.name, w.hz, w.lifetime_s, during)

    def _baseline(self, dev: FarmDevice, layout: Layout, meter: PowerMeter | None, zones: list[str]) -> float | None:
        seconds = self.spec.suite.power.baseline_s
        if meter is None or seconds <= 0:
            return None
        state = dev.battery()
        if state is not None and state.charging is not False:
            self._warn_charging(state)
            self.props["power_baseline"] = f"none: battery {state.status} during the idle baseline"
            return None
        self._status("baseline", f"idle baseline {seconds:g}s")
        # same state as the jobs: the thermal sampler runs during the baseline too
        samples, _ = self._window(dev, layout, meter, zones, "baseline", lambda: self.env.cancel.wait(seconds))
        self._check()
        if len(samples) < 2:
            self.props["power_baseline"] = f"none: {len(samples)} power sample(s) in the idle baseline"
            return None
        return power_energy.mean_watts(samples, samples[0].t_s, samples[-1].t_s)

    def _power_context(
        self, dev: FarmDevice, meter: PowerMeter | None, baseline_w: float | None
    ) -> measure.PowerContext:
        return measure.PowerContext(
            meter.description if meter is not None else None, self.no_meter_reason, dev.power_sampled_on, baseline_w
        )

    def _warn_charging(self, state: BatteryState) -> None:
        if not self.warned_charging:
            self.warned_charging = True
            text = f"warning: battery {state.status}: power will be reported missing while on the charger"
            self._status("warning", text, warning=True)

    # -- one job --------------------------------------------------------------------------------------
    def _retrying(self, dev: FarmDevice, layout: Layout, job: JobSpec, attempt: Callable[[int], JobDone]) -> JobDone:
        """A job whose link dropped is retried once after reconnecting; then it fails with both reasons.

        Each attempt decodes in its own folder, and the first attempt's decoder (which may outlive the dead
        connection on the board) is killed before the retry. ``Unreachable`` (the device cannot be reconnected)
        ends the session; a command that failed on the device (``CommandFailed``) fails the job, unretried.
        """
        t0 = time.time()
        try:
            return attempt(0)
        except CommandFailed as exc:
            return self._failed(job, str(exc), t0)
        except Unreachable:
            raise
        except TransportError as first:
            self._check()
            self._status("retry", f"link dropped, retrying job {job.index + 1}")
            try:
                self._re_tether(dev, layout)  # its watchdog killed what the dropped link left running
                return attempt(1)
            except CommandFailed as exc:
                return self._failed(job, f"link failed, then on retry: {exc}", t0)
            except Unreachable:
                raise
            except TransportError as second:
                return self._failed(job, f"link failed, retried once: {first} / retry: {second}", t0)

    def _decode_argv(self, dev: FarmDevice, layout: Layout, job: JobSpec, job_dir: str) -> list[str]:
        bundle = self.spec.bundle(job.bundle)
        values = {
            **dev.runtime,
            "input": layout.bitstream(job.bitstream),
            "output": f"{job_dir}/out.y4m",
            "stats": f"{job_dir}/stats.jsonl",
            "bundle": layout.bundle_dir(bundle),
        }
        return substitute(bundle.decode if bundle.decode is not None else APP_ARGS, values)

    def _job(
        self, dev: FarmDevice, layout: Layout, job: JobSpec, meter: PowerMeter | None, zones: list[str],
        ctx: measure.PowerContext, attempt: int,
    ) -> JobDone:  # fmt: skip
        self._stage_bitstream(dev, layout, job)  # inside the attempt: a dropped link retries it too
        t0 = time.time()
        job_dir = layout.job_dir(job.index, attempt)
        argv = self._decode_argv(dev, layout, job, job_dir)
        app = self._app(self.spec.bundle(job.bundle))
        timeout = self.spec.suite.timeout_s
        request = DecodeRequest(tuple(argv), job_dir, timeout, tuple(zones), app, tuple(self.stale))
        got = dev.measured_decode(request, meter, self._window_of(layout, str(job.index)))
        self.stale = [job_dir]  # removed by the next decode (or with the run folder): one round trip less per job
        before, after, outcome = got.battery_before, got.battery_after, got.outcome
        provenance.merge(self.props, job.key.role, dict(outcome.runtime))
        error = measure.failure(outcome, timeout)
        frames, error = self._collect(dev, job_dir, outcome, error)
        charging = measure.charging_reason(before, after, dev.charging_advice)
        on_charger = [s for s in (before, after) if s is not None and s.charging]
        if on_charger:
            self._warn_charging(on_charger[0])
        ms = measure.timing(outcome, frames, self.spec.suite, job.source_fps)
        n = frames or len(outcome.frame_times_ns)
        ms += measure.power(outcome, n, got.power, ctx, self.spec.suite.power.sample_hz, charging)
        ms += measure.thermal(got.temps, outcome.temp_start_c, outcome.temp_end_c, self._throttle_c)
        ms += measure.battery(before, after, charging)
        traces = (
            measure.power_trace(outcome, got.power, ctx, charging),
            measure.temp_trace(outcome, got.temp_trace, len(got.temps) if not got.temp_trace else 0, bool(zones)),
        )
        return JobDone(
            self.device.id, job, "failed" if error else "ok", error, outcome.output_sha, frames,
            outcome.frame_times_ns, outcome.stderr_tail or None, t0, time.time(), tuple(ms), self.finished + 1,
            len(self.spec.jobs), traces,
        )  # fmt: skip

    def _collect(
        self, dev: FarmDevice, job_dir: str, outcome: DecodeOutcome, error: str | None
    ) -> tuple[int | None, str | None]:
        """Pull the output (once per digest on this host) and read its frame count.

        The device's disk is freed by the next job's decode, which removes this job's folder first (outputs are
        large: a small device still holds one at a time), and the last one goes with the run folder.
        """
        frames: int | None = None
        if error is None and outcome.output_sha is not None:
            local = self.env.outputs.fetch(outcome.output_sha, lambda dst: dev.pull(f"{job_dir}/out.y4m", dst))
            try:
                frames = read_y4m_info(local).frames
            except QualityError as exc:
                # a broken output fails this job only; its timing and power are still recorded
                error = f"decoder output is not valid Y4M: {exc}"
        return frames, error
