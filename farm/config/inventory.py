"""The device inventory (devices.yaml): which devices exist, how to reach them, what they can run.

The transport settings are a tagged union on ``kind`` so a typo in a key is reported against the transport the
user meant, and later transports (ssh, adb, usbmux) slot in without touching the device model.
"""

from __future__ import annotations

import os
import platform
import shlex
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from farm.config.source import Located, load_yaml, validate
from farm.errors import InputError, Problem
from farm.project import inventory_path

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


MAX_CONNECT_S = 300.0  # bounds on link timeouts: .inf or 1e9 would hang a run on a dead device for ever
MAX_IO_S = 3_600.0


class Strict(BaseModel):
    # allow_inf_nan=False: .nan and .inf are valid YAML floats, but no field of an inventory means them
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LocalTransport(Strict):
    kind: Literal["local"]


class SshTransport(Strict):
    kind: Literal["ssh"]
    host: str
    port: int = Field(default=22, ge=1, le=65535)
    user: str
    key: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    connect_timeout_s: float = Field(default=5.0, gt=0, le=MAX_CONNECT_S)
    io_timeout_s: float = Field(
        default=60.0, gt=0, le=MAX_IO_S
    )  # a board that stops answering mid-transfer is dropped after this


class AdbTransport(Strict):
    kind: Literal["adb"]
    address: str | None = None  # host:port for TCP
    serial: str | None = None  # USB serial
    key: str = "~/.android/adbkey"
    connect_timeout_s: float = Field(default=5.0, gt=0, le=MAX_CONNECT_S)
    auth_timeout_s: float = Field(default=30.0, gt=0, le=MAX_CONNECT_S)  # time to tap "Allow USB debugging"
    io_timeout_s: float = Field(
        default=60.0, gt=0, le=MAX_IO_S
    )  # a phone that stops answering mid-transfer is dropped after this
    tmpdir: str = "/data/local/tmp"  # where commands' stderr (and stdin) files live briefly on the phone


class UsbmuxTransport(Strict):
    """An iPhone/iPad through usbmuxd (USB, or Wi-Fi sync), named by its UDID (``farm devices --usbmux``)."""

    kind: Literal["usbmux"]
    udid: str = Field(pattern=r"^[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{16}$|^[0-9A-Fa-f]{40}$")


Transport = Annotated[LocalTransport | SshTransport | AdbTransport | UsbmuxTransport, Field(discriminator="kind")]


class ChargerSuspend(Strict):
    """A sysfs node that stops charging on a rooted phone (e.g. Qualcomm's ``battery/input_suspend``: 1 stops).

    The farm writes ``suspend`` to it for the session and ``resume`` afterwards, so the battery alone powers the
    phone while it is measured (USB charging makes the fuel gauge read charger minus load).
    """

    node: str
    suspend: str = "1"
    resume: str = "0"

    @field_validator("node")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "\n" in value or "\0" in value:
            raise ValueError(f"node {value!r} must be an absolute path on the device")
        return value


class PowerSettings(Strict):
    """How a device's power is measured. ``auto`` probes the device; ``none`` declares it has no meter.

    ``battery`` is a phone's fuel gauge under ``sysfs_root``/class/power_supply, its unit and sign inferred
    unless ``unit`` (the current's: uA or mA) and ``sign`` are given (docs/android.md).
    """

    meter: Literal["auto", "none", "rapl", "hwmon", "sysfs", "battery"] = "auto"
    nodes: tuple[str, ...] = ()
    unit: str | None = None
    sign: Literal[1, -1] | None = None
    sysfs_root: str = "/sys"  # where the device's power_supply, powercap and hwmon classes are (health reads it too)
    charger_suspend: ChargerSuspend | None = None
    simulated: bool = False  # readings come from a model (virtual boards): reports label them

    @field_validator("sysfs_root")
    @classmethod
    def _absolute_root(cls, value: str) -> str:
        if not value.startswith("/") or "\n" in value or "\0" in value:
            raise ValueError(f"sysfs_root {value!r} must be an absolute path on the device")
        return value

    @model_validator(mode="after")
    def _explicit_meter(self) -> PowerSettings:
        """An explicit meter is checked when the inventory loads, so a typo is exit 2 with its line."""
        if self.meter == "battery" and self.unit not in (None, "uA", "mA"):
            raise ValueError(f"unit {self.unit!r}: a battery meter takes its current's unit, uA or mA")
        if self.meter in ("rapl", "hwmon", "sysfs"):
            from farm.power.meters import meter_from_settings

            try:
                meter_from_settings(self.model_dump())
            except InputError as exc:
                raise ValueError("; ".join(p.message.removeprefix("power.") for p in exc.problems)) from None
        return self


