"""profile.d: the start-up script that puts the slug's Python on PATH.

Every path is computed from ``$HOME`` (the app root at run time), so the slug
works wherever it is unpacked. Variables the user already set win.
"""

from __future__ import annotations

from pathlib import Path

PROFILE_SCRIPT = ".profile.d/python.sh"
WEB_PROFILE_SCRIPT = ".profile.d/python-web.sh"
# Memory each web worker is given when WEB_CONCURRENCY is derived (Heroku's figure).
MB_PER_WORKER = 256

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

# Heroku's runtime extras for web servers. WEB_CONCURRENCY: the lower of
# 2 x CPUs + 1 and memory limit / 256 MB (at least 1); the memory limit is the
# cgroup's (v2, then v1), else the machine's. Values already set win.
_WEB_SCRIPT = """\
# Written by slugbuild: web server defaults, as Heroku's Python buildpack sets them.
# Values already in the environment (config vars, `slugbuild run`) win.
if [ -z "${WEB_CONCURRENCY:-}" ]; then
  _slugbuild_bytes=""
  if [ -r /sys/fs/cgroup/memory.max ]; then
    _slugbuild_bytes="$(cat /sys/fs/cgroup/memory.max 2>/dev/null)"
  elif [ -r /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
    _slugbuild_bytes="$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null)"
  fi
  # "max" (v2) or a near-2^63 figure (v1) mean no limit: use the machine's memory.
  case "$_slugbuild_bytes" in
    ""|*[!0-9]*|????????????????*)
      _slugbuild_mb="$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 }' /proc/meminfo)" ;;
    *) _slugbuild_mb=$((_slugbuild_bytes / 1048576)) ;;
  esac
  _slugbuild_cpus="$(nproc 2>/dev/null || echo 1)"
  WEB_CONCURRENCY=$((_slugbuild_cpus * 2 + 1))
  if [ -n "$_slugbuild_mb" ] && [ $((_slugbuild_mb / @MB@)) -lt "$WEB_CONCURRENCY" ]; then
    WEB_CONCURRENCY=$((_slugbuild_mb / @MB@))
  fi
  if [ "$WEB_CONCURRENCY" -lt 1 ]; then
    WEB_CONCURRENCY=1
  fi
  export WEB_CONCURRENCY
  unset _slugbuild_bytes _slugbuild_mb _slugbuild_cpus
fi
export FORWARDED_ALLOW_IPS="${FORWARDED_ALLOW_IPS:-*}"
export GUNICORN_CMD_ARGS="${GUNICORN_CMD_ARGS:---access-logfile -}"
""".replace("@MB@", str(MB_PER_WORKER))


def write_profile(build_dir: Path) -> Path:
    """Write ``.profile.d/python.sh`` (and the web defaults beside it) into the build."""
    path = build_dir / PROFILE_SCRIPT
    path.parent.mkdir(exist_ok=True)
    path.write_text(_SCRIPT)
    (build_dir / WEB_PROFILE_SCRIPT).write_text(_WEB_SCRIPT)
    return path
