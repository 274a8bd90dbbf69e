"""Choosing a runtime: the configured sources, made once, asked in order.

``RuntimeOptions`` names the sources (``--python-source``); ``make_sources``
makes one object per name from ``SOURCE_FACTORIES``; ``resolve`` asks them for
the app's request (versions.py reads it) and says why a version was picked or
could not be had.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import errors
from ..cache import Cache
from ..envflag import env_flag
from ..log import Reporter
from ..oci.options import RegistryOptions
from ..platform_info import Platform
from ..versions import (
    DEFAULT_PYTHON,
    FROM_DEFAULT,
    FROM_STICKY,
    PythonRequest,
    allow_eol_from_env,
    check_supported,
    default_minors,
    is_supported,
    newer_patch,
    pick,
    policy_warnings,
    read_request,
    record_sticky,
    sort_versions,
    sticky_minor,
)
from .download import DownloadSource, HerokuSource
from .local import LocalInterpreterSource
from .published import ENV_VAR as PYTHON_REGISTRY_ENV
from .published import PUBLISHED, PublishedSource
from .sources import RuntimeOffer, RuntimeSource, SourceUnavailable

DEFAULT_SOURCES = ("local", "download")
PATCH_FALLBACK_ENV = "SLUGBUILD_PYTHON_PATCH_FALLBACK"


def _flag(name: str, unknown: bool) -> bool:
    """A switch that is off unless set; ``unknown``: a word it does not know (envflag)."""
    return env_flag(name, unset=False, unknown=unknown)


@dataclass(frozen=True)
class RuntimeOptions:
    """Where runtimes may come from, in order; ``offline`` forbids network access.

    ``allow_eol`` builds minors the version policy refuses; ``patch_fallback``
    accepts the newest patch of the same minor when an exact pin cannot be had.
    ``python_registry`` (a registry repository or directory ``runtime publish``
    wrote) puts the ``published`` source first, unless ``sources`` places it;
    ``registry`` gives it the credentials images take.
    """

    sources: tuple[str, ...] = DEFAULT_SOURCES
    offline: bool = False
    download_url: str | None = None  # None: $SLUGBUILD_PYTHON_DOWNLOAD_URL or the default
    allow_eol: bool = False
    patch_fallback: bool = False
    heroku_url: str | None = None  # None: $SLUGBUILD_HEROKU_PYTHON_URL or Heroku's S3
    python_registry: str | None = None  # from_env: else $SLUGBUILD_PYTHON_REGISTRY
    registry: RegistryOptions | None = None

    @classmethod
    def from_env(cls, sources: str | Sequence[str] | None = None, offline: bool | None = None,
                 download_url: str | None = None, allow_eol: bool | None = None,
                 patch_fallback: bool | None = None, python_registry: str | None = None
                 ) -> RuntimeOptions:
        """Options given explicitly, else from SLUGBUILD_PYTHON_SOURCE, SLUGBUILD_OFFLINE,
        SLUGBUILD_ALLOW_EOL_PYTHON, SLUGBUILD_PYTHON_PATCH_FALLBACK and
        SLUGBUILD_PYTHON_REGISTRY."""
        if sources is None:
            sources = os.environ.get("SLUGBUILD_PYTHON_SOURCE") or ",".join(DEFAULT_SOURCES)
        if offline is None:
            offline = _flag("SLUGBUILD_OFFLINE", unknown=True)  # no network: the safe side
        if allow_eol is None:
            allow_eol = allow_eol_from_env()
        if patch_fallback is None:
            patch_fallback = _flag(PATCH_FALLBACK_ENV, unknown=False)  # the pin kept
        if python_registry is None:
            python_registry = os.environ.get(PYTHON_REGISTRY_ENV) or None
        return cls(parse_sources(sources), offline, download_url, allow_eol, patch_fallback,
                   python_registry=python_registry)


def parse_sources(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"local,download"`` (or a sequence) as a checked tuple of source names."""
    names = value.split(",") if isinstance(value, str) else list(value)
    cleaned = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in cleaned if n not in SOURCE_FACTORIES]
    if unknown or not cleaned:
        raise errors.PYTHON_SOURCE_UNKNOWN.error(
            value=",".join(unknown) or str(value), known=", ".join(SOURCE_FACTORIES))
    return cleaned


def _local_source(options: RuntimeOptions, cache: Cache, platform: Platform) -> RuntimeSource:
    return LocalInterpreterSource()


