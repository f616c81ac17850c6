"""Read what the farm needs from an iOS app package (.ipa): its bundle id and version, without extracting it.

An .ipa is a zip with ``Payload/<Name>.app/Info.plist``. The farm only reads that one member into memory
(bounded in size), so a hostile archive can neither write outside a folder nor fill the disk.
"""

from __future__ import annotations

import plistlib
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from farm.errors import InputError
from farm.fileio import sha256_file

MAX_INFO_PLIST = 1 << 20


@dataclass(frozen=True)
class IpaInfo:
    bundle_id: str
    short_version: str
    """CFBundleShortVersionString (may be empty)"""
    build: str
    """CFBundleVersion (may be empty)"""
    digest: str

    @property
    def version(self) -> str:
        """What the device reports back for an installed app: ``<short>(<build>)``."""
        return f"{self.short_version}({self.build})"


def read_ipa(path: Path) -> IpaInfo:
    """Bundle id, versions and sha256 of an .ipa; InputError naming the file when it is not a usable app."""
    try:
        with zipfile.ZipFile(path) as archive:
            plists = [
                m
                for m in archive.infolist()
                if (parts := PurePosixPath(m.filename).parts)
                and len(parts) == 3
                and parts[0] == "Payload"
                and parts[1].endswith(".app")
                and parts[2] == "Info.plist"
            ]
            if len(plists) != 1:
                raise InputError(f"{path}: expected exactly one Payload/<Name>.app/Info.plist, found {len(plists)}")
            member = plists[0]
            if member.file_size > MAX_INFO_PLIST:
                raise InputError(f"{path}: {member.filename} is {member.file_size} bytes; refusing to read it")
            with archive.open(member) as fh:
                data = fh.read(MAX_INFO_PLIST + 1)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not a readable .ipa (zip): {exc}") from None
    try:
        info = plistlib.loads(data)
    except (plistlib.InvalidFileException, ValueError) as exc:
        raise InputError(f"{path}: {member.filename} is not a property list: {exc}") from None
    if not isinstance(info, dict) or not isinstance(info.get("CFBundleIdentifier"), str):
        raise InputError(f"{path}: {member.filename} has no CFBundleIdentifier")
    return IpaInfo(
        bundle_id=info["CFBundleIdentifier"],
        short_version=str(info.get("CFBundleShortVersionString", "")),
        build=str(info.get("CFBundleVersion", "")),
        digest=sha256_file(path),
    )
