"""uv, the fast installer: run from slugbuild's environment, machine config shut out.

The `uv` wheel on PyPI ships the binary, so it is a dependency of slugbuild and
never part of a slug. Every run gets UV_NO_CONFIG (no uv.toml of the host), an
explicit index (in its environment, never on its command line, where `ps`
would show credentials in an index URL), its own cache inside slugbuild's cache,
and the CA bundle the machine trusts.

Installs hard-link files from uv's cache (``--link-mode hardlink``, uv's own
default on Linux): copying them cost more than the rest of a cold install on a
slow disk. A build step writing into an installed file in place (a hook, say)
would then change uv's cache too, so after each install the files of every
package it added are checked against their RECORD hashes; a mismatch cleans
those packages from uv's cache and installs them again. A cached dependency
layer is compared with its files.json before it is restored, for the same
reason (dependencies.find_or_install). slugbuild's own rewrites of
scripts and RECORDs write a new file and rename it over the old one
(relocate.write_replacing).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import indexes as indexes_module
from .. import records
from ..dist_version import installed_version
from ..indexes import IndexSettings
from ..proc import ToolFailed, clean_env, exported_config, run_tool
from ..textfiles import plain_utf8, read_text_like_pip
from . import InstallJob, built_wheels
from .common import (
    DEFAULT_INDEX_URL,
    build_env,
    install_failed,
    local_package_failed,
    own_scratch,
    run_install_tool,
    trusted_ca_bundle,
    warn_extra_indexes,
)
from .requirements import (
    export_requirements,
    local_requirement,
    requirements_files,
    split_index_lines,
    split_local_lines,
    split_unhashed_urls,
)


def uv_binary() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def uv_version() -> str:
    version = installed_version("uv")
    if version is None:  # as importlib.metadata.version would
        from importlib.metadata import PackageNotFoundError

        raise PackageNotFoundError("uv")
    return version


def uv_env(job: InstallJob, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a uv run: build config vars, never the host's uv/pip config."""
    cache = built_wheels.job_cache_dir(job.cache.root, job.scratch, "uv", job.env_sha256)
    return built_wheels.cache_kept(uv_tool_env(job.config_vars, job.cache.root, {
        **build_env(job), "UV_CACHE_DIR": str(cache), **(extra or {})}, job.exports))


def uv_tool_env(config_vars: Mapping[str, str], cache_root: Path,
                extra: Mapping[str, str] | None = None,
                exports: Mapping[str, str] | None = None) -> dict[str, str]:
    """``uv_env`` without a job (``slugbuild lock``): config vars exported, uv's cache
    in slugbuild's, the host's uv config and Python downloads shut out."""
    settings = {
        **exported_config(config_vars),
        "UV_NO_CONFIG": "1",
        "UV_CACHE_DIR": str(cache_root / "uv"),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
        "NO_COLOR": "1",
        # The interpreter may be the one a runtime is copied from, or a cached
        # layer's: running it must write nothing into either.
        "PYTHONDONTWRITEBYTECODE": "1",
        **(extra or {}),
    }
    cert = trusted_ca_bundle()
    if cert:
        settings["SSL_CERT_FILE"] = cert
    return clean_env(settings, exports=exports)


def index_env(config_vars: Mapping[str, str], lock_indexes: Sequence[str] = (),
              best_match: bool = False) -> dict[str, str]:
    """The indexes of a uv run as pip would use them, as uv's environment variables.

    The index comes from PIP_INDEX_URL (else PyPI); PIP_EXTRA_INDEX_URL and
    any other index a lock names are extra indexes, searched like pip does
    (best version across all of them), which uv calls unsafe-best-match
    (``best_match`` asks for it even without extra indexes). The environment,
    not the command line: index URLs may hold credentials.
    """
    index = config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL
    extras = [*(config_vars.get("PIP_EXTRA_INDEX_URL") or "").split(), *lock_indexes]
    extras = [url for url in dict.fromkeys(extras) if url.rstrip("/") != index.rstrip("/")]
    env = {"UV_INDEX_URL": index}
    if extras:
        env["UV_EXTRA_INDEX_URL"] = " ".join(extras)
    if extras or best_match:
        env["UV_INDEX_STRATEGY"] = "unsafe-best-match"
    return env