def _download_source(options: RuntimeOptions, cache: Cache, platform: Platform) -> RuntimeSource:
    return DownloadSource(cache, platform, base_url=options.download_url, offline=options.offline)


def _heroku_source(options: RuntimeOptions, cache: Cache, platform: Platform) -> RuntimeSource:
    return HerokuSource(cache, platform, base_url=options.heroku_url, offline=options.offline)


def _published_source(options: RuntimeOptions, cache: Cache, platform: Platform
                      ) -> RuntimeSource:
    if not options.python_registry:
        raise errors.PYTHON_REGISTRY_INVALID.error(
            reference="--python-source published",
            reason="no --python-registry (or SLUGBUILD_PYTHON_REGISTRY) names where")
    return PublishedSource(options.python_registry, platform, options.offline,
                           options.registry, cache)


SourceFactory = Callable[[RuntimeOptions, Cache, Platform], RuntimeSource]
SOURCE_FACTORIES: dict[str, SourceFactory] = {
    "local": _local_source,
    "download": _download_source,
    "heroku": _heroku_source,
    PUBLISHED: _published_source,
}


def make_sources(options: RuntimeOptions, cache: Cache, platform: Platform) -> list[RuntimeSource]:
    """One source per name, in order; with a ``python_registry`` the published
    runtimes come first unless ``sources`` names their place."""
    names = options.sources
    if options.python_registry and PUBLISHED not in names:
        names = (PUBLISHED, *names)
    return [SOURCE_FACTORIES[name](options, cache, platform) for name in names]


@dataclass
class Resolution:
    """The offer chosen for a request, why, and what else was seen on the way."""

    offer: RuntimeOffer
    known_versions: list[str]
    newer_patch: str | None
    reason: str = ""  # why this version, for the log (the default, a fallback)
    substituted_for: str | None = None  # the exact pin that could not be had
    warnings: list[str] = field(default_factory=list)
    requested_from: str = "file"  # versions.FROM_FILE, FROM_STICKY or FROM_DEFAULT
    unavailable: dict[str, str] = field(default_factory=dict)  # source name: why it failed

    def record(self) -> dict[str, Any]:
        """What slug.json's runtime object adds about the choice."""
        record: dict[str, Any] = {"requested_from": self.requested_from}
        if self.substituted_for:
            record["substituted_for"] = self.substituted_for
        if self.reason:
            record["reason"] = self.reason
        return record


def list_offers(sources: Sequence[RuntimeSource], allow_eol: bool = False
                ) -> tuple[list[RuntimeOffer], list[str]]:
    """Every supported offer of every source, and a note for each source that failed."""
    offers, notes = [], []
    for source in sources:
        try:
            offers += [o for o in source.available() if is_supported(o.version, allow_eol)]
        except SourceUnavailable as exc:
            notes.append(f"{source.name}: {exc}")
    return offers, notes


class _Survey:
    """Each source's offers, read once and in order; failures noted, never raised."""

    def __init__(self, sources: Sequence[RuntimeSource], allow_eol: bool) -> None:
        self.sources = list(sources)
        self.allow_eol = allow_eol
        self._offers: dict[int, list[RuntimeOffer]] = {}
        self.failed: dict[str, str] = {}
        self.refused: set[str] = set()  # versions offered but refused by the policy

    def offers(self, source: RuntimeSource) -> list[RuntimeOffer]:
        if id(source) not in self._offers:
            try:
                listed = source.available()
                found = [o for o in listed if is_supported(o.version, self.allow_eol)]
                self.refused.update(o.version for o in listed if o not in found)
            except SourceUnavailable as exc:
                self.failed[source.name] = str(exc)
                found = []
            self._offers[id(source)] = found
        return self._offers[id(source)]

    def seen(self) -> list[str]:
        return sort_versions([o.version for offers in self._offers.values() for o in offers])

    def tried(self) -> str:
        parts = []
        for source in self.sources:
            if source.name in self.failed:
                parts.append(f"{source.name} ({self.failed[source.name]})")
            elif id(source) in self._offers:
                refused = getattr(source, "refused", None)  # the local source says why
                notes = refused() if refused is not None else []
                parts.append(f"{source.name} ({len(self._offers[id(source)])} version(s)"
                             + "".join(f"; {note}" for note in notes) + ")")
        return "; ".join(parts) or "none"

    def first_match(self, request: PythonRequest) -> RuntimeOffer | None:
        for source in self.sources:
            offers = self.offers(source)
            chosen = pick(request, [o.version for o in offers])
            if chosen is not None:
                return next(o for o in offers if o.version == chosen)
        return None

    def exact(self, version: str) -> RuntimeOffer | None:
        """Ask sources that can search beyond their listing (a whole release history)."""
        for source in self.sources:
            try:
                offer = source.find_exact(version)
            except SourceUnavailable as exc:
                self.failed.setdefault(source.name, str(exc))
                continue
            if offer is not None:
                return offer
        return None


