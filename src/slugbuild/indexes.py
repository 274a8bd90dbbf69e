"""Where packages come from: the indexes an install uses, worked out as pip would.

An app names indexes in its requirements files (``-i``, ``--extra-index-url``,
``--find-links``, ``--no-index``, ``--trusted-host``, also inside ``-r``/``-c``
includes) or in its lock (Pipfile.lock sources, Poetry sources, uv indexes);
the build's config vars name them too (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL,
PIPENV_PYPI_MIRROR). Every installer path gets the same answer from here, so
a pinned requirements file installed by uv reads its ``-i`` exactly as pip
does: a private index named by the app is never swapped for PyPI.

Index URLs may hold credentials: they reach installers only through their
environment, are shown through ``redact_url``, and are recorded (slug.json,
layer keys) only redacted plus a hash of the full URL.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .redact import redact_url

DEFAULT_INDEX_URL = "https://pypi.org/simple"
# URLs that mean "PyPI" in locks (Pipenv writes the first; old locks the others).
_PYPI_URLS = re.compile(r"^https?://(?:pypi\.org|pypi\.python\.org|pypi\.io)/simple/?$")
# Config vars that replace PyPI wherever a lock names it, by package manager.
MIRROR_CONFIG_VARS = {"pipenv": ("PIPENV_PYPI_MIRROR", "PIP_INDEX_URL"),
                      "poetry": ("PIP_INDEX_URL",), "uv": ("UV_DEFAULT_INDEX", "UV_INDEX_URL",
                                                           "PIP_INDEX_URL")}
# Options of a requirements file that decide where packages come from.
_OPTION = re.compile(
    r"^\s*(?P<name>-i|--index-url|--extra-index-url|-f|--find-links|--no-index|--trusted-host)"
    r"(?:(?:\s*=\s*|\s+)(?P<value>\S+))?\s*$")
_ENV_VAR = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)\}")


@dataclass
class IndexSettings:
    """The indexes of one install, in pip's order: the index, then the extra ones."""

    index_urls: list[str] = field(default_factory=lambda: [DEFAULT_INDEX_URL])
    find_links: list[str] = field(default_factory=list)
    trusted_hosts: list[str] = field(default_factory=list)
    no_index: bool = False

    def set_index(self, url: str) -> None:
        if not self.no_index:
            self.index_urls = [url]

    def add_extra(self, url: str) -> None:
        if not self.no_index and url not in self.index_urls:
            self.index_urls.append(url)

    def disable_index(self) -> None:
        self.no_index = True
        self.index_urls = []

    def shown(self) -> str:
        """The indexes for a message, credentials hidden."""
        places = [redact_url(url) for url in self.index_urls]
        places += [f"--find-links {redact_url(link)}" for link in self.find_links]
        return ", ".join(places) or "no index (--no-index)"

    def record(self) -> dict:
        """What slug.json says: each place redacted, with a hash of the full URL."""
        def entry(url: str) -> dict[str, str]:
            return {"url": redact_url(url),
                    "sha256": hashlib.sha256(url.encode()).hexdigest()[:16]}

        result: dict = {"indexes": [entry(url) for url in self.index_urls]}
        if self.find_links:
            result["find_links"] = [entry(link) for link in self.find_links]
        if self.no_index:
            result["no_index"] = True
        return result

    def digest(self) -> str:
        """A hash of every setting (part of the dependency layer key)."""
        text = repr((self.index_urls, self.find_links, sorted(self.trusted_hosts),
                     self.no_index))
        return hashlib.sha256(text.encode()).hexdigest()

    def search_order(self) -> list[str]:
        """The order uv searches the indexes in: the extra indexes, then the index,
        and PyPI always last, so a private index named either way (``-i private``
        with PyPI as an extra, or PyPI with ``--extra-index-url private``) is
        searched before the public one."""
        order = [*self.index_urls[1:], *self.index_urls[:1]]
        return ([url for url in order if not _PYPI_URLS.match(url)]
                + [url for url in order if _PYPI_URLS.match(url)])

    def uv_env(self) -> dict[str, str]:
        """The settings as uv's environment (uv reads the env before a file's options).

        uv takes a package from the first index (``search_order``) that has
        its name at all (``first-index``): a same-named package on a later
        index never replaces one on an earlier one, and PyPI comes last. That
        is the dependency-confusion-safe order (docs/package-managers.md).
        """
        env: dict[str, str] = {"UV_INDEX_STRATEGY": "first-index"}
        if self.no_index or not self.index_urls:
            env["UV_NO_INDEX"] = "1"
        else:
            order = self.search_order()
            env["UV_INDEX_URL"] = order[-1]  # uv searches its extra indexes first
            if order[:-1]:
                env["UV_EXTRA_INDEX_URL"] = " ".join(order[:-1])
        if self.find_links:
            env["UV_FIND_LINKS"] = ",".join(self.find_links)
        if self.trusted_hosts:
            env["UV_INSECURE_HOST"] = " ".join(self.trusted_hosts)
        return env