class ThermalSettings(Strict):
    """Thermal zones to read (millidegree files) and the temperature at which the board throttles.

    ``throttle_c`` defaults to the lowest ``passive`` trip point of the zones when the device exposes one.
    ``simulated`` marks readings that come from a model (virtual boards), so reports say so.
    """

    zones: Literal["auto"] | tuple[str, ...] = "auto"
    throttle_c: float | None = Field(default=None, gt=0, le=150)
    simulated: bool = False


class Device(Strict):
    id: str = Field(pattern=ID_PATTERN)
    platform: Literal["linux", "android", "ios"]
    transport: Transport
    target: str
    tags: tuple[str, ...] = ()
    host: str | None = None
    workdir: str | None = None
    runtime: dict[str, str] = Field(default_factory=dict)
    power: PowerSettings = PowerSettings()
    thermal: ThermalSettings = ThermalSettings()
    emulated: bool = False  # the CPU is emulated (QEMU TCG): reports label its fps EMULATED, not hardware timing

    @field_validator("target")
    @classmethod
    def _target_shape(cls, value: str) -> str:
        if value != "auto" and not _valid_target(value):
            raise ValueError(f"target {value!r} is not '<platform>-<arch>' (e.g. linux-x86_64)")
        return value

    @field_validator("workdir")
    @classmethod
    def _absolute_workdir(cls, value: str | None) -> str | None:
        # jobs cd into their own folder on the device, so every path handed to a decoder must be absolute
        if value is not None and not value.startswith("/"):
            raise ValueError(f"workdir {value!r} must be an absolute path on the device")
        return value

    @model_validator(mode="after")
    def _ios_over_usbmux(self) -> Device:
        """iOS devices are reached only over usbmux, and usbmux reaches only iOS devices running ios-* targets."""
        is_usbmux = isinstance(self.transport, UsbmuxTransport)
        if self.platform == "ios" and not is_usbmux:
            raise ValueError(f"platform ios needs transport kind usbmux (with its udid), not {self.transport.kind}")
        if is_usbmux and self.platform != "ios":
            raise ValueError(f"transport usbmux reaches iOS devices only; platform is {self.platform}")
        if self.platform == "ios" and not self.target.startswith("ios-"):
            raise ValueError(f"target {self.target!r}: an iOS device runs an ios-* target (e.g. ios-arm64)")
        return self

    @model_validator(mode="after")
    def _auto_target(self) -> Device:
        if self.target == "auto":
            if not isinstance(self.transport, LocalTransport):
                raise ValueError("target 'auto' is only allowed for the local transport")
            object.__setattr__(self, "target", local_target())
        return self


def _valid_target(value: str) -> bool:
    plat, _, arch = value.partition("-")
    return plat in {"linux", "android", "ios"} and bool(arch)


def local_target() -> str:
    """The target triple of this machine, e.g. ``linux-x86_64``."""
    machine = platform.machine().lower()
    return f"linux-{ {'amd64': 'x86_64', 'arm64': 'aarch64'}.get(machine, machine) }"


class Inventory(Strict):
    devices: tuple[Device, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> Inventory:
        seen: set[str] = set()
        for device in self.devices:
            if device.id in seen:
                raise ValueError(f"device id {device.id!r} appears twice")
            seen.add(device.id)
        return self

    def get(self, device_id: str) -> Device:
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)


def adb_key_problem(key: Path) -> str | None:
    """Why an ADB private key must not be used, or None. Whoever can read it can drive every phone that trusts it.

    Only the key's own mode is checked (as ssh does for its keys): a missing key is for the connection to report,
    with the keygen hint.
    """
    try:
        mode = key.stat().st_mode
    except OSError:
        return None
    if mode & 0o077 == 0:
        return None
    who = "group and others" if mode & 0o007 else "its group"
    return (
        f"ADB private key {key} is open to {who} (mode {stat.S_IMODE(mode):04o}): anyone who can read it can drive "
        f"every phone that trusts it; run: chmod 600 {shlex.quote(str(key))}"
    )


def key_problems(inventory: Inventory, doc: Located) -> list[Problem]:
    return [
        doc.problem(("devices", i, "transport", "key"), why)
        for i, device in enumerate(inventory.devices)
        if isinstance(device.transport, AdbTransport)
        and (why := adb_key_problem(Path(os.path.expanduser(device.transport.key)))) is not None
    ]


