"""An iPhone or iPad over usbmux (pymobiledevice3): the same device interface as a board or an Android phone.

iOS runs no shell and no loose executables, so everything a POSIX device does with a script is done here with
the device's own services:

* staging: the decoder is an app, installed with InstallationProxyService (skipped when the installed app's
  version and the package digest the farm recorded in its container match); bitstreams go into the app's own
  container through HouseArrestService (AFC) under a content-addressed folder, pushed only when missing;
* decode: DVT ProcessControl launches the app with the decoder contract's arguments (docs/ios.md), the farm
  polls the pid and the result file, kills the app at the timeout and pulls the output, stats and log;
* power and temperature: the host polls the battery's IORegistry entry (DiagnosticsService) at the suite's
  rate during the decode window (farm.power.ios_battery has the units and signs).

pymobiledevice3 is the optional ``ios`` extra. It is imported only inside :class:`Services` and
:func:`require_extra`, so no other part of the farm ever imports it. Its API is async: each device owns one event
loop on a private thread, and every call into pymobiledevice3 runs there (lockdown and its services are bound to
the loop they were created on).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import posixpath
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from farm.config.inventory import ChargerSuspend, Device, PowerSettings, UsbmuxTransport
from farm.devices.base import (
    AppRef,
    DecodeOutcome,
    DecodeRequest,
    MeasuredDecode,
    NullTether,
    PowerMeter,
    PowerProbe,
    TransferCounter,
    measure_around,
)
from farm.devices.ipa import IpaInfo, read_ipa
from farm.devices.posix import parse_stats
from farm.errors import FarmError, InfraError
from farm.power import ios_battery, probe
from farm.power.battery import BatteryState
from farm.power.instrument import Instrument, Window
from farm.power.sampler import PowerSample
from farm.provenance import runtime_of
from farm.transports.base import TransportError, Unreachable

T = TypeVar("T")

EXTRA_MISSING = "iOS devices need the optional 'ios' extra (pymobiledevice3): pip install 'codec-farm[ios]'"
WORKDIR = "/Documents/farm"
"""Where the farm keeps its cache and job folders inside each decoder app's container."""
RESULT = "result.json"
LOG = "decoder.log"
APP_MARKER = ".farm-app.sha256"
"""Written into the app's container after an install: the digest of the package installed."""
BATTERY_ZONE = "battery"
"""The one thermal zone an iPhone shows the farm: the battery's IORegistry temperature."""
POLL_S = 0.1
PULL_CHUNK = 4 << 20
"""Bytes per AFC read of a decoded output (AFC's own maximum read)."""
CALL_TIMEOUT_S = 60.0
TUNNELD = "127.0.0.1:49151"
TUNNEL_HELP = "start it with `sudo python3 -m pymobiledevice3 remote tunneld` (docs/ios.md)"
DDI_HELP = "mount it with `python3 -m pymobiledevice3 mounter auto-mount` (docs/ios.md)"
CHARGING_ADVICE = (
    "iOS cannot suspend charging: unplug the phone and reach it over Wi-Fi usbmux, or accept power as missing"
)


def require_extra() -> None:
    """Raise InfraError naming the ``ios`` extra when pymobiledevice3 is not installed."""
    try:
        import pymobiledevice3  # noqa: F401
    except ImportError:
        raise InfraError(EXTRA_MISSING) from None


