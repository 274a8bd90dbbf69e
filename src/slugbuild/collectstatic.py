"""collectstatic stage: Django's static files gathered at build time."""

from __future__ import annotations

from pathlib import Path

from . import errors
from .log import Reporter
from .proc import ToolFailed, clean_env, exported_config, run_tool


def collectstatic_disabled(config_vars: dict) -> bool:
    """DISABLE_COLLECTSTATIC set to anything but empty or 0 turns the step off."""
    value = config_vars.get("DISABLE_COLLECTSTATIC", "").strip()
    return value not in ("", "0")


def run_collectstatic(
    build_dir: Path,
    manage_py: str | None,
    django_installed: bool,
    python: Path,
    config_vars: dict,
    reporter: Reporter,
) -> bool:
    """Run ``manage.py collectstatic --noinput``; return whether it ran."""
    if not manage_py or not django_installed:
        return False
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
        raise errors.COLLECTSTATIC_FAILED.error(
            manage_py=manage_py, exit_code=failed.exit_code, output=failed.tail
        ) from failed
    return True