def resolve(request: PythonRequest, sources: Sequence[RuntimeSource], *,
            allow_eol: bool = False, patch_fallback: bool = False) -> Resolution:
    """The runtime for ``request``.

    A file's request: the first source (in order) that offers a match wins, its
    newest match is used; an exact pin no listing has is searched for in the
    sources' whole history (``find_exact``), then, with ``patch_fallback``,
    replaced by the newest patch of its minor. The default: the newest supported
    minor (never past DEFAULT_PYTHON) that any source offers.
    """
    survey = _Survey(sources, allow_eol)
    reason, substituted = "", None
    if request.is_default:
        offer = None
        for minor in default_minors():
            offer = survey.first_match(PythonRequest(minor, None))
            if offer is not None:
                break
        if offer is not None:
            reason = (f"the newest supported Python a source offers (Heroku's default is "
                      f"{DEFAULT_PYTHON})" if offer.major_minor != DEFAULT_PYTHON
                      else "Heroku's default")
    else:
        offer = survey.first_match(request)
        if offer is None and request.is_exact:
            offer = survey.exact(request.requested)
            if offer is None and patch_fallback:
                offer = survey.first_match(PythonRequest(request.major_minor, None))
                if offer is not None:
                    substituted = request.requested
                    reason = (f"Python {request.requested} is not available; "
                              f"--python-patch-fallback took the newest {request.major_minor} "
                              f"patch instead")
    if offer is None:
        raise _unavailable(request, survey, sources, patch_fallback)
    seen = survey.seen()
    newer = newer_patch(offer.version, seen)
    resolution = Resolution(offer, seen, newer, reason, substituted)
    resolution.unavailable = dict(survey.failed)
    resolution.warnings = policy_warnings(offer.version, request)
    if substituted:
        resolution.warnings.append(
            f"Python {substituted} ({request.describe_source()}) could not be found in any "
            f"source; building with Python {offer.version}, the newest {request.major_minor} "
            f"patch available, because the patch fallback is on. slug.json records it as "
            f"runtime.substituted_for.")
    # A published runtime's patch is its publisher's choice: advice to install another
    # locally is noise to the builds using it (an app's own pin is still warned about).
    if newer and (offer.source_name != PUBLISHED or request.is_exact):
        resolution.warnings.append(_newer_patch_warning(request, offer, newer, sources, survey))
    return resolution


def _settled(request: PythonRequest, resolution: Resolution,
             sources: Sequence[RuntimeSource], options: RuntimeOptions, cache: Cache,
             reporter: Reporter, fetch: bool) -> Resolution:
    """The resolution with its offer settled by its source when the source does that
    (the published runtimes: keyed as published and, with ``fetch``, its layer in the
    cache); when it cannot be, resolved again from the other sources."""
    settle = getattr(resolution.offer.source, "settle", None)
    if settle is None:
        return resolution
    settled = settle(resolution.offer, cache, reporter, fetch)
    if settled is not None:
        resolution.offer = settled
        return resolution
    others = [source for source in sources if source is not resolution.offer.source]
    return resolve(request, others, allow_eol=options.allow_eol,
                   patch_fallback=options.patch_fallback)


def _newer_patch_warning(request: PythonRequest, offer: RuntimeOffer, newer: str,
                         sources: Sequence[RuntimeSource], survey: _Survey) -> str:
    if request.is_exact and not request.is_default:
        return (f"A Python security update is available: Python {newer} (the app pins "
                f"{request.requested}). Update {request.where} to it, or better, to "
                f"`{request.major_minor}` to get every patch release.")
    text = (f"Python {offer.version} is not the newest {offer.major_minor} patch: {newer} is "
            f"out, with security fixes, but {offer.source_name} (the first source offering "
            f"{offer.major_minor}) does not have it. Install it (`pyenv install {newer}`)")
    downloaders = [s for s in sources if s.downloads]
    if not downloaders:
        return text + " or allow downloads (`--python-source download,local`)."
    if all(s.offline for s in downloaders):
        return text + " or build online once with `--python-source download,local`."
    if all(s.name in survey.failed for s in downloaders):
        return text + (" or let the download source reach its index (it could not be read; "
                       "`--python-download-url` names a mirror or a local index).")
    return text + (" or put a download source first (`--python-source download,local`; "
                   "`--python-download-url` names another index).")