def install_exported(job: InstallJob, exported: Path, manager: str) -> None:
    """Install an exported lock (every pin hashed, dependencies included) with uv.

    ``--no-deps`` and ``--require-hashes`` make it the exact set the lock
    names, as ``pipenv install --deploy`` and ``poetry sync`` do: nothing is
    resolved, so uv gives the same result as pip would, only faster. Local
    packages (paths in the app) have no hash: like Pipenv, they are installed
    after the hashed pins, without ``--require-hashes``, and their files key
    the layer instead.
    """
    settings = indexes_module.for_lock_export(exported.read_text(), job.config_vars, manager)
    _lock_indexes, local = _split_export(exported, job.app_dir)
    job.declared.extend(export_requirements(exported.read_text()))
    job.declared.extend(written for written, _ in local)
    hashed, direct = split_unhashed_urls(exported.read_text())
    exported.write_text(hashed)
    origins = indexes_module.package_indexes(job.app_dir, manager, job.lock_file,
                                             job.config_vars)
    for number, (group, text) in enumerate(_by_index(exported.read_text(), origins,
                                                      settings)):
        part = exported.with_name(f"{exported.name}.{number}")
        part.write_text(text)
        _uv_pip_install(
            job,
            ["--no-deps", "--require-hashes", "-r", str(part)],
            shown=["uv", "pip", "install", "--no-deps", "--require-hashes",
                   "-r", f"<{manager} export of {job.lock_file}>"],
            indexes=group, exact=True,
        )
    if direct:
        # Version control and URL references a lock pins by commit or URL but
        # without a hash: installed as Pipenv and Poetry do, without hash checks.
        urls = job.scratch / "direct-references.txt"
        urls.write_text("".join(line + "\n" for line in direct))
        _uv_pip_install(job, ["--no-deps", "-r", str(urls)],
                        shown=["uv", "pip", "install", "--no-deps", *direct],
                        indexes=settings, exact=True)
    install_local_packages(job, local)


def install_baseline(job: InstallJob, requirements: tuple[str, ...]) -> None:
    """Heroku's baseline (installers/baseline.py), before the app's requirements."""
    _uv_pip_install(job, ["--no-deps", *requirements],
                    shown=["uv", "pip", "install", *requirements],
                    indexes=index_env(job.config_vars), exact=True)


def install_local_packages(job: InstallJob, local: list[tuple[str, str]]) -> None:
    """Install the local packages ``(as written, requirement)`` of a lock, one uv run.

    A failure is reported as the local package's (``local-package-failed``),
    never as a name missing from the index: each is built alone to say which.
    """
    if not local:
        return
    requirements = job.scratch / "local-packages.txt"
    requirements.write_text("".join(requirement + "\n" for _, requirement in local))
    shown = ["uv", "pip", "install", "--no-deps", *(written for written, _ in local)]
    try:
        _uv_pip_install(job, ["--no-deps", "-r", str(requirements)], shown=shown,
                        indexes=index_env(job.config_vars), raw=True, exact=True)
    except ToolFailed as failed:
        for written, requirement in local if len(local) > 1 else ():
            # Into a throwaway target: built for real, as the failed install did.
            alone = [uv_binary(), "pip", "install", "--python", str(job.python), "--no-deps",
                     "--target", str(job.scratch / "local-probe"), requirement]
            try:
                run_tool(alone, job.reporter, uv_env(job, index_env(job.config_vars)),
                         cwd=job.app_dir, show=False)
            except ToolFailed as alone_failed:
                raise local_package_failed(job, written, ["uv", "pip", "install", "--no-deps",
                                                          written], alone_failed) from failed
        raise local_package_failed(job, ", ".join(written for written, _ in local), shown,
                                   failed) from failed


def _by_index(text: str, origins: dict[str, str],
              settings: IndexSettings) -> list[tuple[IndexSettings, str]]:
    """The export's pins grouped by the one index the lock assigns them (searched
    alone, as the package manager would), the rest with every index."""
    from packaging.utils import canonicalize_name

    groups: dict[str | None, list[str]] = {}
    for block in re.split(r"(?<!\\)\n", text):
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", block)
        if not block.strip() or block.lstrip().startswith("#") or not match:
            continue
        groups.setdefault(origins.get(canonicalize_name(match.group(1))), []).append(block)
    result = []
    for url, blocks in groups.items():
        alone = settings if url is None else IndexSettings(
            index_urls=[url], trusted_hosts=settings.trusted_hosts)
        result.append((alone, "\n".join(blocks) + "\n"))
    return result


