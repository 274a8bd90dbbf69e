"""The version policy, the default and sticky versions, exact pins, version files as
editors write them, and the messages of each (no network: sources are listed here)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.installers import InstallJob
from slugbuild.installers.locks import run_lock_tool
from slugbuild.installers.uv_project import check_python_allowed
from slugbuild.runtime.resolve import RuntimeOptions, resolve
from slugbuild.runtime.sources import RuntimeOffer, SourceUnavailable
from slugbuild.versions import (
    DEFAULT_PYTHON,
    FROM_DEFAULT,
    FROM_STICKY,
    POLICY,
    PythonRequest,
    check_supported,
    read_request,
    record_sticky,
    sticky_minor,
)

from ..helpers import REPO, make_app


class Listed:
    """A source offering fixed versions; ``exact`` are found only by a history search."""

    index_origin = None

    def __init__(self, name: str, versions: list[str] | None, exact: tuple[str, ...] = (),
                 downloads: bool = False, offline: bool = False) -> None:
        self.name = name
        self.versions = versions
        self.exact = exact
        self.downloads = downloads
        self.offline = offline
        self.listed = 0

    def available(self) -> list[RuntimeOffer]:
        self.listed += 1
        if self.versions is None:
            raise SourceUnavailable("api.example: cannot resolve the host name")
        return [RuntimeOffer(v, self, f"{self.name}:{v}", {}) for v in self.versions]

    def find_exact(self, version: str) -> RuntimeOffer | None:
        if version in self.exact:
            return RuntimeOffer(version, self, f"{self.name}:{version}", {})
        return None

    def provide(self, offer, scratch, reporter):  # pragma: no cover - never built here
        raise AssertionError


def request(version: str, origin: str = "file") -> PythonRequest:
    return PythonRequest(version, ".python-version" if origin == "file" else None,
                         origin=origin)


# --- the policy table --------------------------------------------------------------------

def test_policy_table_is_the_documented_one():
    """docs/python-versions.md shows POLICY row for row."""
    text = (REPO / "docs" / "python-versions.md").read_text()
    rows = re.findall(r"^\| (3\.\d+) \| (\w+) \| (\d{4}-\d\d) \| (3\.\d+\.\d+) \| ([^|]*)\|",
                      text, re.MULTILINE)
    assert [(m, s, e, p, r.strip()) for m, s, e, p, r in rows] == [
        (row.minor, row.status, row.upstream_eol, row.newest_patch, row.removal or "-")
        for row in POLICY]
    assert DEFAULT_PYTHON == "3.14"


@pytest.mark.parametrize("version", ["3.9", "3.9.25", "3.8.18", "3.6", "2.7.18"])
def test_refused_minors_name_the_date_and_the_opt_in(version):
    with pytest.raises(errors.SlugbuildError) as caught:
        check_supported(request(version))
    assert caught.value.code == "python-version-eol"
    assert "--allow-eol-python" in caught.value.render()
    check_supported(request(version), allow_eol=True)


def test_deprecated_minor_builds_with_a_dated_warning():
    resolution = resolve(request("3.10"), [Listed("local", ["3.10.21"])])
    assert resolution.offer.version == "3.10.21"
    (warning,) = resolution.warnings
    assert "deprecated" in warning and "2027-01-06" in warning and "2026-10" in warning


def test_refused_minor_resolves_only_with_the_opt_in():
    local = Listed("local", ["3.9.18", "3.12.14"])
    with pytest.raises(errors.SlugbuildError) as caught:
        resolve(request("3.9"), [local])
    assert caught.value.code == "python-version-unavailable"
    resolution = resolve(request("3.9"), [local], allow_eol=True)
    assert resolution.offer.version == "3.9.18"
    assert any("end of life" in w for w in resolution.warnings)


def test_older_patch_than_the_table_knows_warns_even_when_no_source_has_newer():
    resolution = resolve(request("3.12"), [Listed("local", ["3.12.1"])])
    assert resolution.newer_patch == "3.12.14"
    assert any("3.12.14 is out" in w and "pyenv install 3.12.14" in w
               for w in resolution.warnings)
    pinned = resolve(request("3.12.1"), [Listed("local", ["3.12.1"])])
    assert any("the app pins 3.12.1" in w for w in pinned.warnings)
    current = resolve(request("3.12"), [Listed("local", ["3.12.14"])])
    assert current.newer_patch is None and current.warnings == []


# --- the default and the sticky version ---------------------------------------------------

def test_default_is_the_newest_supported_minor_any_source_offers():
    local = Listed("local", ["3.12.1", "3.13.0"])
    download = Listed("download", ["3.13.15", "3.14.7", "3.15.0"], downloads=True)
    chosen = resolve(request(DEFAULT_PYTHON, FROM_DEFAULT), [local, download])
    assert (chosen.offer.version, chosen.offer.source_name) == ("3.14.7", "download")
    assert chosen.reason == "Heroku's default"
    # Without 3.14 anywhere: the newest minor offered, the first source having it.
    chosen = resolve(request(DEFAULT_PYTHON, FROM_DEFAULT),
                     [local, Listed("download", None, downloads=True)])
    assert (chosen.offer.version, chosen.offer.source_name) == ("3.13.0", "local")
    assert "newest supported Python a source offers" in chosen.reason
    assert chosen.record()["requested_from"] == "file"  # set by choose_runtime


def test_default_never_picks_a_deprecated_or_unknown_minor():
    with pytest.raises(errors.SlugbuildError) as caught:
        resolve(request(DEFAULT_PYTHON, FROM_DEFAULT), [Listed("local", ["3.10.5", "3.15.1"])])
    assert "3.14 (or any of 3.13, 3.12, 3.11)" in caught.value.found


def test_sticky_minor_is_kept_per_app_and_dropped_when_refused(tmp_path):
    cache = tmp_path / "cache"
    one, two = make_app(tmp_path / "one", {}), make_app(tmp_path / "two", {})
    assert sticky_minor(cache, one) is None
    record_sticky(cache, one, "3.13.0")
    assert (sticky_minor(cache, one), sticky_minor(cache, two)) == ("3.13", None)
    sticky = read_request(one, sticky_minor(cache, one))
    assert (sticky.requested, sticky.origin, sticky.source_file) == ("3.13", FROM_STICKY, None)
    assert "previous build" in sticky.describe_source()
    make_app(one, {".python-version": "3.12\n"})
    assert read_request(one, "3.13").requested == "3.12"  # a version file always wins
    dropped = read_request(two, "3.8")
    assert (dropped.requested, dropped.origin) == (DEFAULT_PYTHON, FROM_DEFAULT)
    assert "no longer supported" in dropped.warnings[0]


# --- exact pins -------------------------------------------------------------------------

def test_exact_pin_is_searched_in_the_history_then_optionally_replaced():
    local = Listed("local", ["3.12.1"])
    download = Listed("download", ["3.12.14"], exact=("3.12.4",), downloads=True)
    found = resolve(request("3.12.4"), [local, download])
    assert (found.offer.version, found.substituted_for) == ("3.12.4", None)
    with pytest.raises(errors.SlugbuildError) as caught:
        resolve(request("3.12.5"), [local, download])
    assert "--python-patch-fallback" in caught.value.action
    fallback = resolve(request("3.12.5"), [local, download], patch_fallback=True)
    assert (fallback.offer.version, fallback.substituted_for) == ("3.12.1", "3.12.5")
    assert fallback.record()["substituted_for"] == "3.12.5"
    assert any("could not be found" in w and "substituted_for" in w
               for w in fallback.warnings)


# --- the "unavailable" advice ----------------------------------------------------------------

def test_unavailable_advice_fits_what_was_tried():
    local = Listed("local", ["3.12.1"])
    failed = Listed("download", None, downloads=True)
    with pytest.raises(errors.SlugbuildError) as caught:
        resolve(request("3.11"), [local, failed])
    action = caught.value.action
    assert "allow downloads" not in action.lower()
    assert "--python-download-url" in action and "could not be read" in action
    assert "download (api.example: cannot resolve the host name)" in caught.value.found

    with pytest.raises(errors.SlugbuildError) as caught:
        resolve(request("3.11"), [local])
    assert "--python-source local,download" in caught.value.action
    assert "--python-download-url" in caught.value.action

    offline = Listed("download", [], downloads=True, offline=True)
    with pytest.raises(errors.SlugbuildError) as caught:
        resolve(request("3.11"), [local, offline])
    assert "--offline" in caught.value.action

    lacking = Listed("download", ["3.12.14"], downloads=True)
    with pytest.raises(errors.SlugbuildError) as caught:
        resolve(request("3.11"), [local, lacking])
    assert "has no Python 3.11" in caught.value.action


def test_options_from_the_environment(monkeypatch):
    monkeypatch.setenv("SLUGBUILD_ALLOW_EOL_PYTHON", "1")
    monkeypatch.setenv("SLUGBUILD_PYTHON_PATCH_FALLBACK", "1")
    options = RuntimeOptions.from_env()
    assert options.allow_eol and options.patch_fallback
    assert not RuntimeOptions.from_env(allow_eol=False, patch_fallback=False).allow_eol
    assert RuntimeOptions.from_env("heroku,local").sources == ("heroku", "local")


# --- version files as editors write them ------------------------------------------------------

@pytest.mark.parametrize(("name", "data", "requested"), [
    (".python-version", b"3.12", "3.12"),  # no trailing newline
    (".python-version", b"3.12\r\n", "3.12"),  # CRLF
    (".python-version", b"3.12\r", "3.12"),  # CR alone
    (".python-version", b"# the app's Python\r\n3.12.4\r\n", "3.12.4"),
    (".python-version", b"  3.12  # pinned for prod\n\n", "3.12"),
    (".python-version", b"\xef\xbb\xbf3.13\r\n", "3.13"),  # UTF-8 with BOM
    (".python-version", "3.12\r\n".encode("utf-16"), "3.12"),  # UTF-16 with BOM
    (".python-version", b"\xfe\xff" + "3.11\n".encode("utf-16-be"), "3.11"),
    ("runtime.txt", b"# deprecated, kept for old tooling\npython-3.12.6", "3.12.6"),
    ("runtime.txt", b"\xef\xbb\xbfpython-3.11.6\r\n", "3.11.6"),
    ("runtime.txt", "python-3.12.4\r\n".encode("utf-16"), "3.12.4"),
])
def test_version_files_as_editors_write_them(tmp_path, name, data, requested):
    app = make_app(tmp_path, {})
    (app / name).write_bytes(data)
    assert read_request(app).requested == requested


def test_runtime_txt_hint_respects_an_existing_python_version(tmp_path):
    alone = read_request(make_app(tmp_path / "a", {"runtime.txt": "python-3.12.4\n"}))
    assert "echo 3.12 > .python-version" in alone.warnings[0]
    same = read_request(make_app(tmp_path / "b", {"runtime.txt": "python-3.12.4\n",
                                                  ".python-version": "3.12.4\n"}))
    assert "echo" not in same.warnings[0] and "already asks for 3.12.4" in same.warnings[0]
    finer = read_request(make_app(tmp_path / "c", {"runtime.txt": "python-3.12\n",
                                                   ".python-version": "3.12.4\n"}))
    assert "echo" not in finer.warnings[0]
    assert "runtime.txt" in finer.warnings[0] and "3.12.4" in finer.warnings[0]
    assert finer.requested == "3.12"  # runtime.txt still wins, as on Heroku


# --- a project that excludes the chosen Python; lock tool failures ------------------------

def test_uv_project_excluding_the_runtime_gets_its_own_message(tmp_path):
    app = make_app(tmp_path, {".python-version": "3.11\n", "pyproject.toml":
                              '[project]\nname = "x"\nversion = "1"\nrequires-python = ">=3.12"\n'})
    with pytest.raises(errors.SlugbuildError) as caught:
        check_python_allowed(app, "3.11.7")
    rendered = caught.value.render()
    assert caught.value.code == "python-not-allowed-by-project"
    assert "Python 3.11.7 (asked for as `3.11` in .python-version)" in rendered
    assert ">=3.12" in rendered and "uv lock" not in rendered
    check_python_allowed(app, "3.12.1")


def _job(tmp_path: Path) -> InstallJob:
    from slugbuild.cache import Cache
    from slugbuild.log import Reporter

    return InstallJob(python=Path(sys.executable), python_version="3.12.1", app_dir=tmp_path,
                      lock_file="uv.lock", config_vars={}, cache=Cache(tmp_path / "cache"),
                      reporter=Reporter(quiet=True), scratch=tmp_path)


@pytest.mark.parametrize(("printed", "code"), [
    ("error: The lockfile at `uv.lock` needs to be updated, but `--locked` was provided.",
     "lock-file-outdated"),
    ("pyproject.toml changed significantly since poetry.lock was last generated.",
     "lock-file-outdated"),
    ("error: Failed to fetch: `https://pypi.example/simple/flask/`", "lock-tool-failed"),
])
def test_lock_tool_failures_are_classified(tmp_path, printed, code):
    argv = [sys.executable, "-c", f"import sys; print({printed!r}); sys.exit(2)"]
    with pytest.raises(errors.SlugbuildError) as caught:
        run_lock_tool(_job(tmp_path), argv, {}, "uv export --locked", "pyproject.toml",
                      "uv lock")
    assert caught.value.code == code
    assert printed in (caught.value.output or "")



def test_uv_app_whose_requires_python_excludes_the_pin_fails_with_its_own_message(
        tmp_path, cache_dir):
    from slugbuild.runtime.local import LocalInterpreterSource

    from ..helpers import copy_app, run_cli

    if not any(r.major_minor == "3.11" for r in LocalInterpreterSource().runtimes()):
        pytest.skip("no local CPython 3.11")
    app = copy_app(REPO / "fixtures" / "apps" / "uv-bottle", tmp_path / "app")
    (app / ".python-version").write_text("3.11\n")
    result = run_cli("compile", app, "-o", tmp_path / "slug.tgz", "--cache-dir", cache_dir,
                     "--python-source", "local", "--offline")
    assert result.returncode != 0
    assert "Python 3.11." in result.stderr and "is not allowed by pyproject.toml" in result.stderr
    assert "asked for as `3.11` in .python-version" in result.stderr
    assert ">=3.12" in result.stderr
    assert "run `uv lock`" not in result.stderr.lower() and "Traceback" not in result.stderr
    assert "Installing Python" not in result.stderr  # refused before any runtime is prepared
    assert not (tmp_path / "slug.tgz").exists()


def test_runtimes_command_shows_the_policy_status(tmp_path):
    import json

    from ..helpers import run_cli

    def listed(*extra: str) -> dict[str, str]:
        result = run_cli("runtimes", "--json", "--cache-dir", tmp_path, "--python-source",
                         "local", "--offline", *extra)
        assert result.returncode == 0, result.stderr
        return {r["version"]: r["status"] for r in json.loads(result.stdout)["runtimes"]}

    plain, everything = listed(), listed("--allow-eol-python")
    assert set(plain.values()) <= {"supported", "deprecated", "unknown"}
    assert all(v.startswith("3.10.") for v, s in plain.items() if s == "deprecated")
    refused = {v for v, s in everything.items() if s == "refused"}
    assert refused == set(everything) - set(plain)
    assert all(v.startswith(("3.8.", "3.9.", "3.7.", "3.6.")) for v in refused)


def test_specifier_matching_only_refused_versions_says_so():
    local = Listed("local", ["3.9.18", "3.12.1"])
    spec = PythonRequest(">=3.8,<3.10", "pyproject.toml (requires-python)")
    with pytest.raises(errors.SlugbuildError) as caught:
        resolve(spec, [local])
    assert "3.9.18 would match but reached end of life" in caught.value.action
    assert resolve(spec, [local], allow_eol=True).offer.version == "3.9.18"
    newest = resolve(PythonRequest(">=3.12", "pyproject.toml (requires-python)"), [local])
    assert newest.newer_patch == "3.12.14"  # a specifier's choice is checked too


@pytest.mark.parametrize(("text", "words"), [
    ("cpython@3.12", "without a `python` prefix"),
    ("pypy3.10", "another Python implementation"),
    ("3.13t", "free-threaded"),
    (">=3.12", "version range"),
    ("3.12\u200b", "not a version number"),
])
def test_what_uv_accepts_but_heroku_does_not_is_explained(tmp_path, text, words):
    app = make_app(tmp_path, {".python-version": text + "\n"})
    with pytest.raises(errors.SlugbuildError) as caught:
        read_request(app)
    assert caught.value.code == "invalid-python-version"
    assert words in caught.value.found


def test_stale_patch_advice_fits_the_download_sources():
    def advice(wanted: PythonRequest, *sources: Listed) -> str:
        local = Listed("local", ["3.13.0"])
        (warning,) = resolve(wanted, [local, *sources]).warnings
        return warning

    default = request(DEFAULT_PYTHON, FROM_DEFAULT)
    assert "allow downloads" in advice(request("3.13"))
    # The default asks every source, so it knows the index could not be read.
    assert "could not be read" in advice(default, Listed("download", None, downloads=True))
    assert "build online once" in advice(request("3.13"),
                                         Listed("download", [], downloads=True, offline=True))
    # A file's request stops at the first source with a match: the others were not asked.
    assert "put a download source first" in advice(request("3.13"),
                                                   Listed("download", None, downloads=True))
