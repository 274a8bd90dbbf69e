"""collectstatic stage: Django's static files gathered at build time.

Runs like Heroku's Python buildpack: only for a Django app (manage.py found,
Django installed), skipped when DISABLE_COLLECTSTATIC is set, with the build's
config vars in the environment. A failure names its likely cause from the
output; DEBUG_COLLECTSTATIC=1 also prints the environment: every name, but the
values only of the few variables the build itself sets (PATH, LANG...). A
config var (or a host variable) can be a secret whatever its name, so its
value is shown as its length only (docs/security.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from . import errors
from .log import Reporter
from .proc import ToolFailed, clean_env, exported_config, run_tool
from .redact import mask, redact_url, showing_secrets

# Variables the build sets whose values are printed (unless a config var set them).
_SHOWN_VALUES = frozenset({
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE",
    "DEBUG_COLLECTSTATIC", "DISABLE_COLLECTSTATIC",
})

# (pattern over the output, explanation); the first group names what is missing.
_DIAGNOSES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"ImproperlyConfigured: Set the (\w+) environment variable"),
     "settings need the environment variable {0}, which the build does not have: "
     "pass it with --env {0}=... or a file named {0} in --env-dir"),
    (re.compile(r"KeyError: '(\w+)'"),
     "settings read the environment variable {0} (KeyError), which the build does not "
     "have: pass it with --env {0}=... or a file named {0} in --env-dir"),
    (re.compile(r"The (SECRET_KEY) setting must not be empty"),
     "the {0} setting is empty: settings probably read it from an environment variable "
     "the build does not have"),
    (re.compile(r"without having set the (STATIC_ROOT) setting"),
     "{0} is not set in settings"),
    (re.compile(r"The file '([^']+)' could not be found with"),
     "manifest storage could not find {0}, which a CSS or JS file refers to"),
    (re.compile(r"No module named '([\w.]+)'"),
     "the module {0} cannot be imported: is its package in requirements.txt?"),
)


def collectstatic_disabled(config_vars: Mapping[str, str]) -> bool:
    """DISABLE_COLLECTSTATIC set to anything but empty or 0 turns the step off."""
    value = config_vars.get("DISABLE_COLLECTSTATIC", "").strip()
    return value not in ("", "0")


def diagnose(output: str) -> str | None:
    """The likely cause of a collectstatic failure, read from its output."""
    for pattern, explanation in _DIAGNOSES:
        match = pattern.search(output)
        if match:
            return explanation.format(match.group(1))
    return None


def masked_environment(env: Mapping[str, str],
                       config_vars: Mapping[str, str] | None = None) -> list[str]:
    """``NAME=value`` lines, sorted; a value not set by the build shows as its length.

    ``SLUGBUILD_SHOW_SECRETS=1`` (slugbuild's own environment) shows every value,
    URL credentials still masked.
    """
    config_vars = config_vars or {}
    reveal = showing_secrets()
    lines = []
    for name in sorted(env):
        value = env[name]
        if reveal or (name in _SHOWN_VALUES and name not in config_vars):
            shown = mask(redact_url(value))
        else:
            shown = f"<hidden, {len(value)} characters>" if value else ""
        lines.append(f"{mask(name)}={shown}")
    return lines


def run_collectstatic(
    build_dir: Path,
    manage_py: str | None,
    django_installed: bool,
    python: Path,
    config_vars: Mapping[str, str],
    reporter: Reporter,
) -> bool:
    """Run ``manage.py collectstatic --noinput``; return whether it ran."""
    if not manage_py or not django_installed or not (build_dir / manage_py).is_file():
        return False  # not Django, or manage.py left out by .slugignore
    if collectstatic_disabled(config_vars):
        reporter.step("Skipping Django collectstatic since DISABLE_COLLECTSTATIC is set")
        return False
    reporter.step(f"$ python {manage_py} collectstatic --noinput")
    env = clean_env(
        {**exported_config(config_vars), "PYTHONDONTWRITEBYTECODE": "1",
         "PYTHONNOUSERSITE": "1"},
        path_first=[python.parent],
    )
    argv = [python, manage_py, "collectstatic", "--noinput", "--traceback"]
    try:
        run_tool(argv, reporter, env, cwd=build_dir)
    except ToolFailed as failed:
        if config_vars.get("DEBUG_COLLECTSTATIC", "").strip() not in ("", "0"):
            reporter.warn("DEBUG_COLLECTSTATIC: collectstatic ran with this environment "
                          "(values hidden but those the build sets):")
            for line in masked_environment(env, config_vars):
                reporter.detail(line)
        cause = diagnose(failed.tail)
        raise errors.COLLECTSTATIC_FAILED.error(
            manage_py=manage_py, exit_code=failed.exit_code, output=failed.tail,
            diagnosis=f"\nLikely cause: {cause}." if cause else "",
        ) from failed
    return True
