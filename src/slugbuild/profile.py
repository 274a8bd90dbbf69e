"""profile.d: the start-up script that puts the slug's Python on PATH.

Every path is computed from ``$HOME`` (the app root at run time), so the slug
works wherever it is unpacked. Variables the user already set win.
"""

from __future__ import annotations

from pathlib import Path

PROFILE_SCRIPT = ".profile.d/python.sh"

_SCRIPT = """\
# Written by slugbuild: the Python runtime of this slug, found from $HOME.
export PATH="$HOME/.heroku/python/bin:$PATH"
export PYTHONHOME="$HOME/.heroku/python"
export LD_LIBRARY_PATH="$HOME/.heroku/python/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LIBRARY_PATH="$HOME/.heroku/python/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export PYTHONUNBUFFERED="${PYTHONUNBUFFERED:-true}"
export PYTHONNOUSERSITE="${PYTHONNOUSERSITE:-1}"
export LANG="${LANG:-C.UTF-8}"
export PYTHONHASHSEED="${PYTHONHASHSEED:-random}"
"""


def write_profile(build_dir: Path) -> Path:
    """Write ``.profile.d/python.sh`` into the build directory."""
    path = build_dir / PROFILE_SCRIPT
    path.parent.mkdir(exist_ok=True)
    path.write_text(_SCRIPT)
    return path
