"""Release metadata: process types from the app's Procfile.

A line is ``name: command``: the name is everything before the first ``:``,
the command everything after it, run as ``bash -c`` would run it (see slug/run.py).
Parsing is a split at the first colon, never a backtracking regular
expression, so a hostile slug's long line costs linear time.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import errors
from .textfiles import read_text_like_pip

PROCFILE = "Procfile"
# Heroku's rule for process type names (and so for bin/release's).
PROCESS_TYPE_NAME = re.compile(r"[A-Za-z0-9_-]+")
# Names the user most likely meant as a Procfile (compared lower-cased).
_MISSPELLINGS = frozenset({"procfile", "procfile.txt", "procfile.yml", "procfile.yaml"})
# Procfile entries other platforms run as deploy hooks, not as processes:
# name -> (platform, what it does there).
HOOK_ENTRIES: dict[str, tuple[str, str]] = {
    "postdeploy": ("Scalingo", "runs it in a one-off container after each deployment, "
                               "before the new version takes traffic; its failure "
                               "fails the deployment"),
}


def valid_process_type_name(name: str) -> bool:
    """True for names Heroku accepts as a process type (letters, digits, ``_``, ``-``)."""
    return PROCESS_TYPE_NAME.fullmatch(name) is not None


def parse_procfile(text: str) -> dict[str, str]:
    """Process types in file order; a malformed line raises PROCFILE_MALFORMED."""
    processes: dict[str, str] = {}
    text = text.removeprefix("\ufeff")  # a BOM, however the text was decoded
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, command = line.partition(":")
        if not colon:
            _fail(number, raw, "no-colon")
        name, command = name.rstrip(), command.strip()
        if not valid_process_type_name(name):
            _fail(number, raw, "bad-name", name=name[:80])
        if not command:
            _fail(number, raw, "no-command", name=name)
        if name in processes:
            _fail(number, raw, "declared-twice", name=name)
        processes[name] = command
    return processes


def _fail(number: int, raw: str, variant: str, name: str = "") -> None:
    raise errors.PROCFILE_MALFORMED.error(variant=variant, line=number, name=name,
                                          text=raw.strip()[:200])


def misspelled_procfiles(app_dir: Path) -> list[str]:
    """Files in ``app_dir`` named like a Procfile but not exactly ``Procfile``."""
    try:
        names = [entry.name for entry in app_dir.iterdir()]
    except OSError:
        return []
    return sorted(n for n in names if n != PROCFILE and n.lower() in _MISSPELLINGS)


def check_procfile_name(app_dir: Path) -> list[str]:
    """Raise MISSPELLED_PROCFILE when the only Procfile-like file has the wrong name;
    with a real Procfile beside it, return the warnings to show instead."""
    wrong = misspelled_procfiles(app_dir)
    if not wrong:
        return []
    if not (app_dir / PROCFILE).is_file() or _same_file(app_dir, wrong[0]):
        raise errors.MISSPELLED_PROCFILE.error(found=wrong[0])
    return [f"{name} is not read (only a file named exactly Procfile is); the Procfile "
            f"beside it is used. Remove {name} or merge it into the Procfile."
            for name in wrong]


def _same_file(app_dir: Path, name: str) -> bool:
    """On a case-insensitive file system ``Procfile`` may open ``procfile``."""
    try:
        return (app_dir / name).samefile(app_dir / PROCFILE)
    except OSError:
        return False


def hook_warnings(process_types: dict[str, str]) -> list[str]:
    """Warnings for Procfile entries that another platform treats as a hook."""
    return [
        f"The Procfile entry `{name}` is a {platform} deploy hook ({platform} {effect}); "
        f"on Heroku and Dokku it is a process type that is never started. slugbuild "
        f"keeps it as a process type and records it in slug.json as "
        f"`{name}_command`: run it after a deploy with `slugbuild run SLUG {name}`, or "
        f"rename it `release` for Heroku's release phase."
        for name, (platform, effect) in HOOK_ENTRIES.items() if name in process_types
    ]


def read_procfile(app_dir: Path) -> dict[str, str]:
    """Process types of the app, or {} when it has no Procfile.

    A misspelled Procfile with no real one beside it raises MISSPELLED_PROCFILE.
    """
    check_procfile_name(app_dir)
    path = app_dir / PROCFILE
    if not path.is_file():
        return {}
    try:
        text = read_text_like_pip(path)  # a BOM (UTF-8, UTF-16, UTF-32), CRLF: as pip
    except errors.SlugbuildError as exc:
        raise errors.PROCFILE_MALFORMED.error(
            variant="not-text", line=1, reason=exc.found.rstrip("."), text="") from None
    return parse_procfile(text)
