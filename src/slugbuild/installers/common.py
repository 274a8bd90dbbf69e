"""What the pip and uv backends share: the build environment, the CA bundle,
and how a failed install is reported.

Both backends (and the tool cache) import from here, never from each other.
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .. import errors, indexes
from ..log import Reporter
from ..proc import ToolFailed, run_tool
from ..redact import redact_url as redact
from ..relocate import SLUG_PYTHON_HOME
from ..step_jail import PrivateView, StepRunner, Unsealed
from . import InstallJob, built_wheels
from .requirements import local_reference

DEFAULT_INDEX_URL = indexes.DEFAULT_INDEX_URL

__all__ = ["DEFAULT_INDEX_URL", "build_env", "install_failed", "local_package_failed",
           "redact", "trusted_ca_bundle", "warn_extra_indexes"]


def build_env(job: InstallJob) -> dict[str, str]:
    """Settings for packages an installer builds from source (sdists, local packages).

    Temporary build directories go under the job's scratch directory (inside
    slugbuild's cache), so any path a build records is one the leak check
    knows and the dependency layer's ELF clean-up removes
    (relocate.settle_built_elf_files). Compilers and wheel builders see a fixed
    SOURCE_DATE_EPOCH (1980-01-01, unless a config var sets one), so
    ``__DATE__`` and ``__TIME__`` do not depend on the day.

    Extensions are linked with the RUNPATH the slug's interpreter would give them
    (``LDSHARED`` with the interpreter's configured prefix read as the slug's
    ``.heroku/python``): the installing interpreter is the local prefix on one build
    and the relocated runtime layer's on another (it depends on what the cache held),
    and a wheel built by either is kept in the installer's cache for every app, so
    the bytes of a built extension must not depend on which one built it.
    """
    temporary = job.scratch / "tmp"
    temporary.mkdir(exist_ok=True)
    settings = {"TMPDIR": str(temporary),
                "SOURCE_DATE_EPOCH": job.config_vars.get("SOURCE_DATE_EPOCH") or "315532800"}
    if "LDSHARED" not in job.config_vars:
        ldshared = slug_link_command(job.python)
        if ldshared:
            settings["LDSHARED"] = ldshared
    return settings


@functools.lru_cache(maxsize=32)
def slug_link_command(python: Path) -> str | None:
    """The interpreter's ``LDSHARED`` with its configured prefix replaced by the
    slug's, or None when it has none (or cannot say)."""
    probe = ("import sysconfig; print(sysconfig.get_config_var('prefix') or ''); "
             "print(sysconfig.get_config_var('LDSHARED') or '')")
    try:
        shown = subprocess.run([str(python), "-I", "-c", probe], capture_output=True,
                               text=True, timeout=60, check=True).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(shown) != 2 or not shown[1]:
        return None
    prefix, ldshared = shown[0].rstrip("/"), shown[1]
    if prefix in {"", "/", "/usr", "/usr/local"}:
        return ldshared
    return ldshared.replace(prefix, SLUG_PYTHON_HOME)


def install_failed(job: InstallJob, shown: list[str], failed: ToolFailed,
                   settings: indexes.IndexSettings | None = None) -> errors.SlugbuildError:
    """The error for an installer that exited non-zero: what its output shows is
    missing (``installers/failures.py``), else the generic one naming the
    indexes really used (without credentials). The output, streamed into the log already, is kept on
    the error but not printed again; build-copy paths are shown as the app's."""
    from .failures import diagnose_install_failure, shown_paths

    def shown_text(text: str) -> str:
        return shown_paths(text, job.app_dir, job.source_dir, job.prefix)

    command = shlex.join(shown)
    local = [ref for line in job.declared if (ref := local_reference(line)) is not None]
    specific = diagnose_install_failure(
        command=command, exit_code=failed.exit_code, output=shown_text(failed.output),
        python_version=job.python_version, local_paths=local)
    if specific is not None:
        specific.output = shown_text(failed.tail)
        return specific
    return errors.DEPENDENCY_INSTALL_FAILED.error(
        command=command,
        exit_code=failed.exit_code,
        lock_file=job.lock_file,
        index=settings.shown() if settings is not None else redact(
            job.config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL),
        output=shown_text(failed.tail),
        output_shown=True,
    )


def local_package_failed(job: InstallJob, package: str, shown: list[str],
                         failed: ToolFailed) -> errors.SlugbuildError:
    """The error for a local package (a path in the app) that could not be built."""
    return errors.LOCAL_PACKAGE_FAILED.error(
        package=package, command=shlex.join(shown),
        exit_code=failed.exit_code, output=failed.tail)


def warn_extra_indexes(job: InstallJob, settings: indexes.IndexSettings, tool: str) -> None:
    """Say so when more than one index may serve a package of the same name."""
    if len(settings.index_urls) + len(settings.find_links) < 2:
        return
    if tool == "pip":
        how = ("pip takes each package from whichever index has the best version, so a "
               "same-named package on a public index can replace a private one "
               "(dependency confusion). Drop what makes pip install (the log's `Installing "
               "with pip:` line names it; slugbuild then installs with uv, which takes a "
               "package from the first index that has it) or name one index only.")
    else:
        order = ", ".join(redact(url) for url in settings.search_order())
        how = (f"each package comes from the first of them that has its name, searched "
               f"in this order: {order} (uv's first-index strategy, PyPI last: a "
               f"same-named package on a later index is never used).")
    job.reporter.warn(f"Packages may come from more than one index ({settings.shown()}); "
                      f"{how}")


