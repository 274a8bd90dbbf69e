"""bin/compile's Python half: BUILD_DIR CACHE_DIR [ENV_DIR].

The buildpack contract builds in place; slugbuild.compile_app() builds from a
copy of the app and writes a slug tarball. So: compile BUILD_DIR into a
temporary slug, unpack it beside BUILD_DIR, and only then swap BUILD_DIR's
contents for the slug's. A build that fails leaves BUILD_DIR as it was.
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from slugbuild import SlugbuildError, compile_app
from slugbuild.log import Reporter

USAGE = "usage: bin/compile BUILD_DIR CACHE_DIR [ENV_DIR]"


class _SlugTar(tarfile.TarFile):
    """Extracted files belong to whoever runs the build, as with any buildpack."""

    def chown(self, *args, **kwargs) -> None:
        pass


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(USAGE, file=sys.stderr)
        return 2
    build_dir = Path(argv[0]).absolute()
    cache_dir = Path(argv[1]).absolute()
    env_dir = Path(argv[2]) if len(argv) == 3 and argv[2] else None
    if env_dir is not None and not env_dir.is_dir():
        env_dir = None

    scratch = Path(tempfile.mkdtemp(prefix=".slugbuild-", dir=_scratch_parent(build_dir)))
    try:
        slug = scratch / "slug.tgz"
        try:
            # buildpacks=["python"]: this buildpack is the Python part; the app's
            # .buildpacks (which may name this very buildpack) is herokuish's business.
            compile_app(build_dir, slug, cache_dir=cache_dir / "slugbuild", env_dir=env_dir,
                        reporter=Reporter(stream=sys.stdout), buildpacks=["python"],
                        boot_check=_boot_check(env_dir))
        except SlugbuildError as error:
            print(error.render(), flush=True)
            return 1
        unpacked = scratch / "slug"
        unpacked.mkdir()
        with _SlugTar.open(slug) as tar:
            if hasattr(tarfile, "tar_filter"):
                tar.extractall(unpacked, filter="tar")
            else:  # Python without extraction filters (< 3.9.17 and friends)
                tar.extractall(unpacked)
        _replace_contents(build_dir, unpacked)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _boot_check(env_dir: Path | None) -> bool | float:
    """The boot check a Dokku/herokuish user asks for with config vars
    SLUGBUILD_BOOT_CHECK=1 and optionally SLUGBUILD_BOOT_CHECK_TIMEOUT=SECONDS
    (read from ENV_DIR, else the environment)."""

    def setting(name: str) -> str:
        path = env_dir / name if env_dir is not None else None
        if path is not None and path.is_file():
            return path.read_text(errors="replace").strip()
        return os.environ.get(name, "").strip()

    if setting("SLUGBUILD_BOOT_CHECK").lower() not in ("1", "true", "yes", "on"):
        return False
    try:
        seconds = float(setting("SLUGBUILD_BOOT_CHECK_TIMEOUT"))
    except ValueError:
        return True
    return seconds if 0 < seconds < 86400 else True


def _scratch_parent(build_dir: Path) -> str | None:
    """Beside BUILD_DIR, so the final moves are renames; else the temp dir."""
    parent = build_dir.parent
    return str(parent) if os.access(parent, os.W_OK | os.X_OK) else None


def _replace_contents(build_dir: Path, source: Path) -> None:
    """Empty ``build_dir`` (keeping the directory itself) and move ``source``'s entries in."""
    for entry in build_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for entry in sorted(source.iterdir()):
        shutil.move(str(entry), str(build_dir / entry.name))


if __name__ == "__main__":
    from slugbuild.cli import guarded

    # Any failure is one message in the build log (stdout, as herokuish shows it),
    # never a traceback (docs/security.md#when-slugbuild-fails).
    sys.exit(guarded(lambda: main(sys.argv[1:]), stream=sys.stdout))
