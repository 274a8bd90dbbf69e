"""``slugbuild inspect``: what a slug holds, read from the slug itself.

A slug and its slug.json may come from anywhere, and slug.json is only tied to
the slug by the checksum it claims: anyone can write a slug.json with the right
checksum and any process types. So every fact that decides what runs (process
types from ``.release`` and the Procfile) or what is installed (the runtime's
patchlevel.h, the dist-info METADATA of packages) is read from the tarball.
slug.json, when its checksum matches, only adds what the tarball cannot tell:
the stack it was built for (if it is a well-formed stack name) and which file
asked for the Python version. Text output prints every value literally, with
control characters escaped (docs/security.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, TextIO

from .. import errors
from ..arguments import PathArg, as_path
from ..redact import mask, redact_url
from ..release import slug_release
from ..results import PackageDict, SlugDescription, SlugRuntimeDict
from ..slug_size import HEROKU_SLUG_LIMIT, advice, measure_slug, render
from ..textfiles import best_effort_decode
from .archive import SlugArchive
from .metadata import metadata_path_for, package_from_metadata

_PATCHLEVEL = re.compile(rb'#define\s+PY_VERSION\s+"([^"]+)"')
_DIST_INFO = re.compile(
    r"^\.heroku/python/lib/python[\d.]+/site-packages/[^/]+\.dist-info/METADATA$"
)
# What slug.json may add: labels, checked for shape, that change nothing that runs.
_STACK = re.compile(r"^[a-z][a-z0-9]*-[0-9][0-9.]*$")
_VERSION_REQUEST = re.compile(r"^[0-9][0-9.]{0,15}$")
_SOURCE_FILE = re.compile(r"^[\w.-]{1,64}$")


@errors.user_errors
def describe_slug(path: PathArg) -> SlugDescription:
    """Process types, runtime, packages, size and checksum of the slug at ``path``."""
    archive = SlugArchive(as_path(path, "describe_slug", "path"))
    sha256 = archive.sha256()
    size = archive.path.stat().st_size
    names = archive.names()
    # Only the head of these is needed (the version define; the METADATA headers).
    heads = {n for n in names if n.endswith("/patchlevel.h") and "/include/python" in n}
    heads |= {n for n in names if _DIST_INFO.match(n)}
    contents = archive.read_many({"Procfile", ".release"} | heads, heads=heads)
    runtime = _runtime(contents)
    metadata = _matching_metadata(archive.path, sha256, 64 * archive.limits.max_metadata_bytes)
    stack = None
    if metadata is not None:
        stack, requested = _labels(metadata)
        if runtime and requested:
            runtime.update(requested)
    return {
        "slug": str(archive.path),
        "source": "tarball" + (" (stack and version request from slug.json)"
                               if metadata is not None else ""),
        "size": size,
        "checksum": f"SHA256:{sha256}",
        "layout": archive.layout,
        "process_types": _process_types(contents),
        "runtime": runtime,
        "stack": stack,
        "packages": _packages(contents),
    }


@errors.user_errors
def slug_sizes(path: PathArg) -> dict[str, Any]:
    """What takes the space in the slug at ``path``, read from the slug alone
    (streaming; the slug's entries are checked first, as for ``describe_slug``)."""
    archive = SlugArchive(as_path(path, "slug_sizes", "path"))
    breakdown = measure_slug(archive.path, archive.layout)
    return {**breakdown, "advice": advice(breakdown, HEROKU_SLUG_LIMIT)}


def render_sizes(sizes: dict[str, Any], stream: TextIO) -> None:
    """The breakdown as text, every part shown, then the advice."""
    for line in render(sizes, top=len(sizes["parts"])):
        stream.write(_escaped(line) + "\n")
    for tip in sizes["advice"]:
        stream.write(f"Advice: {_escaped(tip)}\n")


def _escaped(text: str) -> str:
    """Control characters (names from the slug) shown as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _matching_metadata(slug: Path, sha256: str, limit: int) -> dict[str, Any] | None:
    """slug.json beside the slug, if it is of a sane size and shape and names this slug."""
    candidate = metadata_path_for(slug)
    try:
        if candidate.stat().st_size > limit:
            return None
        metadata = json.loads(candidate.read_text())
    except (OSError, ValueError, RecursionError):
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


def _labels(metadata: dict[str, Any]) -> tuple[str | None, SlugRuntimeDict]:
    """The stack and the version request of slug.json, where well formed."""
    stack = metadata.get("stack")
    stack = stack if isinstance(stack, str) and _STACK.match(stack) else None
    runtime = metadata.get("runtime")
    requested: SlugRuntimeDict = {}
    if isinstance(runtime, dict):
        asked, source = runtime.get("requested"), runtime.get("source_file")
        if isinstance(asked, str) and _VERSION_REQUEST.match(asked):
            requested["requested"] = asked
            if isinstance(source, str) and _SOURCE_FILE.match(source):
                requested["source_file"] = source
    return stack, requested


def _process_types(contents: dict[str, bytes]) -> dict[str, str]:
    """As ``slugbuild run`` sees them (buildpack_runner.slug_release)."""

    def text(name: str) -> str | None:
        if name not in contents:
            return None
        if name == "Procfile":  # as the build read it (a BOM honoured)
            return best_effort_decode(contents[name], name)
        return contents[name].decode("utf-8", "replace")

    return slug_release(text(".release"), text("Procfile")).default_process_types


def _runtime(contents: dict[str, bytes]) -> SlugRuntimeDict:
    for name, data in sorted(contents.items()):
        if name.endswith("patchlevel.h"):
            match = _PATCHLEVEL.search(data)
            if match:
                return {"implementation": "cpython",
                        "resolved": match.group(1).decode("ascii", "replace")}
    return {}


def _packages(contents: dict[str, bytes]) -> list[PackageDict]:
    found = (package_from_metadata(data.decode("utf-8", "replace"))
             for name, data in contents.items() if name.endswith("METADATA"))
    listed: list[PackageDict] = [{"name": p.name, "version": p.version} for p in found if p]
    return sorted(listed, key=lambda p: p["name"].lower())


def without_credentials(value: Any) -> Any:
    """``value`` with the credentials of every URL in its strings masked, for output
    (a Procfile command may carry ``https://user:token@host``)."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {without_credentials(k): without_credentials(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_credentials(v) for v in value]
    return value


def render_table(description: dict[str, Any], stream: TextIO) -> None:
    """Print the description as rich tables.

    Values are ``Text``, never markup: a command holding ``[/app]`` or
    ``[conceal]`` prints as written, and control characters are escaped.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    def literal(value: object) -> Text:
        return Text(mask(str(value)))  # URL credentials, secrets, control characters

    # Piped output keeps each command on one line (grep, copy and paste).
    terminal = bool(getattr(stream, "isatty", None) and stream.isatty())
    console = Console(file=stream, highlight=False, soft_wrap=True, markup=False,
                      emoji=False, width=None if terminal else 10_000)
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
        summary.add_row(Text(key, style="bold"), literal(value))
    console.print(summary)
    processes = Table(title="Process types", title_justify="left")
    processes.add_column("type")
    processes.add_column("command")
    for name, command in description["process_types"].items():
        processes.add_row(literal(name), literal(command))
    console.print(processes)
    packages = Table(title=f"Packages ({len(description['packages'])})", title_justify="left")
    packages.add_column("name")
    packages.add_column("version")
    for package in description["packages"]:
        packages.add_row(literal(package["name"]), literal(package["version"]))
    console.print(packages)
