"""Facts about a slug that its builder writes and its readers read back.

Here, not in the builder, so the readers (``inspect``, ``publish``) never
import the build pipeline: where slug.json sits beside a slug, and the name and
version of an installed distribution as its METADATA header gives them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def metadata_path_for(slug_path: Path) -> Path:
    """slug.tgz -> slug.json; anything else gets .json appended."""
    name = slug_path.name
    stem = name[: -len(".tgz")] if name.endswith(".tgz") else (
        name[: -len(".tar.gz")] if name.endswith(".tar.gz") else name)
    return slug_path.with_name(stem + ".json")


@dataclass(frozen=True)
class Package:
    """An installed distribution, as slug.json and ``inspect`` list it."""

    name: str
    version: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def package_from_metadata(text: str) -> Package | None:
    """Name and version from the header of a METADATA file (None if either is missing)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip().lower(), value.strip())
    if "name" in fields and "version" in fields:
        return Package(fields["name"], fields["version"])
    return None
