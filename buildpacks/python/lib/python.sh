# Sourced by bin/*: find the Python that runs slugbuild.
#
# SLUGBUILD_PYTHON_BIN (a command name or a path) if set, else the interpreter
# `slugbuild buildpack install` recorded in lib/slugbuild-python, else `python3`.
# On success sets SLUGBUILD_PYTHON; otherwise says why on stderr and returns 1.
find_slugbuild_python() {
  local recorded="" pointer
  pointer="$(dirname "${BASH_SOURCE[0]}")/slugbuild-python"
  if [ -z "${SLUGBUILD_PYTHON_BIN:-}" ] && [ -r "$pointer" ]; then
    recorded="$(head -n 1 "$pointer")"
  fi
  local candidate="${SLUGBUILD_PYTHON_BIN:-${recorded:-python3}}"
  if ! command -v "$candidate" >/dev/null 2>&1; then
    echo " !     slugbuild: no Python found at '$candidate'." >&2
    echo " !     Set SLUGBUILD_PYTHON_BIN to a Python that has slugbuild installed." >&2
    return 1
  fi
  if ! "$candidate" -c 'import slugbuild' >/dev/null 2>&1; then
    echo " !     slugbuild: '$candidate' cannot import slugbuild." >&2
    echo " !     Install slugbuild for it, or set SLUGBUILD_PYTHON_BIN to a Python that has it." >&2
    return 1
  fi
  SLUGBUILD_PYTHON="$candidate"
}
