"""How to reach registries (``RegistryOptions``), apart from the image code.

The command line builds these options for every ``compile`` (the cache
registry's credentials are the images' own), but a build without an image or a
cache registry never talks to one: the registry client and the credential
lookup are imported when a client is made, not when the command line starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .registry import RegistryClient


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries: explicit credentials, insecure hosts, timeout."""

    user: str | None = None
    password: str | None = None
    insecure: bool = False
    timeout: float = 30.0

    def client(self, host: str, repository: str) -> RegistryClient:
        from .credentials import find_credentials
        from .registry import RegistryClient

        return RegistryClient(host, repository,
                              credentials=find_credentials(host, user=self.user,
                                                           password=self.password),
                              insecure=self.insecure, timeout=self.timeout)
