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

import yaml

from . import __version__

BUILDPACK_DESCRIPTION = "Python"
SLUG_JSON_FORMAT = 1
# A copy of .release that herokuish does not truncate; bin/release reads it back.
RELEASE_COPY = ".heroku/slugbuild/release.yml"


def release_yaml(process_types: dict[str, str],
                 config_vars: dict[str, str] | None = None,
                 addons: list[str] | None = None) -> str:
    """``bin/release`` style YAML, as herokuish writes to ``.release``.

    Written by PyYAML, so any name or command round-trips: a process type named
    ``on``, ``null`` or ``1`` is quoted, and readers (buildpack_runner's
    parse_release_yaml) load every scalar as a string.
    """
    document = {
        "addons": list(addons or []),
        "config_vars": dict(config_vars or {}),
        "default_process_types": dict(process_types),
    }
    return yaml.safe_dump(document, sort_keys=False, explicit_start=True,
                          default_flow_style=False, allow_unicode=True, width=1 << 30)


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
    addons: list[str] | None = None,
) -> dict[str, Any]:
    """slug.json. ``buildpacks`` lists the buildpacks run (none: the built-in Python
    stages alone); ``config_vars`` are defaults their bin/release declared, not
    the build's config vars, which never appear here. ``addons`` are those
    bin/release asks for (Heroku provisions them on the app's first release)."""
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
        "postdeploy_command": process_types.get("postdeploy"),
        "addons": list(addons or []),
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


def python_addons(build_dir: Path) -> list[str]:
    """Add-ons Heroku's Python buildpack asks for in bin/release: Postgres for a
    Django app (``manage.py`` at the root) that has ``psycopg2`` importable."""
    if not (build_dir / "manage.py").is_file():
        return []
    site = build_dir / ".heroku" / "python" / "lib"
    for site_packages in sorted(site.glob("python*/site-packages")):
        if all(_importable(site_packages, module) for module in ("django", "psycopg2")):
            return ["heroku-postgresql"]
    return []


def _importable(site_packages: Path, module: str) -> bool:
    return ((site_packages / module / "__init__.py").is_file()
            or any(site_packages.glob(f"{module}.*.so")))


def write_release_files(build_dir: Path, process_types: dict[str, str],
                        config_vars: dict[str, str] | None = None,
                        addons: list[str] | None = None) -> None:
    """``.release`` and its copy at RELEASE_COPY, inside the slug."""
    text = release_yaml(process_types, config_vars, addons)
    (build_dir / ".release").write_text(text)
    copy = build_dir / RELEASE_COPY
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(text)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
