"""app.json, read where Heroku reads it.

Heroku reads an app's ``app.json`` at app setup (Heroku Button, ``heroku
apps:create --manifest``... ), for review apps and for Heroku CI, not on a
``git push``: its ``env`` becomes the new app's config vars (so the first build
sees them), and ``scripts.postdeploy`` runs once after that first release.
Dokku runs ``scripts.dokku.predeploy``/``postdeploy`` on every deploy.

slugbuild (docs/app-json.md):

- always reads and checks app.json when the app has one: a malformed file is
  one ``app-json-invalid`` error, before any work;
- records its scripts (``postdeploy``, ``pr-predestroy``, Dokku's
  ``predeploy``/``postdeploy``) in slug.json's ``app_json``, for the deployer
  that runs them;
- applies its ``env`` to the build only when asked (``--app-json-env``,
  ``compile_app(app_json_env=True)``), as an app setup or a review app would:
  a value is a default (a config var given to the build wins), a ``generator:
  secret`` gets a fresh random secret, and a ``required`` var without a value
  that the build was not given is an ``app-json-env-required`` error. The names
  applied are recorded; their values never are.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import errors
from .buildpack_lists import APP_JSON
from .config_vars import load_config_vars
from .log import Reporter

# scripts whose commands slug.json records: Heroku's, then Dokku's (scripts.dokku.*).
_SCRIPTS = ("postdeploy", "pr-predestroy")
_DOKKU_SCRIPTS = ("predeploy", "postdeploy")


@dataclass(frozen=True)
class EnvEntry:
    """One ``env`` entry of app.json."""

    name: str
    value: str | None
    required: bool
    generator: str | None


@dataclass(frozen=True)
class AppJson:
    """What slugbuild uses of an app's app.json."""

    env: tuple[EnvEntry, ...]
    scripts: dict[str, str]  # "postdeploy", "pr-predestroy", "dokku.predeploy", ...
    # The env names applied to this build (apply_app_json), never their values.
    applied: tuple[str, ...] = ()

    def build_env(self, given: Mapping[str, str]) -> dict[str, str]:
        """The config vars app.json's env adds to ``given`` (which win), as an app
        setup would set them; raises app-json-env-required for a missing one."""
        added: dict[str, str] = {}
        missing = []
        for entry in self.env:
            if entry.name in given:
                continue
            if entry.value is not None:
                added[entry.name] = entry.value
            elif entry.generator == "secret":
                added[entry.name] = secrets.token_hex(32)  # 64 hex digits, fresh each build
            elif entry.required:
                missing.append(entry.name)
        if missing:
            raise errors.APP_JSON_ENV_REQUIRED.error(names=", ".join(missing))
        return added

    def slug_fields(self) -> dict[str, Any]:
        """slug.json's ``app_json``: its scripts, and the env names applied (no values)."""
        return {"scripts": dict(sorted(self.scripts.items())),
                "env_applied": sorted(self.applied)}


def apply_app_json(app_dir: Path, config_vars: dict[str, str], apply_env: bool,
                   reporter: Reporter) -> tuple[AppJson | None, dict[str, str]]:
    """The app's app.json (checked), and the build's config vars with its env applied
    when ``apply_env`` (``--app-json-env``); the given ones win."""
    manifest = read_app_json(app_dir)
    if manifest is None or not apply_env:
        return manifest, config_vars
    added = manifest.build_env(config_vars)
    if added:
        reporter.step(f"Applying app.json env to the build: {', '.join(sorted(added))}")
    # Checked and registered as secrets like every config var.
    merged = load_config_vars({**added, **config_vars})
    return dataclasses.replace(manifest, applied=tuple(sorted(added))), merged


def read_app_json(app_dir: Path) -> AppJson | None:
    """The app's app.json (None without one), checked: a malformed one fails here."""
    path = app_dir / APP_JSON
    if not path.is_file():
        return None

    def invalid(variant: str, **values: Any) -> errors.SlugbuildError:
        return errors.APP_JSON_INVALID.error(variant=variant, **values)

    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise invalid("not-json", error=exc.__class__.__name__, reason=str(exc)[:120]) from exc
    if not isinstance(data, dict):
        raise invalid("not-an-object")
    return AppJson(_env(data.get("env", {}), invalid), _scripts(data.get("scripts", {}), invalid))


def _env(env: object, invalid: Any) -> tuple[EnvEntry, ...]:
    if env is None:
        return ()
    if not isinstance(env, dict):
        raise invalid("env-not-an-object")
    entries = []
    for name, spec in env.items():
        if isinstance(spec, str):  # the shorthand: the value itself
            entries.append(EnvEntry(name, spec, False, None))
            continue
        if not isinstance(spec, dict):
            raise invalid("env-entry", name=name, problem="is neither a string nor an object")
        value = spec.get("value")
        if value is not None and not isinstance(value, str):
            raise invalid("env-entry", name=name, problem="has a `value` that is not a string")
        generator = spec.get("generator")
        if generator is not None and generator != "secret":
            raise invalid("env-entry", name=name,
                          problem=f"has the generator {generator!r} (Heroku knows `secret`)")
        required = spec.get("required", True)  # Heroku: required unless said otherwise
        if not isinstance(required, bool):
            raise invalid("env-entry", name=name, problem="has `required` that is not true "
                                                          "or false")
        entries.append(EnvEntry(name, value, required, generator))
    return tuple(entries)


def _scripts(scripts: object, invalid: Any) -> dict[str, str]:
    if scripts is None:
        return {}
    if not isinstance(scripts, dict):
        raise invalid("scripts-not-an-object")
    found = {}
    for name in _SCRIPTS:
        command = _command(scripts.get(name), name, invalid)
        if command is not None:
            found[name] = command
    dokku = scripts.get("dokku")
    if isinstance(dokku, dict):
        for name in _DOKKU_SCRIPTS:
            command = _command(dokku.get(name), f"dokku.{name}", invalid)
            if command is not None:
                found[f"dokku.{name}"] = command
    elif dokku is not None:
        raise invalid("script", script="dokku", problem="is not an object")
    return found


def _command(spec: object, script: str, invalid: Any) -> str | None:
    """A script as a string, or Heroku's {"command": ..., "size": ...} form."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        spec = spec.get("command")
    if not isinstance(spec, str) or not spec.strip():
        raise invalid("script", script=script, problem="is not a command string")
    return spec