def major_version(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


class Services:
    """The seam to pymobiledevice3: every service the farm uses is made here, and nowhere else.

    Tests replace it with fakes built by ``create_autospec`` of the same pymobiledevice3 classes, so a change of
    signature in pymobiledevice3 breaks the tests rather than a run on a real phone.
    """

    async def list_devices(self) -> list[Any]:
        from pymobiledevice3.usbmux import list_devices

        return list(await list_devices())

    async def lockdown(self, udid: str) -> Any:
        from pymobiledevice3.lockdown import create_using_usbmux

        # pairing needs a tap on the phone: it is a set-up step (docs/ios.md), never done in the middle of a run
        return await create_using_usbmux(serial=udid, autopair=False)

    def installation_proxy(self, lockdown: Any) -> Any:
        from pymobiledevice3.services.installation_proxy import InstallationProxyService

        return InstallationProxyService(lockdown)

    async def house_arrest(self, lockdown: Any, bundle_id: str) -> Any:
        from pymobiledevice3.services.house_arrest import HouseArrestService

        return await HouseArrestService.create(lockdown, bundle_id)

    def diagnostics(self, lockdown: Any) -> Any:
        from pymobiledevice3.services.diagnostics import DiagnosticsService

        return DiagnosticsService(lockdown)

    async def developer_image_mounted(self, lockdown: Any) -> bool:
        from pymobiledevice3.services.mobile_image_mounter import MobileImageMounterService

        async with MobileImageMounterService(lockdown) as mounter:
            return bool(await mounter.is_image_mounted("Developer"))

    async def tunnel(self, udid: str) -> Any | None:
        """The RSD of tunneld's tunnel to ``udid`` (None: tunneld has none). Raises when tunneld is not running."""
        from pymobiledevice3.tunneld.api import get_tunneld_device_by_udid

        return await get_tunneld_device_by_udid(udid)

    def dvt(self, provider: Any) -> Any:
        from pymobiledevice3.services.dvt.instruments.dvt_provider import DvtProvider

        return DvtProvider(provider)

    def process_control(self, dvt: Any) -> Any:
        from pymobiledevice3.services.dvt.instruments.process_control import ProcessControl

        return ProcessControl(dvt)

    def tunneld_down(self, exc: BaseException) -> bool:
        from pymobiledevice3.exceptions import TunneldConnectionError

        return isinstance(exc, TunneldConnectionError)

    def link_lost(self, exc: BaseException) -> bool:
        """True when ``exc`` means the connection to the device broke (cable, usbmuxd, tunnel)."""
        from pymobiledevice3.exceptions import ConnectionTerminatedError, MuxException, NoDeviceConnectedError

        errors = (ConnectionTerminatedError, MuxException, NoDeviceConnectedError, ConnectionError, EOFError)
        return isinstance(exc, errors)


SERVICES: Callable[[], Services] = Services
"""What :func:`connect_ios` builds the services from (tests point it at their fakes)."""


class _Loop:
    """One asyncio loop on a daemon thread; ``run`` executes a coroutine there from any thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"ios-{name}", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


@dataclass
class _Installed:
    app: AppRef
    info: IpaInfo


@dataclass
class IosDevice:
    """One iPhone/iPad. Paths (``workdir``, job folders, decoder arguments) are inside each app's container."""

    device_id: str
    udid: str
    services: Services
    cache_dir: Path
    """Host folder for outputs pulled from the device (an iPhone cannot hash a file for the farm)."""
    workdir: str = WORKDIR
    runtime: dict[str, str] = field(default_factory=dict)
    counter: TransferCounter = field(default_factory=TransferCounter)
    charging_advice: str = CHARGING_ADVICE
    power_sampled_on: str = "polled from the host over usbmux"
    command_timeout: float = CALL_TIMEOUT_S
    values: dict[str, Any] = field(default_factory=dict)
    """lockdown's values (ProductType, ProductVersion, ...), read on connect"""

    def __post_init__(self) -> None:
        self._loop = _Loop(self.device_id)
        self._lockdown: Any = None
        self._rsd: Any = None
        self._diag: Any = None
        self._diag_lock = threading.Lock()
        self._apps: dict[str, _Installed] = {}
        self._subdirs: list[str] = []
        self._pulled: dict[str, Path] = {}
        self._owner: dict[str, str] = {}  # job dir -> bundle id of the app that decoded there

    # -- connection ---------------------------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T], what: str, timeout: float | None = None) -> T:
        """Run one pymobiledevice3 call; a broken link becomes TransportError, a vanished device Unreachable."""
        try:
            return self._loop.run(coro, timeout or self.command_timeout)
        except FarmError:
            raise
        except TimeoutError:
            raise TransportError(
                f"{self.device_id}: {what} timed out after {timeout or self.command_timeout:g}s"
            ) from None
        except Exception as exc:
            if not self.services.link_lost(exc):
                raise InfraError(f"{self.device_id}: {what} failed: {type(exc).__name__}: {exc}") from exc
            self._drop()
            if not self._present():
                raise Unreachable(f"{self.device_id}: device {self.udid} disconnected (usbmux) during {what}") from exc
            raise TransportError(f"{self.device_id}: link lost during {what}: {type(exc).__name__}: {exc}") from exc

    def _present(self) -> bool:
        try:
            devices = self._loop.run(self.services.list_devices(), 10.0)
        except Exception:
            return False
        return any(_udid_of(d) == self.udid.replace("-", "") for d in devices)

    def _drop(self) -> None:
        """Forget the broken connection; the next call opens a new one."""
        self._lockdown = self._diag = self._rsd = None

    def connect(self) -> None:
        """Open lockdown and check what decoding will need (developer image, or a tunnel on iOS 17+)."""
        self._ensure_lockdown()
        self._developer_access()

    def _ensure_lockdown(self) -> Any:
        if self._lockdown is None:
            try:
                self._lockdown = self._loop.run(self.services.lockdown(self.udid), self.command_timeout)
            except Exception as exc:
                raise Unreachable(
                    f"{self.device_id}: cannot reach iOS device {self.udid} over usbmux "
                    f"(plugged in, paired and trusted? usbmuxd running?): {type(exc).__name__}: {exc}"
                ) from exc
            self.values = dict(getattr(self._lockdown, "all_values", {}) or {})
            self.values.setdefault("ProductVersion", self._lockdown.product_version)
        return self._lockdown

    @property
    def ios_version(self) -> str:
        return str(self.values.get("ProductVersion", ""))

    def _developer_access(self) -> Any:
        """The service provider DVT runs over: the RSD tunnel on iOS 17+, lockdown with the DDI mounted before."""
        lockdown = self._ensure_lockdown()
        if major_version(self.ios_version) >= 17:
            if self._rsd is None:
                try:
                    self._rsd = self._loop.run(self.services.tunnel(self.udid), self.command_timeout)
                except Exception as exc:
                    if self.services.tunneld_down(exc):
                        raise InfraError(
                            f"{self.device_id}: iOS {self.ios_version} needs an RSD tunnel to launch apps, and "
                            f"tunneld is not running ({TUNNELD}): {TUNNEL_HELP}"
                        ) from exc
                    raise InfraError(f"{self.device_id}: tunneld lookup failed: {exc}") from exc
                if self._rsd is None:
                    raise InfraError(
                        f"{self.device_id}: iOS {self.ios_version} needs an RSD tunnel to launch apps; tunneld is "
                        f"running but has no tunnel to {self.udid} (is Developer Mode on and the phone unlocked?)"
                    )
            return self._rsd
        mounted = self._call(self.services.developer_image_mounted(lockdown), "developer image check")
        if not mounted:
            raise InfraError(
                f"{self.device_id}: iOS {self.ios_version} needs the developer disk image mounted to launch apps: "
                f"{DDI_HELP}"
            )
        return lockdown

    def close(self) -> None:
        lockdown, self._lockdown = self._lockdown, None
        if lockdown is not None:
            with contextlib.suppress(Exception):
                self._loop.run(lockdown.close(), 5.0)
        self._loop.close()

    # -- what the device is ---------------------------------------------------------------------------------
    def info(self) -> dict[str, str]:
        self._ensure_lockdown()
        props = {
            "udid": self.udid,
            "ios.model": str(self.values.get("ProductType", "")),
            "ios.version": self.ios_version,
            "ios.build": str(self.values.get("BuildVersion", "")),
            "ios.name": str(self.values.get("DeviceName", "")),
            "ios.hardware": str(self.values.get("HardwareModel", "")),
            "machine": str(self.values.get("CPUArchitecture", "")),
            "thermal_zones": BATTERY_ZONE,
        }
        return {k: v for k, v in props.items() if v}

    def check_target(self, target: str, props: dict[str, str]) -> None:
        plat, _, arch = target.partition("-")
        machine = props.get("machine", "")
        if plat != "ios":
            raise InfraError(f"devices.yaml says target {target} for an iOS device; iOS devices run ios-* targets")
        if machine and not (machine == arch or machine.startswith(arch)):  # arm64e runs arm64
            raise InfraError(f"devices.yaml says target {target} but the device's CPU is {machine}")

    def temperatures(self, zones: Sequence[str]) -> list[float | None]:
        reading = self.battery_reading() if BATTERY_ZONE in zones else None
        return [reading.temp_c if reading is not None and z == BATTERY_ZONE else None for z in zones]

    # -- staging ------------------------------------------------------------------------------------------
    def prepare(self, *subdirs: str) -> None:
        """Folders live in the apps' containers, which exist only once the apps are installed: made at stage."""
        self._ensure_lockdown()
        self._subdirs = ["cas", "jobs", *subdirs]

    def install_app(self, app: AppRef) -> None:
        """Install ``app`` unless the same version with the same package digest is installed already."""
        info = read_ipa(app.package)
        if info.bundle_id != app.bundle_id:
            raise InfraError(f"{app.package.name} is {info.bundle_id}, but bundle.yaml says {app.bundle_id}")
        lockdown = self._ensure_lockdown()
        self._call(self._install(lockdown, app, info), f"install {app.bundle_id}", timeout=600.0)
        self._apps[app.bundle_id] = _Installed(app, info)

    async def _install(self, lockdown: Any, app: AppRef, info: IpaInfo) -> None:
        proxy = self.services.installation_proxy(lockdown)
        async with proxy:
            found = await proxy.get_apps(bundle_identifiers=[app.bundle_id])
            have = found.get(app.bundle_id) if isinstance(found, dict) else None
            same_version = (
                have is not None
                and str(have.get("CFBundleShortVersionString", "")) == info.short_version
                and str(have.get("CFBundleVersion", "")) == info.build
            )
            if same_version and await self._marker(lockdown, app.bundle_id) == app.digest:
                self.counter.reused_files += 1
                return
            await proxy.install_from_local(app.package)
        self.counter.pushed_files += 1
        self.counter.pushed_bytes += app.package.stat().st_size
        afc = await self.services.house_arrest(lockdown, app.bundle_id)
        async with afc:
            await afc.makedirs(self.workdir)
            await afc.set_file_contents(f"{self.workdir}/{APP_MARKER}", app.digest.encode())

    async def _marker(self, lockdown: Any, bundle_id: str) -> str | None:
        afc = await self.services.house_arrest(lockdown, bundle_id)
        async with afc:
            path = f"{self.workdir}/{APP_MARKER}"
            if not await afc.exists(path):
                return None
            return bytes(await afc.get_file_contents(path)).decode(errors="replace").strip()

    def stage(self, files: Sequence[tuple[Path, str, str]]) -> None:
        """Push each (host file, container path, sha256) into every installed app's container, if missing.

        Container paths are content-addressed (``cas/<sha256>``, ``bundles/<bundle digest>/...``) and a file is
        written under a temporary name and renamed into place, so a file present under its final name is
        complete. An iPhone cannot hash a file for the farm; its size is checked as well.
        """
        if not self._apps:
            raise InfraError(f"{self.device_id}: nothing to decode with: the bundle's iOS target has no app")
        lockdown = self._ensure_lockdown()
        for bundle_id in self._apps:
            self._call(self._stage_into(lockdown, bundle_id, files), f"stage into {bundle_id}", timeout=600.0)

    async def _stage_into(self, lockdown: Any, bundle_id: str, files: Sequence[tuple[Path, str, str]]) -> None:
        afc = await self.services.house_arrest(lockdown, bundle_id)
        async with afc:
            for sub in self._subdirs:
                await afc.makedirs(f"{self.workdir}/{sub}")
            for local, remote, _digest in files:
                size = local.stat().st_size
                if await afc.exists(remote) and int((await afc.stat(remote)).get("st_size", -1)) == size:
                    self.counter.reused_files += 1
                    continue
                await afc.makedirs(posixpath.dirname(remote))
                tmp = f"{remote}.part.{secrets.token_hex(4)}"
                await afc.set_file_contents(tmp, local.read_bytes())
                await afc.rename(tmp, remote)
                self.counter.pushed_files += 1
                self.counter.pushed_bytes += size

    # -- decoding -----------------------------------------------------------------------------------------
    def decode(
        self, argv: Sequence[str], job_dir: str, timeout: float, zones: Sequence[str] = (), app: AppRef | None = None
    ) -> DecodeOutcome:
        """Launch the app with ``argv``, wait for its result file (or its death, or the timeout), collect."""
        if app is None:
            raise InfraError(f"{self.device_id}: an iOS decode needs the bundle's app (targets.ios-*.app)")
        installed = self._apps.get(app.bundle_id)
        if installed is None or installed.app.digest != app.digest:
            self.install_app(app)  # another bundle's app with the same bundle id was installed in between
        provider = self._developer_access()
        lockdown = self._ensure_lockdown()
        self._owner[job_dir] = app.bundle_id
        self._call(self._clear_job(lockdown, app.bundle_id, job_dir), "prepare job folder")
        t_start = self._battery_temp(zones)
        launched = self._call(self._run_app(provider, app.bundle_id, list(argv), job_dir, timeout), "launch app",
                              timeout=timeout + self.command_timeout)  # fmt: skip
        t_end = self._battery_temp(zones)
        return self._call(self._collect(lockdown, app.bundle_id, job_dir, launched, t_start, t_end), "collect output")

    def _battery_temp(self, zones: Sequence[str]) -> float | None:
        return self.temperatures([BATTERY_ZONE])[0] if BATTERY_ZONE in zones else None

    async def _clear_job(self, lockdown: Any, bundle_id: str, job_dir: str) -> None:
        afc = await self.services.house_arrest(lockdown, bundle_id)
        async with afc:
            await afc.makedirs(job_dir)
            for name in ("out.y4m", "stats.jsonl", RESULT, LOG):
                await afc.rm_single(f"{job_dir}/{name}", force=True)

    async def _run_app(self, provider: Any, bundle_id: str, argv: list[str], job_dir: str, timeout: float) -> _Launch:
        lockdown = self._ensure_lockdown()
        dvt = self.services.dvt(provider)
        async with dvt:
            control = self.services.process_control(dvt)
            await control.connect()
            try:
                start = time.monotonic_ns()
                pid = await control.launch(bundle_id, arguments=argv, kill_existing=True)
                deadline = time.monotonic() + timeout
                afc = await self.services.house_arrest(lockdown, bundle_id)
                async with afc:
                    while True:
                        if await afc.exists(f"{job_dir}/{RESULT}"):
                            return _Launch(pid, start, time.monotonic_ns(), "done")
                        if await control.process_identifier_for_bundle_identifier(bundle_id) != pid:
                            end = time.monotonic_ns()
                            # it may have written the result file just before it exited
                            gone = "done" if await afc.exists(f"{job_dir}/{RESULT}") else "vanished"
                            return _Launch(pid, start, end, gone)
                        if time.monotonic() > deadline:
                            await control.kill(pid)
                            return _Launch(pid, start, time.monotonic_ns(), "timeout")
                        await asyncio.sleep(POLL_S)
            finally:
                with contextlib.suppress(Exception):
                    await control.close()

    async def _collect(
        self, lockdown: Any, bundle_id: str, job_dir: str, launched: _Launch, t_start: float | None,
        t_end: float | None,
    ) -> DecodeOutcome:  # fmt: skip
        afc = await self.services.house_arrest(lockdown, bundle_id)
        async with afc:

            async def text(name: str) -> str:
                path = f"{job_dir}/{name}"
                if not await afc.exists(path):
                    return ""
                return bytes(await afc.get_file_contents(path)).decode(errors="replace")

            log = (await text(LOG))[-4000:]
            stats = await text("stats.jsonl")
            result = await text(RESULT)
            sha = size = None
            out = f"{job_dir}/out.y4m"
            if launched.state == "done" and await afc.exists(out):
                local = self.cache_dir / f"{secrets.token_hex(8)}.y4m"
                local.parent.mkdir(parents=True, exist_ok=True)
                sha, size = await _pull_hashed(afc, out, local)
                self._pulled[out] = local
        frames, stats_error = parse_stats(stats.splitlines())
        runtime, runtime_error = runtime_of(stats.splitlines())
        status: int | None = None
        failure: str | None = None
        if launched.state == "vanished":
            failure = f"the app (pid {launched.pid}) exited without writing {RESULT}: it crashed or was killed"
        elif launched.state == "done":
            status, failure = _exit_status(result)
        sha_ok = sha if launched.state == "done" else None
        return DecodeOutcome(
            exit_status=status, timed_out=launched.state == "timeout", start_ns=launched.start_ns,
            end_ns=launched.end_ns, output_sha=sha_ok, output_bytes=size, frame_times_ns=frames, stderr_tail=log,
            stats_error=stats_error or runtime_error, temp_start_c=t_start, temp_end_c=t_end, failure=failure,
            runtime=runtime,
        )  # fmt: skip

    def kill_job(self, job_dir: str) -> None:
        """Kill the app that decoded in ``job_dir`` if it still runs (a retry must not share its folder)."""
        bundle_id = self._owner.get(job_dir)
        if bundle_id is None:
            return
        self._call(self._kill(self._developer_access(), bundle_id), "kill app")

    async def _kill(self, provider: Any, bundle_id: str) -> None:
        dvt = self.services.dvt(provider)
        async with dvt:
            control = self.services.process_control(dvt)
            await control.connect()
            try:
                pid = await control.process_identifier_for_bundle_identifier(bundle_id)
                if pid:
                    await control.kill(pid)
            finally:
                with contextlib.suppress(Exception):
                    await control.close()

    def pull(self, remote: str, local: Path) -> int:
        """The decoded output (already pulled once, to hash it: the device cannot)."""
        have = self._pulled.get(remote)
        if have is None or not have.is_file():
            raise TransportError(f"{self.device_id}: {remote} was not collected from the device")
        shutil.copyfile(have, local)
        return local.stat().st_size

    def remove(self, path: str) -> None:
        lockdown = self._ensure_lockdown()
        for bundle_id in self._apps:
            self._call(self._rm(lockdown, bundle_id, path), f"remove {path}")
        for remote in [r for r in self._pulled if r.startswith(path.rstrip("/") + "/")]:
            self._pulled.pop(remote).unlink(missing_ok=True)

    def tether(self, run_dir: str) -> NullTether:
        """iOS runs no shell a tether could hold, and no watchdog could be left on the phone. The run's only process
        there is the decoding app, which the session's own cleanup kills through DVT (``kill_job``); after a
        SIGKILL of the controller the app runs until its decode ends (docs/tethers.md)."""
        return NullTether("iOS: the app is killed through DVT by the session's cleanup; there is no shell to hold")

    def free_bytes(self, path: str) -> int | None:
        """Unknown: AFC's device info (FSFreeBytes) needs an AFC session per call; not asked yet."""
        return None

    async def _rm(self, lockdown: Any, bundle_id: str, path: str) -> None:
        afc = await self.services.house_arrest(lockdown, bundle_id)
        async with afc:
            await afc.rm(path, force=True)

    # -- power: the host polls the battery's IORegistry entry ------------------------------------------------
    def battery_reading(self) -> ios_battery.IosBatteryReading:
        """One read of the battery's IORegistry entry (what the host-polled instrument samples)."""
        with self._diag_lock:  # one request at a time on the diagnostics connection
            if self._diag is None:
                self._diag = self.services.diagnostics(self._ensure_lockdown())
            raw = self._call(self._diag.get_battery(), "battery read")
        return ios_battery.parse(raw)

    POWER_SOURCES: ClassVar[tuple[str, ...]] = ("ios-battery",)
    """What ``power.meter: auto`` tries (farm/power/sources): the battery gauge, polled from the host."""

    def probe_power(self, settings: PowerSettings, platform: str, charger_suspended: bool) -> PowerProbe:
        """``platform`` is kept for callers but not consulted: devices.yaml and ``POWER_SOURCES`` decide."""
        found = probe.probe(self, settings, auto=self.POWER_SOURCES, charger_suspended=charger_suspended)
        return PowerProbe(found.instrument, found.reason)

    def battery(self) -> BatteryState | None:
        return self.battery_reading().state()

    def set_charging(self, control: ChargerSuspend, enabled: bool) -> bool:
        """iOS offers no charger control (CHARGING_ADVICE says what to do instead)."""
        return False

    def measured_decode(self, request: DecodeRequest, meter: PowerMeter | None, window: Window) -> MeasuredDecode:
        """The app decodes on its own; power and battery are polled from the host around it, one call each."""
        return measure_around(self, request, meter, window)

    def power_window(
        self, meter: PowerMeter | None, zones: Sequence[str], folder: str, name: str, hz: float, lifetime_s: float,
        during: Callable[[], Any],
    ) -> tuple[list[PowerSample], list[float]]:  # fmt: skip
        """Sample ``meter`` while ``during`` runs; the battery zone's temperature comes from the same host poll.

        The battery instrument and the battery temperature read the same IORegistry entry, so one poll serves
        both (one read per tick, not two); any other instrument measures on its own around that poll.
        """
        if meter is not None and not isinstance(meter, Instrument):
            raise TypeError(f"{type(meter).__name__} is not a power instrument (farm.power.instrument.Instrument)")
        window = Window(folder, name, hz, lifetime_s)
        if BATTERY_ZONE not in zones:
            if meter is None:
                during()
                return [], []
            return meter.measure(window, during), []
        readings: list[tuple[float, ios_battery.IosBatteryReading]] = []
        if isinstance(meter, ios_battery.IosBatteryInstrument) and meter.device is self:
            readings = ios_battery.poll(self, hz, during)
            power = ios_battery.watts(readings)
        elif meter is not None:
            power = meter.measure(window, lambda: readings.extend(ios_battery.poll(self, hz, during)))
        else:
            power, readings = [], ios_battery.poll(self, hz, during)
        return power, [r.temp_c for _, r in readings if r.temp_c is not None]


@dataclass(frozen=True)
class _Launch:
    pid: int
    start_ns: int
    end_ns: int
    state: str  # done | vanished | timeout


async def _pull_hashed(afc: Any, remote: str, local: Path) -> tuple[str, int]:
    """Copy ``remote`` to ``local`` in chunks, hashing on the way: a decoded video can be gigabytes, so it is
    never held in memory whole, and it is read once (an iPhone cannot hash it for the farm)."""
    remaining = int((await afc.stat(remote))["st_size"])
    size, digest = remaining, hashlib.sha256()
    handle = await afc.fopen(remote, "r")
    try:
        with local.open("wb") as f:
            while remaining > 0:
                chunk = bytes(await afc.fread(handle, min(PULL_CHUNK, remaining)))
                if not chunk:
                    raise TransportError(f"{remote} ended {remaining} bytes short of its {size} bytes while pulled")
                f.write(chunk)
                digest.update(chunk)
                remaining -= len(chunk)
    finally:
        await afc.fclose(handle)
    return digest.hexdigest(), size


def _exit_status(text: str) -> tuple[int | None, str | None]:
    """The app's exit status from its result file ``{"exit": n}``."""
    try:
        value = json.loads(text)
        status = value["exit"]
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return None, f'the app\'s {RESULT} is not {{"exit": <int>}}: {text[:200]!r}'
    return status, None


def _udid_of(mux_device: Any) -> str:
    return str(getattr(mux_device, "serial", "")).replace("-", "")


def connect_ios(device: Device, state_dir: Path) -> IosDevice:
    """Connect to the iOS device of an inventory entry (usbmux transport)."""
    require_extra()
    transport = device.transport
    if not isinstance(transport, UsbmuxTransport):
        raise InfraError(f"{device.id}: iOS devices are reached over usbmux, not {transport.kind}")
    dev = IosDevice(
        device.id, transport.udid, SERVICES(), (state_dir / "ios" / device.id).resolve(),
        workdir=device.workdir or WORKDIR, runtime=dict(device.runtime),
    )  # fmt: skip
    try:
        dev.connect()
    except BaseException:
        dev.close()
        raise
    return dev


@dataclass(frozen=True)
class Listing:
    """One iOS device usbmuxd sees (``farm devices``)."""

    udid: str
    connection: str
    model: str
    version: str
    name: str
    error: str | None = None


def discover(services: Services | None = None, timeout_s: float = 10.0) -> list[Listing]:
    """Every iOS device usbmuxd reports, with model and iOS version read over lockdown."""
    require_extra()
    services = services or SERVICES()
    loop = _Loop("discover")
    try:
        try:
            devices = loop.run(services.list_devices(), timeout_s)
        except Exception as exc:
            raise InfraError(f"usbmuxd is not reachable: {type(exc).__name__}: {exc}") from exc
        found: list[Listing] = []
        for mux in devices:
            udid = str(getattr(mux, "serial", ""))
            kind = str(getattr(mux, "connection_type", ""))
            try:
                lockdown = loop.run(services.lockdown(udid), timeout_s)
            except Exception as exc:
                found.append(Listing(udid, kind, "", "", "", f"{type(exc).__name__}: {exc}"))
                continue
            values = dict(getattr(lockdown, "all_values", {}) or {})
            model, name = str(values.get("ProductType", "")), str(values.get("DeviceName", ""))
            found.append(Listing(udid, kind, model, str(lockdown.product_version), name))
            with contextlib.suppress(Exception):
                loop.run(lockdown.close(), 5.0)
        return found
    finally:
        loop.close()