def from_config(config_vars: dict) -> IndexSettings:
    """The settings the build's config vars make, before any file is read (pip's view)."""
    settings = IndexSettings(index_urls=[config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL])
    for url in (config_vars.get("PIP_EXTRA_INDEX_URL") or "").split():
        settings.add_extra(url)
    settings.find_links = (config_vars.get("PIP_FIND_LINKS") or "").split()
    settings.trusted_hosts = (config_vars.get("PIP_TRUSTED_HOST") or "").split()
    if (config_vars.get("PIP_NO_INDEX") or "").strip().lower() in ("1", "true", "yes", "on"):
        settings.disable_index()
    return settings


def apply_requirements_options(settings: IndexSettings, lines: list[tuple[Path, str]],
                               config_vars: dict) -> IndexSettings:
    """Apply the index options of requirements lines, in the order pip reads them.

    ``lines`` are (file, logical line) pairs, includes already expanded in
    place. As in pip: ``-i`` replaces the index list, ``--extra-index-url``
    adds to it, ``--no-index`` empties it for good, ``--find-links`` (a path
    relative to its file when it exists there) and ``--trusted-host`` add.
    ``${VAR}`` is expanded from the config vars, as pip does from its env.
    """
    for path, line in lines:
        match = _OPTION.match(line)
        if not match:
            continue
        name, value = match.group("name"), expand(match.group("value") or "", config_vars)
        if name == "--no-index":
            settings.disable_index()
        elif not value:
            continue
        elif name in ("-i", "--index-url"):
            settings.set_index(value)
        elif name == "--extra-index-url":
            settings.add_extra(value)
        elif name in ("-f", "--find-links"):
            local = path.parent / value
            if "://" not in value and local.exists():
                value = str(local.resolve())
            if value not in settings.find_links:
                settings.find_links.append(value)
        elif value not in settings.trusted_hosts:
            settings.trusted_hosts.append(value)
    return settings


def for_requirements(app_dir: Path, lock_file: str, config_vars: dict) -> IndexSettings:
    """Where pip would look for packages: the config vars, then the options of the
    requirements files (``-i``, ``--extra-index-url``, ``--find-links``, in pip's order)."""
    from .installers.requirements import ordered_lines

    return apply_requirements_options(from_config(config_vars),
                                      ordered_lines(app_dir, lock_file), config_vars)


def for_lock_export(text: str, config_vars: dict, package_manager: str) -> IndexSettings:
    """The indexes for installing a lock's export (its ``-i``/``--extra-index-url`` lines).

    The lock's own indexes come first, in its order; wherever it names PyPI,
    the package manager's mirror config var (PIPENV_PYPI_MIRROR, PIP_INDEX_URL,
    ...) stands in, as the tool itself would do. PIP_EXTRA_INDEX_URL adds.
    A lock that names no index gets the config's index, else PyPI.
    """
    named = [expand(match.group("value"), config_vars) for match in map(_OPTION.match,
             text.splitlines()) if match and match.group("name") in
             ("-i", "--index-url", "--extra-index-url") and match.group("value")]
    if not named:
        named = [config_vars.get("PIP_INDEX_URL") or DEFAULT_INDEX_URL]
    settings = IndexSettings(index_urls=[])
    for url in named:
        settings.add_extra(mirrored(url, config_vars, package_manager))
    for url in (config_vars.get("PIP_EXTRA_INDEX_URL") or "").split():
        settings.add_extra(url)
    settings.trusted_hosts = (config_vars.get("PIP_TRUSTED_HOST") or "").split()
    return settings


