"""The build platform ("stack"): what a runtime or installed wheel is tied to."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class Platform:
    """Distro, libc and architecture; a cached runtime is only used on its own."""

    stack: str
    distro: str
    distro_version: str
    arch: str
    libc: str

    @property
    def key(self) -> str:
        return f"{self.distro}-{self.distro_version}-{self.arch}-{self.libc}"

    def as_dict(self) -> dict[str, str]:
        return {
            "stack": self.stack,
            "distro": self.distro,
            "distro_version": self.distro_version,
            "arch": self.arch,
            "libc": self.libc,
        }


def current() -> Platform:
    """``STACK`` if set names the stack; distro, glibc and arch come from the host."""
    release = _os_release()
    distro = release.get("ID", "linux")
    version = release.get("VERSION_ID", "unknown")
    libc_name, libc_version = platform.libc_ver()
    libc = f"{libc_name or 'libc'}{libc_version}"
    arch = platform.machine() or "unknown"
    stack = os.environ.get("STACK") or f"{distro}-{version}"
    return Platform(stack, distro, version, arch, libc)


def _os_release() -> dict[str, str]:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as handle:
                text = handle.read()
        except OSError:
            continue
        values = {}
        for line in text.splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip().strip('"')
        return values
    return {}
