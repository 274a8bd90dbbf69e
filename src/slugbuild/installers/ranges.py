"""Version ranges in requirements.txt: resolved by uv before the layer is keyed.

A requirements file with ranges (``flask>=3,<4``, ``click``) installs whatever
the index offers on the day, so its bytes alone cannot key the dependency
layer: the same file resolves to other versions once a release comes out, and
a layer keyed by the file would be reused, stale. So the ranges are resolved
first (``uv pip compile``, for the runtime's Python version and this machine's
platform, from the indexes pip would use), the layer is keyed by the resolved
pins as well as the files, and the install gets those pins as constraints: the
layer holds exactly the versions its key names.

A range may resolve to a package published only as an sdist, whose metadata uv
gets by building it: the package's code runs. So the resolution runs sealed as an
install (``CacheSeal.install_step``, step_jail.py): the build's seal when there is
one, else one of its own; the cache's layers, runtimes, tools and stores are
read-only to it, as to the install that follows.

The resolution runs with slugbuild's own interpreter and the runtime's version
(``--python-version``, ``--python-platform``, as ``slugbuild lock`` does), so it
needs no runtime: ``slugbuild plan`` makes the same key as the build. With uv's
cache warm (a warm build, or the prefetch of a cold one) it reads the index
pages uv keeps and revalidates them, a fraction of a second.

Where uv declines a pre-release (its message says so) that pip's rules may
take, the plan falls back to pip, saying why. uv 0.13 takes one where pip does
in the usual cases (a range only a pre-release satisfies, asked for directly or
by a dependency), so this is a safety net for the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from .. import indexes
from ..cache import Cache
from ..log import Reporter
from ..proc import ToolFailed
from ..step_jail import CacheSeal
from . import InstallJob, InstallPlan
from .common import install_failed, run_install_tool
from .uv import requirements_source, uv_binary, uv_env, uv_version

# A resolved line that is a registry pin: ``name==version``.
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)$")
# uv's words when it declined a pre-release pip would have taken.
_PRERELEASE_REFUSAL = re.compile(r"pre-release", re.IGNORECASE)
# uv's words when the index could not be reached (not a resolution failure).
_UNREACHABLE = re.compile(r"Failed to fetch|error sending request|dns error|"
                          r"Could not connect|Connection refused|timed out", re.IGNORECASE)


def resolve_plan(plan: InstallPlan, *, app_dir: Path, lock_file: str, python_version: str,
                 config_vars: Mapping[str, str], cache: Cache, reporter: Reporter,
                 constraints: str | None = None, baseline: tuple[str, ...] = (),
                 exports: Mapping[str, str] | None = None,
                 seal: CacheSeal | None = None) -> InstallPlan:
    """``plan`` with its ranges resolved (``resolved``), or a pip plan where uv cannot
    resolve them as pip would; unchanged when it has nothing to resolve.

    ``baseline`` (Heroku's setuptools, installed before the requirements) is
    preferred by the resolver, as an installed package is by the install: a
    range it satisfies keeps it. ``seal``: the build's (step_jail.py); without one
    (``slugbuild plan`` of a library caller) the resolution gets a seal of its own.
    """
    if not plan.resolves:
        return plan
    scratch = cache.scratch_dir("resolve")
    own_seal = seal is None
    if seal is None:
        seal = own_seal_for(cache, scratch, reporter)
    try:
        job = InstallJob(python=Path(sys.executable), python_version=python_version,
                         app_dir=app_dir, lock_file=lock_file, config_vars=dict(config_vars),
                         cache=cache, reporter=reporter, scratch=scratch,
                         exports=dict(exports or {}), seal=seal)
        if constraints is not None:
            job = dataclasses.replace(job, constraints=scratch / "constraints.txt")
            (scratch / "constraints.txt").write_text(constraints)
        try:
            text = _compile(job, baseline)
        except ToolFailed as failed:
            if _PRERELEASE_REFUSAL.search(failed.output):
                reporter.detail(f"uv declined a pre-release to resolve {lock_file}, which "
                                f"pip's rules may take: pip installs it")
                return dataclasses.replace(
                    plan, tool="pip", version=plan.pip_version or plan.version,
                    installer_version=plan.pip_version or plan.installer_version,
                    installer_reason=PRERELEASE_REASON, resolves=False)
            raise install_failed(job, ["uv", "pip", "compile", lock_file], failed,
                                 indexes.for_requirements(app_dir, lock_file,
                                                          config_vars)) from failed
    finally:
        if own_seal:
            seal.close()
        shutil.rmtree(scratch, ignore_errors=True)
    pins = resolved_pins(text)
    reporter.detail(f"Resolved the version ranges of {lock_file} with uv {uv_version()} for "
                    f"Python {python_version}: {len(pins)} packages")
    return dataclasses.replace(plan, resolved=text)


def own_seal_for(cache: Cache, scratch: Path, reporter: Reporter) -> CacheSeal:
    """A seal of ``cache`` for a run outside a build (``slugbuild lock``, a resolution
    without the build's seal): ``scratch`` writable, its status files in a scratch
    directory of their own. The caller closes it."""
    return CacheSeal(cache.root, scratch, lambda: cache.scratch_dir("seal"), reporter)


PRERELEASE_REASON = ("uv declined a pre-release that pip's rules may take: pip installs it, "
                     "as on Heroku")


def _compile(job: InstallJob, baseline: tuple[str, ...]) -> str:
    """The resolution of the job's requirements: sorted ``name==version`` lines (and
    ``name @ URL`` lines for direct references, as uv resolved them)."""
    from .. import platform_info
    from ..lock import uv_platform

    output = job.scratch / "resolved.txt"
    # An existing output file is uv's list of preferences: the baseline, as installed.
    output.write_text("".join(line + "\n" for line in baseline))
    argv = [uv_binary(), "pip", "compile", "--python", sys.executable,
            "--python-version", job.python_version,
            "--python-platform", uv_platform(platform_info.current()),
            "--no-header", "--no-annotate", "--quiet", "--output-file", str(output),
            *(["-c", str(job.constraints)] if job.constraints is not None else []),
            requirements_source(job)]
    settings = indexes.for_requirements(job.app_dir, job.lock_file, job.config_vars)
    env = uv_env(job, settings.uv_env())
    try:
        run_install_tool(job, argv, env, cwd=job.app_dir, show=False)
    except ToolFailed as failed:
        if not _UNREACHABLE.search(failed.output):
            raise
        # The index is unreachable: what uv's cache knows of it still resolves the
        # ranges, as the last build saw them (said so: newer releases are not seen).
        try:
            run_install_tool(job, [*argv, "--offline"], env, cwd=job.app_dir, show=False)
        except ToolFailed:
            raise failed from None
        job.reporter.warn(f"The package index could not be reached; the version ranges of "
                          f"{job.lock_file} were resolved from uv's cache, so releases "
                          f"made since it was filled are not considered.")
    return "".join(sorted(line.strip() + "\n" for line in output.read_text().splitlines()
                          if line.strip() and not line.lstrip().startswith("#")))


def resolved_pins(text: str) -> dict[str, str]:
    """Name -> version of the registry pins of a resolution (direct references left out)."""
    return {match["name"]: match["version"] for line in text.splitlines()
            if (match := _PIN.match(line.strip()))}


def constraints_text(text: str) -> str:
    """The ``name==version`` lines of a resolution: the install's constraints."""
    return "".join(f"{name}=={version}\n" for name, version in resolved_pins(text).items())


def key_inputs(text: str) -> dict[str, object]:
    """What a resolution adds to the layer key's inputs: its digest, and its pins by
    name (direct references shown by digest: their URLs may hold credentials)."""
    shown = dict(resolved_pins(text))
    for line in text.splitlines():
        if " @ " in line:
            name, _, url = line.partition(" @ ")
            shown[name.strip()] = "url sha256:" + hashlib.sha256(url.encode()).hexdigest()[:16]
    return {"resolved_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "resolved": dict(sorted(shown.items()))}


def changed_pins(previous: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """``name old -> new`` for each package whose resolved version changed."""
    return [f"{name} {previous.get(name, 'none')} -> {current.get(name, 'none')}"
            for name in sorted(set(previous) | set(current))
            if previous.get(name) != current.get(name)]
