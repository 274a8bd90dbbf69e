"""collectstatic stage: Django's static files gathered at build time.

Runs like Heroku's Python buildpack: only for a Django app (manage.py found,
Django installed), skipped when DISABLE_COLLECTSTATIC is set, with the build's
config vars in the environment: its environment is Heroku's build environment
(the config vars, earlier buildpacks' exports and a fixed base,
``proc.build_base_env``), never the host's other variables, so its reused
output is keyed by exactly what it sees. A failure names its likely cause from the
output; DEBUG_COLLECTSTATIC=1 also prints the environment: every name, but the
values only of the few variables the build itself sets (PATH, LANG...). A
config var (or a host variable) can be a secret whatever its name, so its
value is shown as its length only (docs/security.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from . import errors
from .importcheck import MISSING_MODULE, diagnose_missing_module
from .log import Reporter
from .proc import ToolFailed, build_base_env, clean_env, exported_config, run_tool
from .redact import mask, redact_url, showing_secrets

if TYPE_CHECKING:
    from .layer_overlay import LayerAccess
    from .static_reuse import StaticReuse

# Variables the build sets whose values are printed (unless a config var set them).
_SHOWN_VALUES = frozenset({
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE",
    "DEBUG_COLLECTSTATIC", "DISABLE_COLLECTSTATIC",
})

# (pattern over the output, explanation); the first group names what is missing.
_DIAGNOSES: tuple[tuple[re.Pattern[str], str], ...] = (
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
)


def collectstatic_disabled(config_vars: Mapping[str, str]) -> bool:
    """DISABLE_COLLECTSTATIC set to anything but empty or 0 turns the step off."""
    value = config_vars.get("DISABLE_COLLECTSTATIC", "").strip()
    return value not in ("", "0")


# Why collectstatic does or does not run (collectstatic_decision; `slugbuild plan`).
DISABLED = "DISABLE_COLLECTSTATIC is set"


def collectstatic_decision(build_dir: Path, manage_py: str | None, django_installed: bool,
                           config_vars: Mapping[str, str]) -> tuple[bool, str]:
    """Whether the step runs, and why: the one rule for the build and for a plan."""
    if not manage_py or not (build_dir / manage_py).is_file():
        return False, "no manage.py (not a Django app)"  # or left out by .slugignore
    if not django_installed:
        return False, "Django is not among the app's packages"
    if collectstatic_disabled(config_vars):
        return False, DISABLED
    return True, f"Django app ({manage_py}) with Django among its packages"


def diagnose(output: str, python_version: str | None = None,
             lock_file: str = "requirements.txt", build_dir: Path | None = None) -> str | None:
    """The likely cause of a collectstatic failure, read from its output (one
    sentence, no final punctuation). A missing module is explained for the
    runtime's Python (``importcheck.explain_missing_module``): a standard
    library module it no longer has, setuptools' pkg_resources, or a package
    missing from ``lock_file``."""
    # The error reported last wins: Django chains a settings failure to a KeyError
    # of its own ("During handling of the above exception ...").
    found: list[tuple[int, str]] = []
    for pattern, explanation in _DIAGNOSES:
        matches = list(pattern.finditer(output))
        if matches:
            found.append((matches[-1].start(), explanation.format(matches[-1].group(1))))
    missing = list(MISSING_MODULE.finditer(output))
    if missing:
        if python_version is not None:
            cause = diagnose_missing_module(output, python_version, lock_file,
                                            hide=str(build_dir) if build_dir else None)
        else:
            cause = (f"the module {missing[-1].group(1)} cannot be imported: add the package "
                     f"that provides it to {lock_file}, or check the name")
        found.append((missing[-1].start(), cause or ""))
    return max(found)[1] if found else None


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
    python_version: str | None = None,
    lock_file: str = "requirements.txt",
    exports: Mapping[str, str] | None = None,
    reuse: StaticReuse | None = None,
    layers: LayerAccess | None = None,
) -> bool:
    """Run ``manage.py collectstatic --noinput``; return whether it ran.
    ``exports``: what earlier buildpacks exported (proc.clean_env). ``reuse``: an
    earlier run's output with the same inputs is applied instead of running, and a
    run's output kept (static_reuse.py).

    ``python_version`` (the runtime's) and ``lock_file`` let a failure name a
    missing module's real cause.
    """
    runs, why = collectstatic_decision(build_dir, manage_py, django_installed, config_vars)
    if not runs:
        if why == DISABLED:
            reporter.step("Skipping Django collectstatic since DISABLE_COLLECTSTATIC is set")
        return False
    assert manage_py is not None
    reporter.step(f"$ python {manage_py} collectstatic --noinput")
    # Heroku's build environment: config vars, earlier buildpacks' exports and a fixed
    # base, not the host's own variables; the reuse key covers exactly this.
    env = clean_env(
        {**exported_config(config_vars), "PYTHONDONTWRITEBYTECODE": "1",
         "PYTHONNOUSERSITE": "1"},
        path_first=[python.parent], exports=exports, host=build_base_env(),
    )
    argv: list[str | Path] = [python, manage_py, "collectstatic", "--noinput", "--traceback"]
    if reuse is not None:
        if reuse.apply(env, [str(arg) for arg in argv]):
            return True

    def start(command: list[str | Path]) -> str:
        if reuse is not None:
            reuse.before_run(layers.prefix_written if layers is not None and layers.sealed
                             else None)
        return run_tool(command, reporter, env, cwd=build_dir,
                        step=f"`python {manage_py} collectstatic`")

    try:
        if layers is not None:
            layers.run_step(argv, start)
        else:
            start(argv)
    except ToolFailed as failed:
        if config_vars.get("DEBUG_COLLECTSTATIC", "").strip() not in ("", "0"):
            reporter.warn("DEBUG_COLLECTSTATIC: collectstatic ran with this environment "
                          "(values hidden but those the build sets):")
            for line in masked_environment(env, config_vars):
                reporter.detail(line)
        cause = diagnose(failed.output, python_version, lock_file, build_dir)
        # Its output is in the log above already: kept on the error, not printed twice.
        raise errors.COLLECTSTATIC_FAILED.error(
            manage_py=manage_py, exit_code=failed.exit_code, output=failed.tail,
            output_shown=True,
            diagnosis=f"\nLikely cause: {cause.rstrip('.?!')}." if cause else "",
        ) from failed
    if reuse is not None:
        reuse.keep()
    return True
