"""Fake iPhones for the iOS tests: pymobiledevice3's own classes, autospecced, over an in-memory phone.

No iPhone can be reached here, so this is the one boundary the tests mock. Every service object is
``create_autospec`` of the real pymobiledevice3 class, and each async method is checked against the real method's
signature on every call, so a signature change in pymobiledevice3 breaks these tests instead of a real run.

The phone's app containers are real folders, and launching a decoder app runs the example bundle's real decoder
on this machine with the container paths mapped, so iOS decodes are real and bit-exact against the other devices.
"""

from __future__ import annotations

import inspect
import itertools
import json
import plistlib
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock, create_autospec

import yaml
from pymobiledevice3.exceptions import ConnectionTerminatedError, TunneldConnectionError
from pymobiledevice3.lockdown import UsbmuxLockdownClient
from pymobiledevice3.services.diagnostics import DiagnosticsService
from pymobiledevice3.services.dvt.instruments.dvt_provider import DvtProvider
from pymobiledevice3.services.dvt.instruments.process_control import ProcessControl
from pymobiledevice3.services.house_arrest import HouseArrestService
from pymobiledevice3.services.installation_proxy import InstallationProxyService
from pymobiledevice3.usbmux import MuxDevice

from farm.bundle import write_sums
from farm.devices.ios import Services
from farm.media import host_ffmpeg
from tests.conftest import EXAMPLES

UDID = "00008110-001A2B3C4D5E6F70"
DECODERS = {"org.codecfarm.av1-svt": "libdav1d", "org.codecfarm.hevc-x265": "hevc"}