def _unavailable(request: PythonRequest, survey: _Survey, sources: Sequence[RuntimeSource],
                 patch_fallback: bool) -> errors.SlugbuildError:
    """The "version unavailable" error, with advice fitting what was tried and why it failed."""
    downloaders = [s for s in sources if s.downloads]
    requested = request.requested
    if request.is_default:
        requested = f"{DEFAULT_PYTHON} (or any of {', '.join(default_minors()[1:])})"
    if not downloaders:
        variant = "no-downloads"
    elif all(s.offline for s in downloaders):
        variant = "offline"
    elif any(s.name in survey.failed for s in downloaders):
        variant = "index-unreadable"
    else:
        variant = "not-in-index"
    eol = sorted(v for v in survey.refused if request.matches(v))
    if eol:
        variant += "+eol"
    if request.is_exact and not patch_fallback:
        variant += "+patch-fallback"
    asker = request.source_file or ("The version this app's previous build used (sticky; "
                                     "no version file)" if request.origin == FROM_STICKY
                                     else "The default")
    return errors.PYTHON_VERSION_UNAVAILABLE.error(
        variant=variant,
        source_file=asker,
        requested=requested,
        available=", ".join(survey.seen()) or "none",
        sources=survey.tried(),
        where=request.where,
        wanted=request.requested,
        eol=", ".join(eol),
        major_minor=request.major_minor,
    )


def choose_runtime(app_dir: Path, cache: Cache, platform: Platform, options: RuntimeOptions,
                   reporter: Reporter, sticky_key: Path, remember: bool = True
                   ) -> tuple[PythonRequest, Resolution]:
    """Read the app's request, resolve it against the configured sources, and say
    in the log what was picked and why. ``sticky_key`` is the app's own directory:
    an app without a version file stays on the minor its previous build used
    (``remember=False``, for ``slugbuild plan``: look, but record nothing)."""
    request = read_request(app_dir, sticky_minor(cache.root, sticky_key))
    if request.source_file:
        reporter.step(f"Using Python {request.requested} {request.describe_source()}")
    elif request.origin == FROM_STICKY:
        reporter.step(f"Using Python {request.requested} {request.describe_source()}")
    else:
        reporter.step("No Python version was specified. Choosing the default: the newest "
                      f"supported Python (at most {DEFAULT_PYTHON}, Heroku's default) a "
                      f"runtime source offers")
    for warning in request.warnings:
        reporter.warn(warning)
    check_supported(request, options.allow_eol)
    sources = make_sources(options, cache, platform)
    resolution = _settled(request, resolve(request, sources, allow_eol=options.allow_eol,
                                           patch_fallback=options.patch_fallback),
                          sources, options, cache, reporter, fetch=remember)
    resolution.requested_from = request.origin
    for source in sources:
        if source.index_origin:
            reporter.detail(f"Runtime index ({source.name}): {source.index_origin}")
    for name, reason in resolution.unavailable.items():
        if name != PUBLISHED:  # its one warning is below
            reporter.detail(f"Runtime source {name} unavailable: {reason}")
    for source in sources:
        passed_over = getattr(source, "passed_over", None)
        if passed_over is not None and (note := passed_over(resolution.offer,
                                                            source is sources[0])):
            reporter.warn(note)
    if request.is_default:
        reporter.step(f"Picked Python {resolution.offer.major_minor} "
                      f"({resolution.offer.version} from {resolution.offer.source_name}): "
                      f"{resolution.reason}. Later builds of this app stay on "
                      f"{resolution.offer.major_minor} until it has a .python-version.")
    for warning in resolution.warnings:
        reporter.warn(warning)
    _check_project_allows(app_dir, resolution.offer.version)
    if remember and request.origin in (FROM_DEFAULT, FROM_STICKY):
        record_sticky(cache.root, sticky_key, resolution.offer.version)
    return request, resolution


def _check_project_allows(app_dir: Path, version: str) -> None:
    """Refuse, before any runtime is prepared, a Python the project's lock tool
    would refuse (uv, Poetry): the installers check again, this only saves the wait."""
    if (app_dir / "uv.lock").is_file():
        from ..installers.uv_project import check_python_allowed
    elif (app_dir / "poetry.lock").is_file():
        from ..installers.poetry import check_python_allowed
    else:
        return
    check_python_allowed(app_dir, version)
