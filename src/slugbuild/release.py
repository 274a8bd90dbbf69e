"""Release metadata: slug.json beside the slug and .release inside it.

Field names follow Heroku's slug object where one exists (``process_types``,
``checksum``, ``stack``, ``buildpack_provided_description``). slug.json holds
nothing that differs between two builds of the same inputs (no times, no
paths of the build machine) and never a config var.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import __version__

BUILDPACK_DESCRIPTION = "Python"
SLUG_JSON_FORMAT = 1
# A copy of .release that herokuish does not truncate; bin/release reads it back.
RELEASE_COPY = ".heroku/slugbuild/release.yml"


def release_yaml(process_types: dict[str, str],
                 config_vars: dict[str, str] | None = None) -> str:
    """``bin/release`` style YAML, as herokuish writes to ``.release``."""
    lines = ["---", "addons: []"]
    if config_vars:
        lines.append("config_vars:")
        lines += [f"  {name}: {json.dumps(value)}" for name, value in config_vars.items()]
    else:
        lines.append("config_vars: {}")
    if process_types:
        lines.append("default_process_types:")
        lines += [f"  {name}: {json.dumps(cmd)}" for name, cmd in process_types.items()]
    else:
        lines.append("default_process_types: {}")
    return "\n".join(lines) + "\n"


def slug_metadata(
    *,
    process_types: dict[str, str],
    runtime: dict[str, Any] | None,
    package_manager: dict[str, Any] | None,
    packages: list[dict[str, str]],
    platform: dict[str, str],
    checksum: str,
    size: int,
    layout: str,
    framework: list[str],
    inference: dict[str, Any] | None = None,
    buildpacks: list[dict[str, str]] | None = None,
    config_vars: dict[str, str] | None = None,
) -> dict[str, Any]:
    """slug.json. ``buildpacks`` lists the buildpacks run (none: the built-in Python
    stages alone); ``config_vars`` are defaults their bin/release declared, not
    the build's config vars, which never appear here."""
    release = process_types.get("release")
    buildpacks = buildpacks or []
    return {
        "format": SLUG_JSON_FORMAT,
        "slugbuild_version": __version__,
        "buildpack_provided_description": (buildpacks[-1]["description"] if buildpacks
                                           else BUILDPACK_DESCRIPTION),
        "buildpacks": buildpacks,
        "release_config_vars": config_vars or {},
        "process_types": process_types,
        "inferred": inference is not None,
        "inference": inference,
        "release_command": release,
        "runtime": runtime,
        "package_manager": package_manager,
        "packages": packages,
        "frameworks": framework,
        "stack": platform["stack"],
        "platform": platform,
        "layout": layout,
        "checksum": f"SHA256:{checksum}",
        "size": size,
    }


def write_release_files(build_dir: Path, process_types: dict[str, str],
                        config_vars: dict[str, str] | None = None) -> None:
    """``.release`` and its copy at RELEASE_COPY, inside the slug."""
    text = release_yaml(process_types, config_vars)
    (build_dir / ".release").write_text(text)
    copy = build_dir / RELEASE_COPY
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(text)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
