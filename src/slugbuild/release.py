"""Release metadata: slug.json beside the slug and .release inside it.

Field names follow Heroku's slug object where one exists (``process_types``,
``checksum``, ``stack``, ``buildpack_provided_description``). slug.json holds
nothing that differs between two builds of the same inputs (no times, no
paths of the build machine) and never a config var.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import __version__, errors
from .procfile import parse_procfile, valid_process_type_name

BUILDPACK_DESCRIPTION = "Python"
SLUG_JSON_FORMAT = 1
# A copy of .release that herokuish does not truncate; bin/release reads it back.
RELEASE_COPY = ".heroku/slugbuild/release.yml"
_CONFIG_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class ReleaseInfo:
    """What the buildpacks' bin/release scripts declared, merged in order."""

    default_process_types: dict[str, str] = field(default_factory=dict)
    config_vars: dict[str, str] = field(default_factory=dict)
    addons: list[str] = field(default_factory=list)


def parse_release_yaml(text: str, source: str) -> ReleaseInfo:
    """``default_process_types``, ``config_vars`` and ``addons`` of bin/release output.

    Every scalar is read as the string it is written as (PyYAML's BaseLoader):
    a process type named ``on`` stays ``"on"`` and ``PORT: 0800`` stays
    ``"0800"``. Names are checked here, at build time, so a slug never carries
    a process type ``run`` cannot start or a config var no process can see.
    Here rather than in the buildpack runner: slug readers (run, inspect) read
    a slug's ``.release`` with it too.
    """

    def invalid(variant: str, **values: Any) -> errors.SlugbuildError:
        return errors.BUILDPACK_RELEASE_INVALID.error(
            variant=variant, spec=source, output=text[-2000:], **values)

    try:
        data = yaml.load(text, Loader=yaml.BaseLoader) if text.strip() else {}
    except (yaml.YAMLError, RecursionError) as exc:  # deep nesting: RecursionError
        raise invalid("not-yaml", reason=exc.__class__.__name__) from exc
    if data is None or data == "":
        data = {}
    if not isinstance(data, dict):
        raise invalid("not-a-mapping")

    def mapping(key: str, valid_name: Callable[[str], object], bad_name: str
                ) -> dict[str, str]:
        value = data.get(key) or {}
        if not isinstance(value, dict):
            raise invalid("key-not-a-mapping", key=key)
        checked: dict[str, str] = {}
        for name, item in value.items():
            shown = repr(name)[:80]
            if not isinstance(name, str) or not valid_name(name):
                raise invalid(bad_name, name=shown)
            if not isinstance(item, str):
                raise invalid("value-not-a-string", key=key, name=shown)
            if "\0" in item:
                raise invalid("value-holds-nul", key=key, name=shown)
            checked[name] = item
        return checked

    process_types = mapping("default_process_types", valid_process_type_name,
                            "bad-process-type-name")
    for name, command in process_types.items():
        if not command.strip():
            raise invalid("no-command", process=name)
    config_vars = mapping("config_vars", _CONFIG_VAR_NAME.fullmatch, "bad-config-var-name")
    addons = data.get("addons") or []
    if not isinstance(addons, list) or not all(isinstance(a, str) for a in addons):
        raise invalid("addons-not-names")
    return ReleaseInfo(process_types, config_vars, list(addons))


def slug_release(release_text: str | None, procfile_text: str | None) -> ReleaseInfo:
    """What a built slug declares: its ``.release``, with the Procfile's types winning.

    ``.release`` also holds inferred and buildpack-declared types and the
    buildpacks' config var defaults.
    """
    declared = parse_release_yaml(release_text, ".release") if release_text else ReleaseInfo()
    if procfile_text is not None:
        declared.default_process_types.update(parse_procfile(procfile_text))
    return declared


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