def checked(real_cls: type, name: str, impl: Callable[..., Any]) -> AsyncMock:
    """An async mock of ``real_cls.name`` that binds every call to the real signature before running ``impl``."""
    sig = inspect.signature(getattr(real_cls, name))

    async def call(*args: Any, **kwargs: Any) -> Any:
        sig.bind(None, *args, **kwargs)  # TypeError when pymobiledevice3's signature no longer fits the farm's call
        result = impl(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    return AsyncMock(side_effect=call)


def spec(real_cls: type, **methods: Callable[..., Any]) -> MagicMock:
    """``create_autospec(real_cls)`` instance whose listed async methods run the fake phone's code."""
    mock = create_autospec(real_cls, instance=True)
    for name, impl in methods.items():
        assert hasattr(real_cls, name), f"{real_cls.__name__}.{name} no longer exists"
        setattr(mock, name, checked(real_cls, name, impl))
    mock.__aenter__.return_value = mock
    return mock


@dataclass
class FakePhone:
    """An iPhone's state: apps, containers (real folders), battery, processes, and what goes wrong."""

    root: Path
    ios_version: str = "16.7"
    ddi_mounted: bool = True
    tunnel: str = "up"  # up | none | tunneld-down
    app_behaviour: str = "decode"  # decode | hang | crash | fail
    unplug_on_launch: bool = False
    charging: bool = False
    present: bool = True
    apps: dict[str, dict[str, str]] = field(default_factory=dict)
    installs: list[str] = field(default_factory=list)
    launches: list[list[str]] = field(default_factory=list)
    kills: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- helpers ----------------------------------------------------------------------------------------------
    def container(self, bundle_id: str) -> Path:
        return self.root / "containers" / bundle_id

    def host(self, bundle_id: str, path: str | Path) -> Path:
        rel = str(path).lstrip("/")
        assert ".." not in Path(rel).parts
        return self.container(bundle_id) / rel

    def alive(self) -> None:
        if not self.present:
            raise ConnectionTerminatedError("device unplugged")

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs.values())

    # -- services ---------------------------------------------------------------------------------------------
    def lockdown(self) -> MagicMock:
        self.alive()
        mock = spec(UsbmuxLockdownClient, close=lambda: None)
        mock.all_values = {
            "ProductType": "iPhone14,5", "ProductVersion": self.ios_version, "BuildVersion": "20H19",
            "DeviceName": "lab iPhone", "CPUArchitecture": "arm64e", "HardwareModel": "D16AP",
        }  # fmt: skip
        mock.product_version = self.ios_version
        return mock

    def installation_proxy(self) -> MagicMock:
        def get_apps(
            application_type: str = "Any", calculate_sizes: bool = False,
            bundle_identifiers: list[str] | None = None, show_placeholders: bool = False,
        ) -> dict[str, Any]:  # fmt: skip
            self.alive()
            return {b: dict(v) for b, v in self.apps.items() if bundle_identifiers is None or b in bundle_identifiers}

        def install_from_local(
            package_path: Path, cmd: str = "Install", options: Any = None, handler: Any = None,
            developer: bool = False, *args: Any,
        ) -> None:  # fmt: skip
            self.alive()
            with zipfile.ZipFile(package_path) as z:
                name = next(n for n in z.namelist() if n.endswith(".app/Info.plist"))
                info = plistlib.loads(z.read(name))
            self.apps[info["CFBundleIdentifier"]] = {
                "CFBundleIdentifier": info["CFBundleIdentifier"],
                "CFBundleShortVersionString": info["CFBundleShortVersionString"],
                "CFBundleVersion": info["CFBundleVersion"],
            }
            self.container(info["CFBundleIdentifier"]).mkdir(parents=True, exist_ok=True)
            self.installs.append(info["CFBundleIdentifier"])

        return spec(InstallationProxyService, get_apps=get_apps, install_from_local=install_from_local)

    def house_arrest(self, bundle_id: str) -> MagicMock:
        self.alive()
        if bundle_id not in self.apps:
            raise RuntimeError(f"AppNotInstalledError: {bundle_id}")

        def host(path: Any) -> Path:
            self.alive()
            return self.host(bundle_id, path)

        def rm(filename: Any, match: Any = None, force: bool = False) -> list[str]:
            p = host(filename)
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            return []

        def rm_single(filename: Any, force: bool = False) -> bool:
            host(filename).unlink(missing_ok=True)
            return True

        def set_contents(filename: Any, data: bytes, progress: Any = None) -> None:
            host(filename).write_bytes(data)

        handles: dict[int, Any] = {}
        numbers = itertools.count(1)

        def fopen(filename: Any, mode: str = "r") -> int:
            handle = next(numbers)
            handles[handle] = host(filename).open("rb" if mode == "r" else "r+b")
            return handle

        def fread(handle: int, sz: int) -> bytes:
            self.alive()
            data: bytes = handles[handle].read(sz)
            return data

        def fclose(handle: int) -> None:
            handles.pop(handle).close()

        return spec(
            HouseArrestService,
            exists=lambda filename: host(filename).exists(),
            stat=lambda filename: {"st_size": host(filename).stat().st_size, "st_ifmt": "S_IFREG"},
            makedirs=lambda filename: host(filename).mkdir(parents=True, exist_ok=True),
            rename=lambda source, target: host(source).replace(host(target)),
            get_file_contents=lambda filename: host(filename).read_bytes(),
            set_file_contents=set_contents,
            fopen=fopen,
            fread=fread,
            fclose=fclose,
            rm=rm,
            rm_single=rm_single,
            aclose=lambda: None,
        )

    def diagnostics(self) -> MagicMock:
        def battery() -> dict[str, Any]:
            self.alive()
            busy = self.running()
            return {
                "InstantAmperage": (-900 if busy else -350) if not self.charging else 1200,
                "Amperage": -500,
                "Voltage": 3870,
                "Temperature": 3125 if busy else 3050,
                "IsCharging": self.charging,
                "ExternalConnected": self.charging,
                "CurrentCapacity": 81,
                "MaxCapacity": 100,
            }

        return spec(DiagnosticsService, get_battery=battery)

    def dvt(self) -> MagicMock:
        self.alive()
        return spec(DvtProvider, connect=lambda: None, close=lambda: None)

    def process_control(self) -> MagicMock:
        def launch(
            bundle_id: str, arguments: list[str] | None = None, kill_existing: bool = True,
            start_suspended: bool = False, environment: Any = None, extra_options: Any = None,
        ) -> int:  # fmt: skip
            self.alive()
            args = list(arguments or [])
            self.launches.append(args)
            proc = self._start(bundle_id, args)
            self.procs[proc.pid] = proc
            if self.unplug_on_launch:
                self.present = False
            return proc.pid

        def pid_for(app_bundle_identifier: str) -> int:
            self.alive()
            return next((pid for pid, p in self.procs.items() if p.poll() is None), 0)

        def kill(pid: int) -> None:
            self.alive()
            self.kills.append(pid)
            if pid in self.procs:
                self.procs[pid].kill()
                self.procs[pid].wait()

        return spec(ProcessControl, connect=lambda: None, close=lambda: None, launch=launch,
                    process_identifier_for_bundle_identifier=pid_for, kill=kill)  # fmt: skip

    def _start(self, bundle_id: str, args: list[str]) -> subprocess.Popen[bytes]:
        """The "app": the example bundle's real decoder on container paths, then the result file, then exit."""
        if self.app_behaviour == "hang":
            return subprocess.Popen(["sleep", "600"])
        if self.app_behaviour == "crash":
            return subprocess.Popen([sys.executable, "-c", "import os; os.abort()"], stderr=subprocess.DEVNULL)
        inp, out, stats = (self.host(bundle_id, a) for a in args)
        job = out.parent
        ffdecode = EXAMPLES / "av1-svt" / "ffdecode.py"
        argv = [sys.executable, str(ffdecode), "--ffmpeg", host_ffmpeg(), "--decoder", DECODERS[bundle_id],
                str(inp), str(out), str(stats)]  # fmt: skip
        if self.app_behaviour == "fail":
            argv = [sys.executable, "-c", "import sys; print('no such codec', file=sys.stderr); sys.exit(3)"]
        script = (
            "import json, subprocess, sys\n"
            "job, argv = sys.argv[1], sys.argv[2:]\n"
            "with open(job + '/decoder.log', 'wb') as log:\n"
            "    rc = subprocess.call(argv, stdout=log, stderr=log)\n"
            "open(job + '/result.json.tmp', 'w').write(json.dumps({'exit': rc}))\n"
            "import os; os.replace(job + '/result.json.tmp', job + '/result.json')\n"
        )
        return subprocess.Popen([sys.executable, "-c", script, str(job), *argv])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class FakeServices(Services):
    """farm.devices.ios.Services over a :class:`FakePhone` (only the factories are replaced)."""

    def __init__(self, phone: FakePhone) -> None:
        self.phone = phone

    async def list_devices(self) -> list[Any]:
        if not self.phone.present:
            return []
        device = create_autospec(MuxDevice, instance=True)
        device.serial, device.connection_type = UDID, "USB"
        return [device]

    async def lockdown(self, udid: str) -> Any:
        assert udid == UDID, udid
        return self.phone.lockdown()

    def installation_proxy(self, lockdown: Any) -> Any:
        return self.phone.installation_proxy()

    async def house_arrest(self, lockdown: Any, bundle_id: str) -> Any:
        return self.phone.house_arrest(bundle_id)

    def diagnostics(self, lockdown: Any) -> Any:
        return self.phone.diagnostics()

    async def developer_image_mounted(self, lockdown: Any) -> bool:
        self.phone.alive()
        return self.phone.ddi_mounted

    async def tunnel(self, udid: str) -> Any | None:
        if self.phone.tunnel == "tunneld-down":
            raise TunneldConnectionError()
        return object() if self.phone.tunnel == "up" else None

    def dvt(self, provider: Any) -> Any:
        return self.phone.dvt()

    def process_control(self, dvt: Any) -> Any:
        return self.phone.process_control()