def mirrored(url: str, config_vars: dict, package_manager: str) -> str:
    """``url``, or the package manager's mirror config var when ``url`` is PyPI."""
    mirror = next((config_vars[name] for name in MIRROR_CONFIG_VARS.get(package_manager, ())
                   if config_vars.get(name)), None)
    return mirror if mirror and _PYPI_URLS.match(url) else url


def package_indexes(app_dir: Path, package_manager: str, lock_file: str,
                    config_vars: dict) -> dict[str, str]:
    """Normalised name -> the one index the lock says the package comes from
    (full URL, mirrors applied); empty for requirements files or an unreadable lock."""
    if package_manager == "pip":
        return {}
    try:
        return _sources(app_dir, package_manager, lock_file, config_vars)[1]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def expand(value: str, config_vars: dict) -> str:
    """``${VAR}`` replaced from the config vars (pip expands it from its environment,
    which holds the config vars and nothing of the machine's)."""
    return _ENV_VAR.sub(lambda m: config_vars.get(m.group("name"), m.group(0)), value)


def app_sources(app_dir: Path, package_manager: str, lock_file: str,
                config_vars: dict) -> tuple[dict, dict[str, str]]:
    """What slug.json records: the indexes of the install (redacted, hashed), and
    for each package whose index is known for certain, that index (redacted).

    A package's index is known when only one index (and no --find-links) was
    searched, or when the lock itself says where it comes from (uv.lock's
    ``source.registry``, poetry.lock's ``source.url``, a Pipfile.lock entry's
    ``index``). Anything unreadable gives an empty answer: the installer has
    already refused a broken lock.
    """
    try:
        settings, per_package = _sources(app_dir, package_manager, lock_file, config_vars)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}, {}
    record = {**settings.record(), "strategy": _strategy(package_manager, app_dir, lock_file,
                                                           config_vars)}
    if len(settings.index_urls) == 1 and not settings.find_links:
        per_package = {"*": settings.index_urls[0], **per_package}
    return record, {name: redact_url(url) for name, url in per_package.items()}


def _strategy(package_manager: str, app_dir: Path, lock_file: str, config_vars: dict) -> str:
    if package_manager == "pip":
        from .installers.requirements import requirements_files, requirements_tool

        files = requirements_files(app_dir, lock_file)
        if requirements_tool(app_dir, files, config_vars) == "pip":
            return "pip (best version across all indexes)"
    return "first-index"