DEFAULT_WORKDIR = "(default)"


def _physical(device: Device) -> str:
    """The device a transport reaches, as text: no DNS or usbmuxd lookup (loading must not touch the network)."""
    t = device.transport
    where = f"agent:{device.host}/" if device.host else ""  # 127.0.0.1 or a USB serial is relative to its host
    if isinstance(t, SshTransport):
        return f"{where}ssh:{t.user}@{t.host.lower()}:{t.port}"
    if isinstance(t, AdbTransport):
        if t.address:
            host, _, port = t.address.rpartition(":") if ":" in t.address else (t.address, "", "5555")
            return f"{where}adb:tcp:{host.lower()}:{port or '5555'}"
        return f"{where}adb:usb:{t.serial}"
    if isinstance(t, UsbmuxTransport):
        return f"{where}usbmux:{t.udid.lower().replace('-', '')}"
    return f"{where}local"


def device_identity(device: Device) -> str:
    """A stable string naming the physical device and the workdir on it an entry uses (the device-lease key).

    Contains: the agent host when the entry names one (``agent:NAME/``), then the transport's address as written
    (``ssh:USER@HOST:PORT``, ``adb:tcp:HOST:PORT`` with 5555 by default, ``adb:usb:SERIAL``, ``usbmux:UDID`` in
    lower case without dashes, ``local``), then ``|`` and the workdir: the entry's ``workdir``, or ``(default)``
    for an unset one (a local entry's default folder is per device id, so it adds ``:ID``). An iOS device has
    no ``|`` part: every entry for one UDID shares the farm app's container, whatever its workdir.

    It is text, not a resolved address: ``localhost`` and ``127.0.0.1`` name the same board differently, and
    an entry that spells out the default workdir differs from one that leaves it unset.
    """
    physical = _physical(device)
    if isinstance(device.transport, UsbmuxTransport):
        return physical
    workdir = (device.workdir.rstrip("/") or "/") if device.workdir else DEFAULT_WORKDIR
    if workdir == DEFAULT_WORKDIR and isinstance(device.transport, LocalTransport):
        workdir += f":{device.id}"  # farm.devices.connect puts it under the state dir, named by the id
    return f"{physical}|{workdir}"


def shared_device_problems(inventory: Inventory, doc: Located) -> list[Problem]:
    """Entries that reach one device and workdir: their sessions would clobber each other's job folders."""
    first: dict[str, int] = {}
    problems: list[Problem] = []
    for i, device in enumerate(inventory.devices):
        key = device_identity(device)
        if key not in first:
            first[key] = i
            continue
        j = first[key]
        other = inventory.devices[j]
        problems.append(
            doc.problem(("devices", i), f"{device.id!r} reaches the same device and workdir as {other.id!r} "
                        f"(line {doc.line_of(('devices', j))}): {key}")
        )  # fmt: skip
        problems.append(
            doc.problem(("devices", j), f"{other.id!r} reaches the same device and workdir as {device.id!r} "
                        f"(line {doc.line_of(('devices', i))}): {key}")
        )  # fmt: skip
    return problems


def default_inventory_path() -> Path:
    return inventory_path()


def load_inventory(path: Path) -> Inventory:
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise InputError([Problem(doc.file, 1, "", "expected a mapping with a 'devices' list")])
    inventory = validate(Inventory, doc)
    problems = shared_device_problems(inventory, doc) + key_problems(inventory, doc)
    if problems:
        raise InputError(problems)
    return inventory


def select(inventory: Inventory, selector: str | None) -> list[Device]:
    """Pick devices by a comma-separated list of ids and ``tag:NAME`` terms (``all`` or None for every device)."""
    if selector is None or selector.strip() in {"", "all"}:
        return list(inventory.devices)
    chosen: list[Device] = []
    unknown: list[str] = []
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if term.startswith("tag:"):
            matches = [d for d in inventory.devices if term[4:] in d.tags]
        else:
            matches = [d for d in inventory.devices if d.id == term]
        if not matches:
            unknown.append(term)
        chosen.extend(d for d in matches if d not in chosen)
    if unknown:
        raise InputError(f"--devices: no device matches {', '.join(map(repr, unknown))}")
    return chosen


def as_dict(device: Device) -> dict[str, Any]:
    return device.model_dump(mode="json")
