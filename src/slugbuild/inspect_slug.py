"""``slugbuild inspect``: what a slug holds, from its slug.json or from itself.

slug.json beside the tarball is used when its checksum matches the tarball;
otherwise everything is read from the tarball (Procfile or .release, the
runtime's patchlevel.h, the dist-info METADATA of installed packages), so a
slug whose metadata was lost can still be described.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .build import metadata_path_for
from .buildpack_runner import slug_release
from .dependencies import package_from_metadata
from .slugfile import SlugArchive

_PATCHLEVEL = re.compile(rb'#define\s+PY_VERSION\s+"([^"]+)"')
_DIST_INFO = re.compile(
    r"^\.heroku/python/lib/python[\d.]+/site-packages/[^/]+\.dist-info/METADATA$"
)


def describe_slug(path: Path) -> dict[str, Any]:
    """Process types, runtime, packages, size and checksum of the slug at ``path``."""
    archive = SlugArchive(path)
    sha256 = archive.sha256()
    size = archive.path.stat().st_size
    metadata = _matching_metadata(archive.path, sha256, 64 * archive.limits.max_metadata_bytes)
    if metadata is not None:
        return {
            "slug": str(archive.path),
            "source": "slug.json",
            "size": size,
            "checksum": f"SHA256:{sha256}",
            "layout": archive.layout,
            "process_types": metadata.get("process_types", {}),
            "runtime": metadata.get("runtime") or {},
            "stack": metadata.get("stack"),
            "packages": metadata.get("packages", []),
        }
    names = archive.names()
    # Only the head of these is needed (the version define; the METADATA headers).
    heads = {n for n in names if n.endswith("/patchlevel.h") and "/include/python" in n}
    heads |= {n for n in names if _DIST_INFO.match(n)}
    contents = archive.read_many({"Procfile", ".release"} | heads, heads=heads)
    return {
        "slug": str(archive.path),
        "source": "tarball",
        "size": size,
        "checksum": f"SHA256:{sha256}",
        "layout": archive.layout,
        "process_types": _process_types(contents),
        "runtime": _runtime(contents),
        "stack": None,
        "packages": _packages(contents),
    }


def _matching_metadata(slug: Path, sha256: str, limit: int) -> dict[str, Any] | None:
    """slug.json beside the slug, if it is of a sane size and shape and names this slug."""
    candidate = metadata_path_for(slug)
    try:
        if candidate.stat().st_size > limit:
            return None
        metadata = json.loads(candidate.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metadata, dict) or metadata.get("checksum") != f"SHA256:{sha256}":
        return None
    processes, runtime = metadata.get("process_types", {}), metadata.get("runtime") or {}
    packages = metadata.get("packages", [])
    if not (isinstance(processes, dict) and isinstance(runtime, dict)
            and isinstance(packages, list)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in processes.items())
            and all(isinstance(p, dict) and isinstance(p.get("name"), str)
                    and isinstance(p.get("version"), str) for p in packages)):
        return None  # not slugbuild's: the slug itself is read instead
    return metadata


def _process_types(contents: dict[str, bytes]) -> dict[str, str]:
    """As ``slugbuild run`` sees them (buildpack_runner.slug_release)."""

    def text(name: str) -> str | None:
        return contents[name].decode("utf-8", "replace") if name in contents else None

    return slug_release(text(".release"), text("Procfile")).default_process_types


def _runtime(contents: dict[str, bytes]) -> dict[str, Any]:
    for name, data in sorted(contents.items()):
        if name.endswith("patchlevel.h"):
            match = _PATCHLEVEL.search(data)
            if match:
                return {"implementation": "cpython", "resolved": match.group(1).decode()}
    return {}


def _packages(contents: dict[str, bytes]) -> list[dict[str, str]]:
    found = (package_from_metadata(data.decode("utf-8", "replace"))
             for name, data in contents.items() if name.endswith("METADATA"))
    return sorted((p.as_dict() for p in found if p), key=lambda p: p["name"].lower())


def render_table(description: dict[str, Any], stream) -> None:
    """Print the description as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream, highlight=False, soft_wrap=True)
    summary = Table(show_header=False, box=None)
    runtime = description["runtime"]
    python = runtime.get("resolved", "unknown")
    if runtime.get("requested"):
        python += f" (asked for {runtime['requested']}"
        python += f" in {runtime['source_file']})" if runtime.get("source_file") else ")"
    rows = [
        ("Slug", description["slug"]),
        ("Size", f"{description['size']:,} bytes"),
        ("Checksum", description["checksum"]),
        ("Layout", description["layout"]),
        ("Python", python),
        ("Stack", description["stack"] or "unknown"),
        ("Metadata", description["source"]),
    ]
    for key, value in rows:
        summary.add_row(f"[bold]{key}[/bold]", str(value))
    console.print(summary)
    processes = Table(title="Process types", title_justify="left")
    processes.add_column("type")
    processes.add_column("command")
    for name, command in description["process_types"].items():
        processes.add_row(name, command)
    console.print(processes)
    packages = Table(title=f"Packages ({len(description['packages'])})", title_justify="left")
    packages.add_column("name")
    packages.add_column("version")
    for package in description["packages"]:
        packages.add_row(package["name"], package["version"])
    console.print(packages)
