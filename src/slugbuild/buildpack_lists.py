"""Where an app lists its buildpacks, and the forms real repositories write them in.

An app names its buildpacks in ``.buildpacks`` (herokuish and Dokku: one a
line) or in ``app.json``'s ``buildpacks`` (Heroku's app setup, review apps
and CI: ``[{"url": ...}]``); ``--buildpack`` wins over both, and ``.buildpacks``
over ``app.json``, as in Dokku. Each entry may be:

- a path to a buildpack directory (relative to the app for the files);
- a git URL, ``URL#ref`` naming a branch or tag;
- a buildpack registry name or GitHub shorthand, ``owner/name``: Heroku's own
  (``heroku/nodejs``, ``heroku-community/apt``) mean
  ``https://github.com/heroku/heroku-buildpack-<name>``, and any other owner
  ``https://github.com/<owner>/heroku-buildpack-<name>.git`` (Dokku's rule),
  unless a directory of that name exists;
- ``heroku/python`` and the other names of Heroku's Python buildpack: the
  built-in Python stages.

``DIR=URL`` lines belong to heroku-buildpack-subdir (run URL inside DIR, keep
the whole repository); slugbuild does not run buildpacks in subdirectories,
so such a line is refused with a message naming the form and the
``--app-base`` way to build a Python app kept in a subdirectory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from . import errors

APP_JSON = "app.json"
BUILDPACKS_FILE = ".buildpacks"
_SHORTHAND = re.compile(r"^(?P<owner>[A-Za-z0-9][A-Za-z0-9_.-]*)/"
                        r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?P<ref>#\S+)?$")
_SUBDIR_FORM = re.compile(r"^(?P<dir>[A-Za-z0-9_.][A-Za-z0-9_./-]*)=(?P<spec>\S+)$")
_HEROKU_OWNERS = ("heroku", "heroku-community")
# heroku-buildpack-monorepo: copies $APP_BASE over the build root (what --app-base does).
_MONOREPO_REPOSITORY = "lstoll/heroku-buildpack-monorepo"


# Names that mean "slugbuild's own Python support" in --buildpack or .buildpacks.
NATIVE_PYTHON_NAMES = {
    "python",
    "heroku/python",
    "slugbuild:python",
    "https://github.com/heroku/heroku-buildpack-python",
    "https://github.com/heroku/heroku-buildpack-python.git",
}

def listed_buildpacks(app_dir: Path) -> tuple[list[str], str | None]:
    """The app's buildpack specs and the file they came from (``.buildpacks``, else
    ``app.json``'s ``buildpacks``), expanded to what slugbuild runs."""
    listing = app_dir / BUILDPACKS_FILE
    if listing.is_file():
        # One buildpack a line; `#` starts a comment only at the start of a line,
        # since `URL#ref` uses it too.
        lines = (line.strip() for line in listing.read_text(errors="replace").splitlines())
        specs = [line for line in lines if line and not line.startswith("#")]
        return [expand_spec(spec, app_dir, BUILDPACKS_FILE) for spec in specs], BUILDPACKS_FILE
    manifest = app_dir / APP_JSON
    if manifest.is_file():
        specs = app_json_buildpacks(manifest)
        if specs:
            return [expand_spec(spec, app_dir, APP_JSON) for spec in specs], APP_JSON
    return [], None


def app_json_buildpacks(path: Path) -> list[str]:
    """``buildpacks[].url`` of an app.json (an empty list when it names none)."""
    def invalid(variant: str, **values: Any) -> errors.SlugbuildError:
        return errors.BUILDPACK_LIST_INVALID.error(variant=variant, source=APP_JSON, **values)

    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise invalid("not-json", error=exc.__class__.__name__, reason=str(exc)[:120]) from exc
    if not isinstance(data, dict):
        raise invalid("not-an-object")
    entries = data.get("buildpacks")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise invalid("not-a-list")
    specs = []
    for position, entry in enumerate(entries):
        url = entry.get("url") if isinstance(entry, dict) else None
        if not isinstance(url, str) or not url.strip():
            raise invalid("no-url", position=position)
        specs.append(url.strip())
    return specs


def expand_spec(spec: str, base: Path, source: str) -> str:
    """``spec`` as slugbuild runs it: shorthands made git URLs, the subdir form refused."""
    subdir = _SUBDIR_FORM.match(spec)
    if subdir and ":" not in subdir.group("dir"):
        raise errors.BUILDPACK_FORM_UNSUPPORTED.error(
            spec=spec, source=source, directory=subdir.group("dir"),
            buildpack=subdir.group("spec"))
    if spec.split("#", 1)[0].rstrip("/") in NATIVE_PYTHON_NAMES:
        return spec
    short = _SHORTHAND.match(spec)
    if short and not (base / spec.split("#", 1)[0]).exists():
        owner, name, ref = short.group("owner"), short.group("name"), short.group("ref") or ""
        if owner in _HEROKU_OWNERS:
            return f"https://github.com/heroku/heroku-buildpack-{name}{ref}"
        if not name.startswith("heroku-buildpack-"):
            name = f"heroku-buildpack-{name}"
        return f"https://github.com/{owner}/{name}.git{ref}"
    return spec


def is_monorepo_buildpack(spec: str) -> bool:
    """Whether ``spec`` (expanded) names heroku-buildpack-monorepo, at any ref."""
    url = spec.split("#", 1)[0].rstrip("/")
    url = url[:-len(".git")] if url.endswith(".git") else url
    return url.lower() in (f"https://github.com/{_MONOREPO_REPOSITORY}",
                           f"http://github.com/{_MONOREPO_REPOSITORY}",
                           f"git@github.com:{_MONOREPO_REPOSITORY}")
