"""A stand-in for helper "stack"'s launcher (``oci/launcher.py``) until it lands.

Same interface: ``LAUNCHER_PATH`` and ``launcher_files(process_types, config_vars)``.
It runs a process type (default ``web``) or ``-- CMD ARGS`` in /app with
``.profile.d`` sourced; the real launcher adds release config vars, DYNO and
the bash/sh choice.
"""

from __future__ import annotations

from collections.abc import Mapping

LAUNCHER_DIR = "/slugbuild"
LAUNCHER_PATH = f"{LAUNCHER_DIR}/launch"

_SCRIPT = """#!/bin/sh
cd /app || exit 1
export HOME=/app
export PORT="${PORT:-5000}"
for profile in /app/.profile.d/*.sh; do
  [ -r "$profile" ] && . "$profile"
done
if [ "${1:-}" = "--" ]; then
  shift
  exec "$@"
fi
command=$(cat "/slugbuild/process/${1:-web}") || exit 1
exec sh -c "$command"
"""


def launcher_files(process_types: Mapping[str, str],
                   config_vars: Mapping[str, str] | None = None,
                   ) -> dict[str, tuple[bytes, int]]:
    """The launcher's files for an image: absolute path -> (content, mode)."""
    files = {LAUNCHER_PATH: (_SCRIPT.encode(), 0o755)}
    for name, command in sorted(process_types.items()):
        files[f"{LAUNCHER_DIR}/process/{name}"] = (command.encode(), 0o644)
    return files