def _sources(app_dir: Path, package_manager: str, lock_file: str,
             config_vars: dict) -> tuple[IndexSettings, dict[str, str]]:
    from packaging.utils import canonicalize_name

    from .toml_compat import tomllib

    if package_manager == "pip":
        settings = for_requirements(app_dir, lock_file, config_vars)
        root = str(app_dir.resolve())
        # The app's own directories, as the app names them (not the build's path).
        settings.find_links = [f".{link[len(root):]}" if link.startswith(root + "/") else link
                               for link in settings.find_links]
        return settings, {}
    if package_manager == "pipenv":
        lock = json.loads((app_dir / "Pipfile.lock").read_text())
        sources = lock["_meta"]["sources"]
        lines = [f"{'-i' if i == 0 else '--extra-index-url'} {_dollar_braced(s['url'])}"
                 for i, s in enumerate(sources)]
        settings = for_lock_export("\n".join(lines), config_vars, "pipenv")
        by_name = {s["name"]: mirrored(expand(_dollar_braced(s["url"]), config_vars),
                                       config_vars, "pipenv") for s in sources}
        return settings, {canonicalize_name(name): by_name[entry["index"]]
                          for name, entry in lock.get("default", {}).items()
                          if isinstance(entry, dict) and entry.get("index") in by_name}
    if package_manager == "uv":
        lock = tomllib.loads((app_dir / "uv.lock").read_text())
        per_package = {canonicalize_name(p["name"]): p["source"]["registry"]
                       for p in lock.get("package", [])
                       if isinstance(p.get("source"), dict) and "registry" in p["source"]}
        named = _named_indexes(app_dir, ("tool", "uv", "index"), "url")
        per_package = {name: _with_credentials(
                           _renamed(mirrored(url, config_vars, "uv"),
                                    named.get(url.rstrip("/")), config_vars, "uv"),
                           named.get(url.rstrip("/")), config_vars, "uv")
                       for name, url in per_package.items()}
        settings = IndexSettings(index_urls=[])
        for url in sorted(set(per_package.values())):
            settings.add_extra(url)
        return settings, per_package
    if package_manager == "poetry":
        lock = tomllib.loads((app_dir / "poetry.lock").read_text())
        default = mirrored(DEFAULT_INDEX_URL, config_vars, "poetry")
        per_package = {}
        for package in lock.get("package", []):
            source = package.get("source")
            if not source:
                per_package[canonicalize_name(package["name"])] = default
            elif source.get("type") == "legacy":
                reference = source.get("reference")
                per_package[canonicalize_name(package["name"])] = _with_credentials(
                    _renamed(source["url"], reference, config_vars, "poetry"), reference,
                    config_vars, "poetry")
        settings = IndexSettings(index_urls=[])
        for url in [default, *sorted(set(per_package.values()) - {default})]:
            settings.add_extra(url)
        return settings, per_package
    return IndexSettings(), {}


def _named_indexes(app_dir: Path, table: tuple[str, ...], url_key: str) -> dict[str, str]:
    """URL (without a trailing slash) -> name of the indexes pyproject.toml declares."""
    from .toml_compat import tomllib

    try:
        data = tomllib.loads((app_dir / "pyproject.toml").read_text())
        for part in table:
            data = data[part]
        return {entry[url_key].rstrip("/"): entry["name"] for entry in data
                if isinstance(entry, dict) and "name" in entry and url_key in entry}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _renamed(url: str, name: str | None, config_vars: dict, manager: str) -> str:
    """The URL a config var gives the named index instead, as the tool reads it
    (uv: ``UV_INDEX="name=url ..."``; Poetry: ``POETRY_REPOSITORIES_<NAME>_URL``)."""
    if not name:
        return url
    if manager == "uv":
        for item in (config_vars.get("UV_INDEX") or "").split():
            given, _, replacement = item.partition("=")
            if replacement and given == name:
                return replacement
        return url
    key = re.sub(r"[^A-Z0-9]", "_", name.upper())
    return config_vars.get(f"POETRY_REPOSITORIES_{key}_URL") or url


def _with_credentials(url: str, name: str | None, config_vars: dict, manager: str) -> str:
    """``url`` with the user and password the tool's own config vars give its index
    (uv: UV_INDEX_<NAME>_USERNAME/_PASSWORD; Poetry: POETRY_HTTP_BASIC_<NAME>_...).
    A lock never holds credentials; these config vars are how users of each tool
    pass them."""
    if not name or "@" in url.split("://", 1)[-1].split("/", 1)[0]:
        return url
    key = re.sub(r"[^A-Z0-9]", "_", name.upper())
    prefix = {"uv": f"UV_INDEX_{key}_", "poetry": f"POETRY_HTTP_BASIC_{key}_"}[manager]
    user, password = config_vars.get(prefix + "USERNAME"), config_vars.get(prefix + "PASSWORD")
    if not user and not password:
        return url
    from urllib.parse import quote

    scheme, rest = url.split("://", 1)
    userinfo = quote(user or "", safe="") + (f":{quote(password, safe='')}" if password else "")
    return f"{scheme}://{userinfo}@{rest}"


def _dollar_braced(url: str) -> str:
    return re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)", r"${\1}", url)