def trusted_ca_bundle() -> str | None:
    """The CA bundle installers should trust: SSL_CERT_FILE, else the system's."""
    for variable in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        explicit = os.environ.get(variable)
        if explicit and os.path.isfile(explicit):
            return explicit
    import ssl

    default = ssl.get_default_verify_paths().cafile
    system_bundles = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
    for candidate in (default, *system_bundles):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def own_scratch(job: InstallJob) -> list[Path]:
    """What an install run of ``job`` writes besides the build's scratch and the
    installers' caches: its own scratch and the prefix it installs into (a layer's
    tree being made); other builds' scratch stays read-only (step_jail)."""
    return [job.scratch, *([job.prefix] if job.prefix is not None else [])]


def run_install_tool(job: InstallJob, argv: Sequence[str | Path], env: Mapping[str, str],
                     cwd: Path | None = None, show: bool = True,
                     reporter: Reporter | None = None,
                     wheel_only: Sequence[str | Path] | None = None,
                     writes: Sequence[Path] = ()) -> str:
    """``proc.run_tool`` for an installer's run that may build a package from source
    (its setup.py runs): sealed as an install when the job has the build's seal, and
    guarded (``guarded_run``) where private overlays can be had.

    ``wheel_only``: the same run told to build nothing (uv's ``--no-build``), or
    ``argv`` itself when it already builds nothing (a build tool's install, tools.py):
    tried first, sealed as before with the installer caches writable (the installer
    itself guarantees no package code runs), hard links and all; only when it fails (a
    package must be built, or the run fails anyway) does ``argv`` go guarded, and the
    job's later runs with it. None: the run may build, so it goes guarded at once.
    ``writes``: what the run makes besides the job's own scratch and prefix
    (``own_scratch``), such as a tool's tree being made."""
    shown_to = reporter or job.reporter
    own = [*own_scratch(job), *writes]

    def run(runner: StepRunner, command_argv: Sequence[str | Path], streamed: bool) -> str:
        return runner.run_step(command_argv, lambda command: run_tool(
            command, shown_to, env, cwd=cwd, show=streamed))

    seal = job.seal
    name = f"`{Path(str(argv[0])).name}`"
    if seal is None:
        return run(Unsealed(), argv, show)
    if not seal.guard_available():
        return run(seal.install_step(name, own), argv, show)
    if wheel_only is not None and job.scratch not in seal.building:
        try:
            output = run(seal.install_step(name, own), wheel_only, False)
        except ToolFailed:
            seal.building.add(job.scratch)
            shown_to.debug("The install builds a package from source (or failed): it runs "
                           "again with private installer caches")
        else:
            if show:
                with shown_to.batched():
                    for line in output.splitlines():
                        shown_to.detail(line)
            return output
    return guarded_run(job, argv, lambda runner, command: run(runner, command, show),
                       built=wheel_only is not None, own=own)


def guarded_run(job: InstallJob, argv: Sequence[str | Path],
                run: Callable[[StepRunner, Sequence[str | Path]], str], built: bool,
                own: Sequence[Path] = ()) -> str:
    """An install run that may build packages from source, shown the installer caches
    privately: each of its cache views (``built_wheels.job_cache_dir``, uv's and pip's)
    an overlay of this environment's built wheels over the shared cache, the shared
    caches and every built-wheel partition read-only; what the run writes in them (a
    package build's planted or edited entries as much as the installer's downloads and
    built wheels) is discarded when the install ends (``CacheSeal.install_caches``: the
    install's later runs see it, a dry run's build serves the install), so no package
    code decides what another app's install takes from them. Files are copied from the
    cache, not hard-linked (the overlay is another file system). ``built``: the run is
    known to build (its wheel-only run failed), so the install counts as built from
    source, as its discarded built wheels can no longer tell
    (``built_wheels.from_source``)."""
    assert job.seal is not None
    root = job.cache.root
    views = [PrivateView(job.scratch / built_wheels.JOB_VIEWS / tool,
                         (built_wheels.partition(root, tool, job.env_sha256),
                          built_wheels.shared_cache(root, tool)),
                         tuple(built_wheels.built_buckets(
                             built_wheels.shared_cache(root, tool), tool)))
             for tool in built_wheels.BUILT_BUCKETS]
    caches = job.seal.install_caches(
        views, job.scratch,
        [*(view.lowers[1] for view in views), root / built_wheels.BUILT_WHEELS_DIR])
    name = f"`{Path(str(argv[0])).name}`"
    if caches is None:
        return run(job.seal.install_step(name, own or own_scratch(job)), argv)
    output = run(job.seal.install_step(name, own or own_scratch(job), caches),
                 copying(argv))
    if built:
        built_wheels.note_built(job.scratch)
    return output


def copying(argv: Sequence[str | Path]) -> list[str | Path]:
    """``argv`` placing files by copy (uv's ``--link-mode``): a hard link from an
    overlay to the install's prefix fails, and uv would say so before copying."""
    words = list(argv)
    if "--link-mode" in words[:-1]:
        words[words.index("--link-mode") + 1] = "copy"
    return words
