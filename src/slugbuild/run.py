"""``slugbuild run``: start a process type from a slug, the way a dyno would.

A tarball is unpacked (after every entry is checked to stay inside the target,
see slugfile.py)
into a temporary directory that is removed afterwards; a directory is used as
it is. The process gets HOME set to the app root, PORT, the slug's
``.profile.d/*.sh`` sourced, ``.release``'s config vars as defaults under the
given ones, and the process type's command (``.release``, then the Procfile,
see read_release) run by bash. Signals
sent to slugbuild are forwarded to it and its exit code is returned.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from . import errors
from .buildpack_runner import ReleaseInfo, slug_release
from .slugfile import SlugArchive, SlugLimits

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)
_KEPT_HOST_VARS = ("PATH", "TERM", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")


def app_root(directory: Path) -> Path:
    """The app root inside an unpacked slug: ./app for the Heroku layout."""
    nested = directory / "app"
    if not (directory / ".profile.d").exists() and (nested / ".profile.d").exists():
        return nested
    return directory


def read_release(root: Path) -> ReleaseInfo:
    """Process types and config var defaults of an unpacked slug (see slug_release)."""

    limit = SlugLimits.from_env().max_metadata_bytes

    def text(name: str) -> str | None:
        path = root / name
        if not path.is_file():
            return None
        with open(path, "rb") as handle:  # an unpacked slug directory is not checked
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise errors.SLUG_LIMIT_EXCEEDED.error(
                path=root, what=f"{name} of more than {limit} bytes",
                limit=f"{limit} bytes for a metadata file",
                variable="SLUGBUILD_MAX_METADATA_SIZE")
        return data.decode("utf-8", "replace")

    return slug_release(text(".release"), text("Procfile"))


def run_slug(
    slug: Path,
    process: str = "web",
    *,
    port: int = 5000,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    unpack_to: Path | None = None,
) -> int:
    """Run ``process`` from ``slug`` (tarball or directory); return its exit code."""
    slug = Path(slug)
    cleanup: Path | None = None
    if not slug.is_dir() and not slug.is_file():
        raise errors.SLUG_NOT_FOUND.error(path=slug)
    try:
        if slug.is_dir():
            directory = slug
        else:
            archive = SlugArchive(slug)  # checked (and its limits applied) before unpacking
            if unpack_to is not None:
                directory = Path(unpack_to)
                if not directory.exists():
                    cleanup = directory  # ours until the process starts
                directory.mkdir(parents=True, exist_ok=True)
            else:
                directory = cleanup = Path(tempfile.mkdtemp(prefix="slugbuild-run-"))
            archive.extract(directory)
            if unpack_to is not None:
                cleanup = None  # --unpack-to keeps what it unpacked
        root = app_root(directory.absolute())
        declared = read_release(root)
        types = declared.default_process_types
        if process not in types:
            raise errors.PROCESS_TYPE_UNKNOWN.error(
                process=process, available=", ".join(sorted(types)) or "none"
            )
        config = {**declared.config_vars, **(env or {})}
        return _run_process(root, process, types[process], port, host, config)
    finally:
        # Every way out (a refused slug, a full disk, a signal) removes the unpacked tree.
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)


def dyno_env(root: Path, process: str, port: int, host: str,
             config: Mapping[str, str]) -> dict[str, str]:
    """The environment a process starts with: little from the host, the rest as a dyno."""
    env = {k: os.environ[k] for k in _KEPT_HOST_VARS if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({
        "HOME": str(root),
        "PORT": str(port),
        "DYNO": f"{process}.1",
        # gunicorn binds 0.0.0.0:$PORT when PORT is set; a laptop run stays local.
        "GUNICORN_CMD_ARGS": f"--bind {host}:{port}",
        "HOST": host,
    })
    env.update(config)
    return env


def _run_process(root: Path, process: str, command: str, port: int, host: str,
                 config: Mapping[str, str]) -> int:
    script = (
        'for f in "$HOME"/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; '
        f"exec {command}"
    )
    child = subprocess.Popen(["bash", "-c", script], cwd=root,
                             env=dyno_env(root, process, port, host, config))
    previous = {}
    # A terminal's Ctrl-C already reaches the whole foreground process group.
    terminal = sys.stdin is not None and sys.stdin.isatty()

    def forward(signum, _frame):
        if signum == signal.SIGINT and terminal:
            return
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED_SIGNALS:
        previous[sig] = signal.signal(sig, forward)
    try:
        while True:
            try:
                code = child.wait()
                # Killed by a signal: report it the way a shell does (128 + N).
                return 128 - code if code < 0 else code
            except InterruptedError:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