def _split_export(exported: Path, app_dir: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Rewrite an export to its hashed pins; return the indexes and the local packages
    it named (as written, and with paths made absolute against ``app_dir``, where the
    package manager exported from)."""
    lock_indexes, body = split_index_lines(exported.read_text())
    hashed, local = split_local_lines(body)
    exported.write_text(hashed)
    return lock_indexes, [(path, local_requirement(path, app_dir)) for path in local]


def install_requirements(job: InstallJob, pins: Path | None = None) -> None:
    """``-r requirements.txt`` with uv, from the indexes pip would use (the files'
    own ``-i``/``--extra-index-url`` included: uv would let its environment win).

    ``pins`` (``name==version`` lines, what ``ranges.resolve_plan`` resolved the
    files' version ranges to) are constraints: the install gets exactly the
    versions the layer is keyed by.
    """
    settings = indexes_module.for_requirements(job.app_dir, job.lock_file, job.config_vars)
    warn_extra_indexes(job, settings, "uv")
    options = _requirements_options(job)
    exact = pins is not None or "--require-hashes" in options
    if not exact and _guarded(job):
        pins = _planned_pins(job)
        exact = pins is not None
    _uv_pip_install(job, [*options, *(["-c", str(pins)] if pins is not None else [])],
                    shown=["uv", "pip", "install", "-r", job.lock_file],
                    indexes=settings, exact=exact)


def _guarded(job: InstallJob) -> bool:
    """Whether the job's install runs that may build go guarded (common.guarded_run)."""
    return (job.seal is not None and job.seal.guard_available()
            and job.scratch not in job.seal.building)


def _planned_pins(job: InstallJob) -> Path | None:
    """For requirements that leave uv a choice of versions (their dependencies, say):
    what a plain install would add, planned by a dry run of it (guarded, as the install
    would be: resolving may build an sdist for its metadata), written as ``==`` pins
    to give the install as constraints. The install then leaves uv no choice, so it may
    go wheel-only first (``no_build``), hard-linking from the shared caches and keeping
    its downloads, instead of copying through the guard. None where the dry run cannot
    say (it fails, or would remove or replace something, or plans a direct reference):
    the install then runs guarded as it is."""
    planned = dry_run_requirements(job)
    if planned is None:
        return None
    pins = job.scratch / "planned-pins.txt"
    pins.write_text("".join(f"{name}=={version}\n" for name, version in planned))
    return pins


def dry_run_requirements(job: InstallJob, pins: Path | None = None
                         ) -> list[tuple[str, str]] | None:
    """What ``install_requirements`` would add to the job's prefix as it is now: each
    distribution's canonical name and version, from ``uv pip install --dry-run`` (the
    same options, indexes and resolution). None when uv would also remove or
    replace something there, or names a distribution by anything but a version."""
    settings = indexes_module.for_requirements(job.app_dir, job.lock_file, job.config_vars)
    options = _requirements_options(job)
    argv = [uv_binary(), "pip", "install", "--python", str(job.python), "--dry-run",
            "--link-mode", job.link_mode, *_prefix_args(job), *options,
            *(["-c", str(pins)] if pins is not None else []), *_constraint_args(job)]
    return _dry_run(job, argv, settings.uv_env(),
                    exact=pins is not None or "--require-hashes" in options)


def dry_run_exported(job: InstallJob, exported: Path, manager: str
                     ) -> list[tuple[str, str]] | None:
    """What ``install_exported`` would add to the job's prefix as it is now (as
    ``dry_run_requirements``): each index group of the export's hashed pins planned
    by uv, which evaluates their markers. None for an export with local packages or
    unhashed URLs (installed apart), and as ``dry_run_requirements`` does. The
    export itself is left as it is."""
    text = exported.read_text()
    settings = indexes_module.for_lock_export(text, job.config_vars, manager)
    hashed, local = split_local_lines(split_index_lines(text)[1])
    hashed, direct = split_unhashed_urls(hashed)
    if local or direct:
        return None
    origins = indexes_module.package_indexes(job.app_dir, manager, job.lock_file,
                                             job.config_vars)
    found: list[tuple[str, str]] = []
    for number, (group, pins) in enumerate(_by_index(hashed, origins, settings)):
        part = exported.with_name(f"{exported.name}.dry-run.{number}")
        part.write_text(pins)
        argv = [uv_binary(), "pip", "install", "--python", str(job.python), "--dry-run",
                "--link-mode", job.link_mode, *_prefix_args(job), "--no-deps",
                "--require-hashes", "-r", str(part), *_constraint_args(job)]
        planned = _dry_run(job, argv, group.uv_env(), exact=True)
        if planned is None:
            return None
        found += planned
    return found


def _dry_run(job: InstallJob, argv: list[str], indexes: dict[str, str], exact: bool
             ) -> list[tuple[str, str]] | None:
    """The ``+ name==version`` lines of a ``uv pip install --dry-run`` (see
    ``dry_run_requirements``); ``exact`` as ``_uv_pip_install``'s."""
    from packaging.utils import canonicalize_name

    try:
        output = run_install_tool(job, argv, uv_env(job, indexes), cwd=job.app_dir,
                                  show=False, wheel_only=no_build(argv) if exact else None)
    except ToolFailed:
        return None  # the install itself reports it
    found = []
    for line in output.splitlines():
        if line.startswith((" - ", " ~ ")):
            return None
        if line.startswith(" + "):
            match = re.fullmatch(r" \+ ([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
            if match is None:
                return None
            found.append((str(canonicalize_name(match.group(1))), match.group(2)))
    return found


def prefetch_requirements(job: InstallJob, python_version: str) -> subprocess.Popen[bytes]:
    """Start filling uv's cache with what ``install_requirements`` will install."""
    return _prefetch(job, python_version, _requirements_options(job),
                     indexes_module.for_requirements(job.app_dir, job.lock_file,
                                                     job.config_vars).uv_env())


def prefetch_exported(job: InstallJob, python_version: str, exported: Path,
                      manager: str) -> subprocess.Popen[bytes]:
    """Start filling uv's cache with the hashed pins ``install_exported`` will install."""
    settings = indexes_module.for_lock_export(exported.read_text(), job.config_vars, manager)
    _split_export(exported, job.app_dir)
    return _prefetch(job, python_version, ["--no-deps", "--require-hashes", "-r", str(exported)],
                     settings.uv_env())


def prefetch_pins(job: InstallJob, pins: str | None,
                  manager: str) -> subprocess.Popen[bytes] | None:
    """Start downloading the pins a lock gives without its tool (``pins``, written to
    ``<manager>-pins.txt`` in the job's scratch); None when there are none (the tool
    must export the lock, at install time)."""
    if pins is None:
        return None
    exported = job.scratch / f"{manager}-pins.txt"
    exported.write_text(pins)
    return prefetch_exported(job, job.python_version, exported, manager)


def _prefetch(job: InstallJob, python_version: str, options: list[str],
              indexes: dict[str, str]) -> subprocess.Popen[bytes]:
    """The install's own options, run ahead into a throwaway target.

    Resolved for ``python_version`` by slugbuild's own interpreter (the
    runtime is not ready yet) and installed into ``--target`` in the job's
    scratch, in a process group of its own: it downloads while the runtime is
    being prepared, and the real install then finds everything in uv's cache.
    Silent; the real install reports any problem. Sealed as an install when the job
    has the build's seal (a package built here runs its setup.py); if the namespace
    cannot be set up it just fails, and the real install does the work.
    """
    argv: list[str | Path] = [
        uv_binary(), "pip", "install", "--python", sys.executable,
        "--python-version", python_version, "--target", str(job.scratch / "target"),
        "--link-mode", "hardlink", *options, *_constraint_args(job)]
    argv = no_build(argv)  # it runs no package code: it leaves the builds to the install
    sealed = (job.seal.command(argv, own_scratch(job), installer=True)
              if job.seal is not None else None)
    return subprocess.Popen(sealed[0] if sealed is not None else argv,
                            env=uv_env(job, indexes), cwd=job.app_dir,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own group: stopped with its children


def no_build(argv: Sequence[str | Path]) -> list[str | Path]:
    """A ``uv pip install`` command told to build nothing (``--no-build``: uv runs no
    package code, using only wheels, and those it built before for this environment):
    the install's wheel-only run (common.run_install_tool).

    Only for a run that leaves uv no choice of versions (``_uv_pip_install``'s
    ``exact``): told to build nothing, uv does not fail on a version that has only an
    sdist, it takes an older version that has a wheel (``bar>=1`` with bar 2.0 an
    sdist and 1.0 a wheel installs bar 1.0), so a run that resolves would install
    other versions than the same run without the flag."""
    words = list(argv)
    return [*words[:3], "--no-build", *words[3:]]


def _requirements_options(job: InstallJob) -> list[str]:
    """``-r`` and the hash option for the requirements files, as pip reads them.

    When a file is not plain UTF-8 (UTF-16 or UTF-32 with a BOM, a PEP 263
    coding line), uv is given UTF-8 copies of the whole set in the job's
    scratch, laid out as in the app so ``-r``/``-c`` includes still resolve
    (uv reads some BOMs but no coding line, and takes a UTF-32 BOM for UTF-16).
    The uv path takes no local package (``requirements.pip_only_reason``):
    no path in them is relative to the app. The user's files are never edited;
    the layer key is still made of their bytes.
    """
    files = requirements_files(job.app_dir, job.lock_file)
    texts = {rel: read_text_like_pip(job.app_dir / rel, rel) for rel in files}
    text = "\n".join(texts.values())
    options = ["--require-hashes"] if "--hash" in text or "--require-hashes" in text else []
    if all(plain_utf8((job.app_dir / rel).read_bytes()) for rel in files):
        return [*options, "-r", job.lock_file]
    copies = job.scratch / "requirements-utf8"
    for rel, content in texts.items():
        (copies / rel).parent.mkdir(parents=True, exist_ok=True)
        (copies / rel).write_text(content, encoding="utf-8")
    return [*options, "-r", str(copies / files[0])]


def requirements_source(job: InstallJob) -> str:
    """The requirements file uv should read for the job (a UTF-8 copy where the
    app's is not plain UTF-8, see ``_requirements_options``)."""
    return _requirements_options(job)[-1]


def _prefix_args(job: InstallJob) -> list[str]:
    # uv looks for what is already installed in the prefix only, never in the
    # interpreter's own site-packages.
    return ["--prefix", str(job.prefix)] if job.prefix is not None else []


def _constraint_args(job: InstallJob) -> list[str]:
    return ["-c", str(job.constraints)] if job.constraints is not None else []


def _uv_pip_install(job: InstallJob, options: list[str], shown: list[str],
                    indexes: IndexSettings | dict[str, str], raw: bool = False,
                    exact: bool = False) -> None:
    """Run ``uv pip install`` into the slug's runtime; a failure is the user's to fix
    (``dependency-install-failed``, or the ToolFailed itself when ``raw``).

    Files from uv's cache that are missing or no longer match their RECORD
    mean the cache was damaged (a file deleted, or changed through a hard
    link): those packages are cleaned from the cache and installed again. Two
    packages installing one path are an overlap: one warning, and the copy of
    the package whose name sorts last is the one kept (uv installs in
    parallel, so which one it wrote last varies).

    ``exact``: the options leave uv no choice of versions (every requirement pinned
    with ``==`` and no dependencies resolved, hash-checking mode, or constraints
    pinning the whole resolution), so the run may go wheel-only first (``no_build``);
    otherwise it runs guarded at once (``common.guarded_run``).
    """
    argv = [uv_binary(), "pip", "install", "--python", str(job.python),
            "--link-mode", job.link_mode, *_prefix_args(job), *options, *_constraint_args(job)]
    site_packages = _site_packages(job)
    before = _dist_infos(site_packages)
    env = uv_env(job, indexes.uv_env() if isinstance(indexes, IndexSettings) else indexes)
    try:
        built_wheels.note_builds(job.scratch, run_install_tool(
            job, argv, env, cwd=job.app_dir, wheel_only=no_build(argv) if exact else None))
        changed, overlapped, winners = check_installed(site_packages,
                                                       _dist_infos(site_packages) - before)
        for projects, paths in sorted(_overlap_pairs(overlapped).items()):
            more = f" (and {len(paths) - 1} more path(s))" if len(paths) > 1 else ""
            job.reporter.warn(
                f"Packages {' and '.join(projects)} both install {paths[0]}{more}; the copy "
                f"of {projects[-1]} is kept (of overlapping packages, the one whose name "
                f"sorts last).")
        if changed:
            names = sorted({dist_info.split("-")[0] for dist_info in changed})
            first = next(iter(changed.values()))[0]
            job.reporter.warn(
                f"Files of {', '.join(names)} in uv's cache are missing or differ from what "
                f"the package recorded (first: {first}); uv's cache was damaged. Cleaning "
                f"them from uv's cache and installing again.")
            # In the caches themselves, not through the install's view of them (its
            # buckets are symlinks, which uv's clean removes instead of their entries).
            for root in (built_wheels.shared_cache(job.cache.root, "uv"),
                         built_wheels.partition(job.cache.root, "uv", job.env_sha256)):
                if root.is_dir():
                    run_tool([uv_binary(), "cache", "clean", *names], job.reporter,
                             {**env, "UV_CACHE_DIR": str(root)}, show=False)
        names = sorted({dist_info.split("-")[0] for dist_info in changed} | winners)
        if names:
            again = [*argv, *(f"--reinstall-package={name}" for name in names)]
            built_wheels.note_builds(job.scratch, run_install_tool(
                job, again, env, cwd=job.app_dir, show=bool(changed),
                wheel_only=no_build(again) if exact else None))
    except ToolFailed as failed:
        if raw:
            raise
        raise install_failed(job, shown, failed, indexes if isinstance(
            indexes, IndexSettings) else None) from failed


def _site_packages(job: InstallJob) -> Path:
    home = job.prefix if job.prefix is not None else job.python.parent.parent
    return home / "lib" / job.python.name / "site-packages"


def _dist_infos(site_packages: Path) -> set[str]:
    try:
        return {name for name in os.listdir(site_packages) if name.endswith(".dist-info")}
    except FileNotFoundError:
        return set()


def check_installed(site_packages: Path, dist_infos: set[str]
                    ) -> tuple[dict[str, list[str]], dict[str, list[records.Claim]], set[str]]:
    """After an install of ``dist_infos``: per dist-info, its files that are missing or
    differ from their RECORD line; the paths several distributions install; and the
    projects to reinstall so that each overlapped path holds its winner's copy."""
    home = site_packages.parent.parent.parent
    base = site_packages.relative_to(home).as_posix()
    claims = records.claims_in(home, [f"{base}/{d}/RECORD"
                                      for d in _dist_infos(site_packages)])
    changed: dict[str, list[str]] = {}
    overlapped: dict[str, list[records.Claim]] = {}
    winners: set[str] = set()
    for rel, found in claims.items():
        mine = [c for c in found if c.dist_info in dist_infos]
        if not mine:
            continue
        path = os.path.join(home, rel)
        shown = os.path.relpath(rel, base)
        if len({c.dist_info for c in found}) > 1:
            overlapped[shown] = found
            if records.file_matches(path, records.winner(found)):
                continue
            if any(records.file_matches(path, c) for c in found):
                winners.add(records.winner(found).project)
                continue
        elif records.file_matches(path, mine[0]):
            continue
        for claim in mine:
            changed.setdefault(claim.dist_info, []).append(shown)
    return changed, overlapped, winners


def _overlap_pairs(overlapped: dict[str, list[records.Claim]]) -> dict[tuple[str, ...], list[str]]:
    """The overlapping projects (sorted, the kept one last) and the paths they share."""
    pairs: dict[tuple[str, ...], list[str]] = {}
    # Paths whose copies differ first: those are the ones a user must know about.
    for rel, found in sorted(overlapped.items(),
                             key=lambda item: (len({c.digest for c in item[1]}) == 1, item[0])):
        win = records.winner(found).project
        others = sorted({c.project for c in found} - {win})
        pairs.setdefault((*others, win), []).append(rel)
    return pairs


# The layer key's tool versions for a requirements file whose ranges uv resolves.
RANGES_VERSION = "uv=={uv}, ranges resolved"


class UvBackend:
    """requirements.txt installed by uv: pinned files as they are, version ranges
    resolved first (``ranges.resolve_plan``) and installed with those pins as
    constraints; what only pip does as pip does stays with pip
    (``requirements.pip_only_reason``)."""

    name = "uv"

    @property
    def version(self) -> str:
        return f"uv=={uv_version()}, every requirement pinned"

    def install(self, job: InstallJob, pins: Path | None = None) -> None:
        install_requirements(job, pins)

    def install_baseline(self, job: InstallJob, requirements: tuple[str, ...]) -> None:
        install_baseline(job, requirements)

    def prefetch(self, job: InstallJob) -> subprocess.Popen[bytes] | None:
        return prefetch_requirements(job, job.python_version)