# -- bundles and inventory ---------------------------------------------------------------------------------------
def write_ipa(path: Path, bundle_id: str, version: str = "1.0", build: str = "1") -> Path:
    """A minimal .ipa: a zip with Payload/Decoder.app/Info.plist (enough for the farm and the fake phone)."""
    info = {"CFBundleIdentifier": bundle_id, "CFBundleShortVersionString": version, "CFBundleVersion": build,
            "CFBundleExecutable": "Decoder"}  # fmt: skip
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("Payload/Decoder.app/Info.plist", plistlib.dumps(info))
        z.writestr("Payload/Decoder.app/Decoder", b"\xcf\xfa\xed\xfe fake arm64 binary")
    return path


def ios_bundle(src: Path, dest: Path, *, version: str = "1.0", build: str = "1") -> Path:
    """A copy of an example bundle with an ``ios-arm64`` app target whose app decodes like the POSIX target."""
    shutil.copytree(src, dest)
    manifest = yaml.safe_load((dest / "bundle.yaml").read_text())
    bundle_id = f"org.codecfarm.{manifest['name']}"
    write_ipa(dest / "decoder.ipa", bundle_id, version, build)
    manifest["targets"]["ios-arm64"] = {"app": "decoder.ipa", "bundle_id": bundle_id,
                                        "decode": ["{input}", "{output}", "{stats}"]}  # fmt: skip
    (dest / "bundle.yaml").write_text(yaml.safe_dump(manifest))
    write_sums(dest)
    return dest


def ios_entry(device_id: str = "iphone-1", **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": device_id, "platform": "ios", "transport": {"kind": "usbmux", "udid": UDID},
                             "target": "ios-arm64", "tags": ["ios"], "power": {"meter": "auto"}}  # fmt: skip
    entry.update(extra)
    return entry


def result_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
