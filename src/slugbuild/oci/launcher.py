"""The image's entrypoint: a POSIX sh launcher that starts a slug's processes as a dyno would.

An image built from a slug must run without slugbuild inside it, on a run image
that may have bash or only sh. The launcher (``LAUNCHER_PATH``, the image's
``Entrypoint``, with no ``Cmd``) does what herokuish's ``/start`` and ``/exec``
do, in POSIX sh:

- ``cd /app``, ``HOME=/app``, ``PORT`` 5000 unless set (as Dokku, ``heroku local``
  and foreman give it), ``DYNO`` as Heroku names it (``web.1``, ``run.1``);
- the release config var defaults from buildpacks' ``bin/release`` (kept in
  ``RELEASE_ENV``), then the slug's ``.profile.d/*.sh`` sourced;
- ``IMAGE`` runs the ``web`` process type, ``IMAGE worker`` another one, through
  ``bash -c`` when the run image has bash (``sh -c`` otherwise), exec'd so the
  server is the process that gets the container's signals;
- ``IMAGE -- CMD ARGS…`` runs a one-off command in the same environment (as
  ``heroku run``): several arguments are exec'd as given (their quoting kept),
  a single one is a shell command line (``-- "python manage.py migrate && echo ok"``).

Process types are files (one per type, ``PROCESS_DIR/NAME``, the command as its
text), so the launcher needs no YAML parser; they come from slug.json's
``process_types`` (the same as ``.release``). The whole launcher is re-run by
bash when bash exists, so the profile scripts (written for bash on Heroku) are
sourced by bash.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

APP_DIR = "/app"
LAUNCHER_DIR = "/slugbuild"
LAUNCHER_PATH = f"{LAUNCHER_DIR}/launch"
PROCESS_DIR = f"{LAUNCHER_DIR}/process"
RELEASE_ENV = f"{LAUNCHER_DIR}/release-env.sh"
DEFAULT_PORT = 5000
# The names a process type file may have (the Procfile's and .release's names).
PROCESS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_SCRIPT = r"""#!/bin/sh
# slugbuild launcher: starts a process type of the slug in /app as a dyno would.
#   IMAGE                 the web process type
#   IMAGE TYPE            another process type (worker, release, ...)
#   IMAGE -- CMD ARGS...  a one-off command (as `heroku run`)
# Re-run by bash when the image has it: .profile.d scripts are written for bash.
if [ -z "${BASH_VERSION:-}" ] && command -v bash >/dev/null 2>&1; then
  exec bash "$0" "$@"
fi
launcher=@LAUNCHER_DIR@
shell=sh
[ -n "${BASH_VERSION:-}" ] && shell=bash

fail() {
  echo "slugbuild launcher: $*" >&2
  exit 1
}

if [ "${1:-}" = "--" ]; then
  shift
  [ "$#" -gt 0 ] || fail "nothing to run after --: give a command, e.g. -- python manage.py check"
  dyno=run.1
  process=
else
  process="${1:-web}"
  [ "$#" -le 1 ] ||
    fail "one process type at a time, got: $*; run a command with: -- CMD ARGS..."
  case "$process" in
    ""|.*|*/*) fail "'$process' is not a process type name" ;;
  esac
  if [ ! -f "$launcher/process/$process" ]; then
    known=$(cd "$launcher/process" 2>/dev/null && ls | tr '\n' ' ')
    fail "no process type '$process' in this image (it has: ${known:-none});" \
      "run a command with: -- CMD ARGS..."
  fi
  command=$(cat "$launcher/process/$process")
  dyno="$process.1"
  set --
fi

cd @APP_DIR@ || fail "the app directory @APP_DIR@ is missing"
export HOME=@APP_DIR@
export PORT="${PORT:-@DEFAULT_PORT@}"
export DYNO="${DYNO:-$dyno}"
[ -r "$launcher/release-env.sh" ] && . "$launcher/release-env.sh"
for profile in "$HOME"/.profile.d/*.sh; do
  [ -r "$profile" ] && . "$profile"
done
unset profile launcher dyno known

if [ -n "$process" ]; then
  exec "$shell" -c "$command"
elif [ "$#" -eq 1 ]; then
  exec "$shell" -c "$1"
else
  exec "$@"
fi
"""


def launcher_script(app_dir: str = APP_DIR, launcher_dir: str = LAUNCHER_DIR) -> str:
    """The launcher's text. ``app_dir``/``launcher_dir`` are the image's paths; tests
    point them at an unpacked slug to run the launcher with sh directly."""
    for value in (app_dir, launcher_dir):
        if not value.startswith("/") or _needs_quoting(value):
            raise ValueError(f"launcher paths must be absolute and plain: {value!r}")
    return (_SCRIPT.replace("@LAUNCHER_DIR@", launcher_dir).replace("@APP_DIR@", app_dir)
            .replace("@DEFAULT_PORT@", str(DEFAULT_PORT)))


def release_env_script(config_vars: Mapping[str, str]) -> str:
    """Release config var defaults (bin/release's ``config_vars``) as sh: each is set
    only when the container's environment does not have it."""
    lines = ["# Release config var defaults (from buildpacks' bin/release); the\n",
             "# container's own environment wins.\n"]
    for name, value in config_vars.items():
        if not ENV_NAME.fullmatch(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        lines.append(f"if [ -z \"${{{name}+set}}\" ]; then {name}={shell_quote(value)}; "
                     f"export {name}; fi\n")
    return "".join(lines)


def launcher_files(process_types: Mapping[str, str],
                   config_vars: Mapping[str, str] | None = None,
                   launcher_dir: str = LAUNCHER_DIR, app_dir: str = APP_DIR,
                   ) -> dict[str, tuple[bytes, int]]:
    """The launcher's files for an image: absolute path -> (content, mode).

    ``process_types`` is slug.json's (or ``.release``'s) ``process_types``. A name
    that could not be a file name (none the Procfile or .release accepts) is
    refused rather than written somewhere else.
    """
    files: dict[str, tuple[bytes, int]] = {
        f"{launcher_dir}/launch": (launcher_script(app_dir, launcher_dir).encode(), 0o755),
        f"{launcher_dir}/release-env.sh": (release_env_script(config_vars or {}).encode(),
                                           0o644),
    }
    for name, command in sorted(process_types.items()):
        if not PROCESS_NAME.fullmatch(name):
            raise ValueError(f"process type name {name!r} cannot be a launcher file")
        files[f"{launcher_dir}/process/{name}"] = (command.encode(), 0o644)
    return files


def shell_quote(value: str) -> str:
    """``value`` as one single-quoted sh word."""
    return "'" + value.replace("'", "'\\''") + "'"


def _needs_quoting(value: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_./-]+", value) is None
