"""Which Python an app asks for: every version source, every bad file, source choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.platform_info import Platform
from slugbuild.runtime.download import archive_fits, parse_checksums
from slugbuild.runtime.resolve import RuntimeOptions, parse_sources, resolve
from slugbuild.runtime.sources import RuntimeOffer, SourceUnavailable
from slugbuild.versions import PythonRequest, check_supported, newer_patch, read_request

from ..helpers import make_app

PIPFILE_LOCK = {"_meta": {"requires": {"python_full_version": "3.11.7", "python_version": "3.12"}}}


def write_files(directory: Path, files: dict[str, str | bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return directory


@pytest.mark.parametrize(
    ("files", "requested", "source"),
    [
        ({"runtime.txt": "python-3.12\n", ".python-version": "3.11"}, "3.12", "runtime.txt"),
        ({".python-version": "3.12.1\n", "Pipfile.lock": json.dumps(PIPFILE_LOCK)},
         "3.12.1", ".python-version"),
        ({"Pipfile.lock": json.dumps(PIPFILE_LOCK)}, "3.11.7",
         "Pipfile.lock (python_full_version)"),
        ({"Pipfile.lock": json.dumps({"_meta": {"requires": {"python_version": "3.12"}}})},
         "3.12", "Pipfile.lock (python_version)"),
        ({"Pipfile.lock": json.dumps({"_meta": {}}),
          "pyproject.toml": '[project]\nname = "x"\nrequires-python = ">=3.10,<3.13"\n'},
         ">=3.10,<3.13", "pyproject.toml (requires-python)"),
        ({"pyproject.toml": '[project]\nname = "x"\n'}, "3.14", None),
        ({".python-version": b"\xef\xbb\xbf3.11\r\n"}, "3.11", ".python-version"),
    ],
)
def test_each_version_source_in_heroku_order(tmp_path, files, requested, source):
    request = read_request(write_files(tmp_path, files))
    assert (request.requested, request.source_file) == (requested, source)


def test_runtime_txt_is_deprecated_with_a_warning(tmp_path):
    request = read_request(make_app(tmp_path, {"runtime.txt": "python-3.12.1"}))
    assert request.warnings and "runtime.txt is deprecated" in request.warnings[0]
    assert "echo 3.12 > .python-version" in request.warnings[0]


@pytest.mark.parametrize(
    ("files", "code", "words"),
    [
        ({".python-version": "3.012\n"}, "invalid-python-version", "leading zero"),
        ({".python-version": "3.12.1.4\n"}, "invalid-python-version", "more than three parts"),
        ({".python-version": "3.12\n3.11\n"}, "invalid-python-version", "lists 2 versions"),
        ({".python-version": "# only a comment\n\n"}, "invalid-python-version",
         "holds no version"),
        ({".python-version": "python-3.12\n"}, "invalid-python-version", "without a `python`"),
        ({".python-version": "3\n"}, "invalid-python-version", "only a major version"),
        ({".python-version": "3.13.0rc1\n"}, "invalid-python-version", "pre-release"),
        ({".python-version": "system\n"}, "invalid-python-version", "not a version number"),
        ({"runtime.txt": "3.12.1"}, "invalid-python-version", "must be `python-`"),
        ({"runtime.txt": "python-3.12.1\npython-3.11"}, "invalid-python-version", "2 lines"),
        ({"runtime.txt": ""}, "invalid-python-version", "is empty"),
        ({".python-version": "3.12\n".encode("utf-16-le")}, "version-file-unreadable",
         "UTF-16 without a byte order mark"),
        ({".python-version": b"3.12\xff\n"}, "version-file-unreadable", "not valid UTF-8"),
        ({"Pipfile.lock": "{not json"}, "version-file-unreadable", "not valid JSON"),
        ({"Pipfile.lock": json.dumps({"_meta": {"requires": {"python_version": "3.x"}}})},
         "invalid-python-version", "Pipfile.lock (python_version)"),
        ({"pyproject.toml": "[project\n"}, "version-file-unreadable", "not valid TOML"),
        ({"pyproject.toml": '[project]\nrequires-python = "3.12+"\n'},
         "invalid-python-version", "PEP 440"),
        ({".python_version": "3.12\n"}, "misspelled-version-file", "'.python_version'"),
        ({"python-version": "3.12\n"}, "misspelled-version-file", ".python-version"),
        ({"runtime.text": "python-3.12\n"}, "misspelled-version-file", "'runtime.text'"),
        ({"Runtime.txt": "python-3.12\n"}, "misspelled-version-file", "runtime.txt"),
    ],
)
def test_each_bad_version_file_has_its_own_message(tmp_path, files, code, words):
    with pytest.raises(errors.SlugbuildError) as caught:
        read_request(write_files(tmp_path, files))
    assert caught.value.code == code
    rendered = caught.value.render()
    assert words in rendered, rendered
    assert rendered.count("Error [") == 1


def test_misspelling_is_ignored_beside_the_real_file(tmp_path):
    app = make_app(tmp_path, {".python-version": "3.12\n", ".python_version": "3.11\n"})
    assert read_request(app).requested == "3.12"


@pytest.mark.parametrize("version", ["3.9", "3.9.18", "3.8", "3.8.18", "3.7", "2.7.18"])
def test_end_of_life_refused(version):
    with pytest.raises(errors.SlugbuildError) as caught:
        check_supported(PythonRequest(version, ".python-version"))
    assert caught.value.code == "python-version-eol"


def test_newer_patch():
    # The policy table's newest known patch counts, not only what sources offer.
    assert newer_patch("3.12.1", ["3.12.1", "3.12.8", "3.13.0"]) == "3.12.14"
    assert newer_patch("3.12.1", ["3.12.1", "3.12.30"]) == "3.12.30"
    assert newer_patch("3.12.14", ["3.12.1", "3.12.8"]) is None


class ListedSource:
    """A source that offers fixed versions (resolution logic only; nothing is built)."""

    downloads = offline = False
    index_origin = None

    def __init__(self, name: str, versions: list[str] | None) -> None:
        self.name = name
        self.versions = versions

    def available(self) -> list[RuntimeOffer]:
        if self.versions is None:
            raise SourceUnavailable("index unreachable")
        return [RuntimeOffer(v, self, f"{self.name}:{v}", {}) for v in self.versions]

    def find_exact(self, version: str) -> RuntimeOffer | None:
        return None

    def provide(self, offer, scratch, reporter):  # pragma: no cover - never built here
        raise AssertionError


def test_first_source_with_a_match_wins_and_newest_patch_is_taken():
    local = ListedSource("local", ["3.11.7", "3.12.1", "3.8.18"])
    download = ListedSource("download", ["3.12.1", "3.12.8", "3.13.1"])
    chosen = resolve(PythonRequest("3.12", ".python-version"), [local, download])
    assert (chosen.offer.version, chosen.offer.source_name) == ("3.12.1", "local")
    chosen = resolve(PythonRequest("3.13", ".python-version"), [local, download])
    assert (chosen.offer.version, chosen.offer.source_name) == ("3.13.1", "download")
    chosen = resolve(PythonRequest("3.12", ".python-version"), [download, local])
    assert chosen.offer.version == "3.12.8"
    exact = resolve(PythonRequest("3.12.1", ".python-version"), [download])
    assert exact.newer_patch == "3.12.14"  # the policy table knows a newer one
    spec = resolve(PythonRequest(">=3.8,<3.13", "pyproject.toml (requires-python)"),
                   [local, download])
    assert spec.offer.version == "3.12.1"  # newest match of the first source; 3.8 never


def test_unavailable_names_every_source_tried():
    with pytest.raises(errors.SlugbuildError) as caught:
        resolve(PythonRequest("3.10", ".python-version"),
                [ListedSource("local", ["3.12.1"]), ListedSource("download", None)])
    assert caught.value.code == "python-version-unavailable"
    assert "local (1 version(s)); download (index unreachable)" in caught.value.found


def test_python_source_option():
    assert parse_sources("download, local") == ("download", "local")
    assert RuntimeOptions.from_env("local", True).offline
    for bad in ("docker", "local,ftp", ","):
        with pytest.raises(errors.SlugbuildError) as caught:
            parse_sources(bad)
        assert caught.value.code == "python-source-unknown"


def test_checksums_and_archive_names_for_this_platform():
    sums = parse_checksums(
        "a" * 64 + "  cpython-3.12.8+20250106-x86_64-unknown-linux-gnu-install_only.tar.gz\n"
        + "B" * 64 + " *dist/python-3.12.8-ubuntu-24.04-amd64.tar.zst\n"
        "garbage line\n"
    )
    assert sums == {
        "cpython-3.12.8+20250106-x86_64-unknown-linux-gnu-install_only.tar.gz": "a" * 64,
        "python-3.12.8-ubuntu-24.04-amd64.tar.zst": "b" * 64,
    }
    debian = Platform("debian-12", "debian", "12", "x86_64", "glibc2.36")
    heroku = Platform("heroku-24", "ubuntu", "24.04", "x86_64", "glibc2.39")
    arm = Platform("debian-12", "debian", "12", "aarch64", "glibc2.36")
    pbs = "cpython-3.12.8+20250106-x86_64-unknown-linux-gnu-install_only.tar.gz"
    stripped = "cpython-3.12.8+20250106-x86_64-unknown-linux-gnu-install_only_stripped.tar.gz"
    assert archive_fits(pbs, debian) == ("3.12.8", 1)
    assert archive_fits(stripped, debian) == ("3.12.8", 2)
    assert archive_fits(pbs, arm) is None
    assert archive_fits(pbs.replace("gnu", "musl"), debian) is None
    assert archive_fits("cpython-3.12.8+20250106-x86_64-unknown-linux-gnu-pgo+lto-full.tar.zst",
                        debian) is None
    assert archive_fits("python-3.12.8-ubuntu-24.04-amd64.tar.zst", debian) is None
    assert archive_fits("python-3.12.8-ubuntu-24.04-amd64.tar.gz", heroku) == ("3.12.8", 0)
    assert archive_fits("python-3.12.8-ubuntu-22.04-amd64.tar.gz", heroku) is None
    labelled = Platform("heroku-24", "debian", "12", "x86_64", "glibc2.36")
    assert archive_fits("python-3.12.8-ubuntu-24.04-amd64.tar.gz", labelled) is None


@pytest.mark.slow
def test_requires_python_decides_a_real_build(tmp_path, cache_dir):
    """pyproject.toml's requires-python picks the newest local match, and says so."""
    from slugbuild import compile_app
    from slugbuild.log import Reporter
    from slugbuild.runtime.local import LocalInterpreterSource

    local = sorted((r.version for r in LocalInterpreterSource().runtimes()
                    if r.version.startswith("3.12.")), key=lambda v: [int(p) for p in v.split(".")])
    if not local:
        pytest.skip("no local CPython 3.12")
    app = make_app(tmp_path / "app", {
        "requirements.txt": "",
        "pyproject.toml": '[project]\nname = "demo"\nversion = "1"\n'
                          'requires-python = ">=3.12,<3.13"\n',
    })
    result = compile_app(app, tmp_path / "slug.tgz", cache_dir=cache_dir,
                         reporter=Reporter(quiet=True),
                         runtime_options=RuntimeOptions(("local",), offline=True))
    assert result.runtime["resolved"] == local[-1]
    assert result.runtime["requested"] == ">=3.12,<3.13"
    assert result.runtime["source_file"] == "pyproject.toml (requires-python)"
    assert result.runtime["source"] == "local"
    assert result.metadata["platform"]["arch"] and result.runtime["platform"]
    assert ("-----> Using Python >=3.12,<3.13 specified in pyproject.toml (requires-python)"
            in result.log)
