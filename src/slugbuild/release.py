"""Release metadata: what the slug declares, inside it (.release) and beside it (slug.json).

One place for every piece of it: the buildpacks' ``bin/release`` YAML (parsed
and merged), the process types (buildpack defaults, then the Procfile or the
inferred web process), ``.release`` inside the slug, and slug.json beside it.
Readers of a built slug (run, inspect, publish) read ``.release`` back here.

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
from typing import TYPE_CHECKING, Any

from . import __version__, errors
from .log import Reporter
from .procfile import (
    check_procfile_name,
    hook_warnings,
    parse_procfile,
    read_procfile,
    valid_process_type_name,
)
from .slug.archive import SlugLimits

if TYPE_CHECKING:
    import yaml
else:
    from .lazy_import import lazy_module

    # Only to read a buildpack's or a slug's release YAML, or to write one that is not
    # plain (``_plain_release_yaml``): a warm build of a Procfile app never loads it.
    yaml = lazy_module("yaml")

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


def merge(releases: list[ReleaseInfo]) -> ReleaseInfo:
    """Later buildpacks win for the same process type or config var."""
    merged = ReleaseInfo()
    for info in releases:
        merged.default_process_types.update(info.default_process_types)
        merged.config_vars.update(info.config_vars)
        merged.addons += [a for a in info.addons if a not in merged.addons]
    return merged


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
    plain = _plain_release_yaml(document)
    if plain is not None:
        return plain
    return yaml.safe_dump(document, sort_keys=False, explicit_start=True,
                          default_flow_style=False, allow_unicode=True, width=1 << 30)


# Strings PyYAML's emitter writes as plain scalars in a block mapping, read back as
# the same strings: ASCII words of these characters joined by single spaces, not
# starting with an indicator, a digit, a sign or a dot, holding no ": " and not ending
# in ":" (a conservative part of its rules: anything else is PyYAML's to write).
_PLAIN_SCALAR = re.compile(r"[A-Za-z_/][A-Za-z0-9_./:=$@%+,-]*(?: [A-Za-z0-9_./:=$@%+,-]+)*")
# Words YAML 1.1 reads as booleans or null (PyYAML quotes them), in any case.
_RESOLVED_WORDS = frozenset({"yes", "no", "true", "false", "on", "off", "null", "y", "n"})
_PLAIN_KEY_LENGTH = 100  # PyYAML writes keys of 128 characters or more as complex keys


def _plain(text: str) -> bool:
    return (_PLAIN_SCALAR.fullmatch(text) is not None and ": " not in text
            and not text.endswith(":") and text.lower() not in _RESOLVED_WORDS)


def _plain_release_yaml(document: dict[str, Any]) -> str | None:
    """``yaml.safe_dump`` of a release document (as ``release_yaml`` calls it) when
    every name and value is a plain scalar: the same text, without loading PyYAML
    (tests/test_procfile_release.py compares the two). None otherwise."""
    lines = ["---"]
    for key, value in document.items():
        if isinstance(value, list):
            if not all(isinstance(item, str) and _plain(item) for item in value):
                return None
            lines += [f"{key}:", *(f"- {item}" for item in value)] if value else [f"{key}: []"]
            continue
        if not all(isinstance(name, str) and _plain(name) and len(name) <= _PLAIN_KEY_LENGTH
                   and isinstance(item, str) and _plain(item) for name, item in value.items()):
            return None
        lines += [f"{key}:", *(f"  {name}: {item}" for name, item in value.items())] \
            if value else [f"{key}: {{}}"]
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


@dataclass
class Release:
    """What the slug declares: process types, release config var defaults, add-ons."""

    process_types: dict[str, str]
    config_vars: dict[str, str] = field(default_factory=dict)  # from bin/release
    addons: list[str] = field(default_factory=list)
    # How the web process was inferred (no Procfile), as slug.json's ``inference``.
    inference: dict[str, Any] | None = None


def decide_release(build_dir: Path, reporter: Reporter, declared: list[ReleaseInfo],
                   discovered: tuple[dict[str, str], dict[str, Any] | None] | None = None,
                   own_addons: list[str] | None = None) -> Release:
    """Buildpack defaults, then the app's own process types: ``discovered`` (the
    Python buildpack's Procfile or inferred web process, with the inference), else
    the Procfile. ``own_addons``: add-ons the built-in stages ask for."""
    if discovered is None:
        reporter.step("Discovering process types")
        discovered = (read_procfile(build_dir), None)
    own_types, inference = discovered
    merged = merge(declared)
    # The Procfile's types (or, without one, the inferred web process) win.
    process_types = {**merged.default_process_types, **own_types}
    for warning in [*check_procfile_name(build_dir), *hook_warnings(process_types)]:
        reporter.warn(warning)
    if declared and merged.default_process_types:
        reporter.detail("Buildpacks declare types -> "
                        + ", ".join(sorted(merged.default_process_types)))
    addons = list(dict.fromkeys([*merged.addons, *(own_addons or [])]))
    return Release(process_types, merged.config_vars, addons, inference)


def write_release(build_dir: Path, release: Release) -> None:
    """``.release`` (and its copy) into the slug, within what the slug's readers read."""
    write_release_files(build_dir, release.process_types, release.config_vars,
                        release.addons)
    check_release_readable(build_dir)


def check_release_readable(build_dir: Path) -> None:
    """The slug's Procfile and .release must be within what its readers (run,
    inspect, publish) read, or compile would write a slug its own tools refuse."""
    limit = SlugLimits.from_env().max_metadata_bytes
    for name in ("Procfile", ".release"):
        path = build_dir / name
        if path.is_file() and not path.is_symlink() and path.stat().st_size > limit:
            raise errors.PROCFILE_MALFORMED.error(
                variant="too-large", file=name, size=path.stat().st_size, limit=limit)


def slug_json_writer(release: Release, *, python_fields: dict[str, Any] | None,
                     platform: dict[str, str], layout: str,
                     buildpacks: list[dict[str, str]],
                     system_packages: list[dict[str, str]],
                     stack_requirements: dict[str, Any] | None = None,
                     app_json: dict[str, Any] | None = None,
                     ) -> Callable[[int, str], dict[str, Any]]:
    """slug.json for the packed slug's (size, sha256): what the build learned, with
    the Python buildpack's fields (runtime, package manager, packages, frameworks;
    None without it), the Aptfile's ``system_packages`` (only with one) and what the
    slug needs from a run image (``stack_compat.StackRequirements``)."""
    python = python_fields or {"runtime": None, "package_manager": None, "packages": [],
                               "frameworks": []}

    def describe(size: int, sha256: str) -> dict[str, Any]:
        metadata = slug_metadata(
            process_types=release.process_types,
            runtime=python["runtime"],
            package_manager=python["package_manager"],
            packages=python["packages"],
            platform=platform,
            checksum=sha256,
            size=size,
            layout=layout,
            framework=python["frameworks"],
            inference=release.inference,
            buildpacks=buildpacks,
            config_vars=release.config_vars,
            addons=release.addons,
        )
        if system_packages:
            metadata["system_packages"] = system_packages
        if stack_requirements is not None:
            metadata["stack_requirements"] = stack_requirements
        if app_json is not None:  # only with an app.json (app_json.py)
            metadata["app_json"] = app_json
        return metadata

    return describe
