"""The CycloneDX SBOM beside every slug, and `inspect --sbom`: read from the slug,
valid against the CycloneDX schema, deterministic."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from slugbuild.outputs import SlugTarball
from slugbuild.slug.sbom import sbom_for_slug, sbom_path_for

from ..helpers import make_app, run_cli

SITE = ".heroku/python/lib/python3.12/site-packages"
RECORD = "six.py,sha256=abc,100\nsix-1.17.0.dist-info/RECORD,,\n"


def _valid(document: bytes) -> dict[str, Any]:
    problem = JsonStrictValidator(SchemaVersion.V1_6).validate_str(document.decode())
    assert problem is None, problem
    parsed: dict[str, Any] = json.loads(document)
    return parsed


def _tree(root: Path) -> Path:
    return make_app(root, {
        ".heroku/python/include/python3.12/patchlevel.h":
            '#define PY_VERSION              "3.12.7"\n',
        f"{SITE}/six-1.17.0.dist-info/METADATA":
            "Metadata-Version: 2.1\nName: six\nVersion: 1.17.0\nLicense: MIT\n\nbody\n",
        f"{SITE}/six-1.17.0.dist-info/RECORD": RECORD,
        f"{SITE}/attrs-25.1.0.dist-info/METADATA":
            "Metadata-Version: 2.4\nName: attrs\nVersion: 25.1.0\n"
            "License-Expression: MIT OR Apache-2.0\n\n",
        f"{SITE}/attrs-25.1.0.dist-info/RECORD": "attrs/__init__.py,,\n",
        f"{SITE}/Old_Thing-0.1.dist-info/METADATA":
            "Metadata-Version: 1.2\nName: Old_Thing\nVersion: 0.1\nLicense: UNKNOWN\n"
            "Classifier: License :: OSI Approved :: BSD License\n"
            "Classifier: Programming Language :: Python\n\n",
        "Procfile": "web: python -m http.server $PORT\n",
    })


def _describe(size: int, sha256: str) -> dict[str, Any]:
    return {"checksum": f"SHA256:{sha256}", "size": size, "runtime": {
        "resolved": "3.12.7", "source": "download",
        "origin": "https://example.invalid/cpython-3.12.7.tar.gz", "archive_sha256": "ab" * 32}}


@pytest.mark.parametrize("layout", ["herokuish", "heroku"])
def test_a_slug_gets_a_valid_deterministic_sbom_beside_slug_json(tmp_path: Path,
                                                                 layout: str) -> None:
    tree = _tree(tmp_path / "tree")
    slug = tmp_path / "out" / "slug.tgz"
    slug.parent.mkdir()
    packed, _ = SlugTarball(slug, layout, None).write(tree, [], _describe)
    written = sbom_path_for(slug)
    assert written == tmp_path / "out" / "slug.cdx.json"
    document = _valid(written.read_bytes())
    # Read back from the slug (slug.json beside it names it): the same bytes.
    assert sbom_for_slug(slug) == written.read_bytes()
    assert document["serialNumber"].startswith("urn:uuid:")
    assert document["metadata"]["component"]["hashes"][0]["content"] == packed.sha256
    components = {c["name"]: c for c in document["components"]}
    assert components["cpython"]["version"] == "3.12.7"
    assert components["cpython"]["type"] == "platform"
    origin = {p["name"]: p["value"] for p in components["cpython"]["properties"]}
    assert origin["slugbuild:runtime:source"] == "download"
    assert origin["slugbuild:runtime:origin"].startswith("https://example.invalid/")
    six = components["six"]
    assert six["version"] == "1.17.0" and six["purl"] == "pkg:pypi/six@1.17.0"
    assert six["licenses"] == [{"license": {"id": "MIT"}}]
    assert six["hashes"] == [{"alg": "SHA-256",
                              "content": hashlib.sha256(RECORD.encode()).hexdigest()}]
    assert components["attrs"]["licenses"] == [{"expression": "MIT OR Apache-2.0"}]
    assert components["Old_Thing"]["licenses"] == [{"license": {"name": "BSD License"}}]
    assert components["Old_Thing"]["purl"] == "pkg:pypi/old-thing@0.1"
    assert "hashes" not in components["Old_Thing"]  # no RECORD: nothing to hash


def test_slug_json_that_names_another_slug_adds_nothing(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    slug = tmp_path / "slug.tgz"
    SlugTarball(slug, "herokuish", None).write(tree, [], _describe)
    (tmp_path / "slug.json").write_text(json.dumps({**_describe(0, "0" * 64)}))
    document = _valid(sbom_for_slug(slug))
    cpython = next(c for c in document["components"] if c["name"] == "cpython")
    assert "properties" not in cpython  # the origin is slug.json's word, not the slug's


def test_the_sbom_goes_where_asked_and_with_the_slug_or_not_at_all(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    elsewhere = tmp_path / "sboms" / "app.cdx.json"
    elsewhere.parent.mkdir()
    slug = tmp_path / "slug.tgz"
    target = SlugTarball(slug, "herokuish", None, sbom_path=elsewhere)
    target.check()
    target.write(tree, [], _describe)
    assert elsewhere.is_file() and not sbom_path_for(slug).exists()

    def failing_check(_: Path) -> None:
        raise RuntimeError("boot check failed")

    again = tmp_path / "again.tgz"
    with pytest.raises(RuntimeError):
        SlugTarball(again, "herokuish", None).write(tree, [], _describe, verify=failing_check)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["tree", "sboms", "slug.tgz", "slug.json"])


def test_inspect_prints_the_sbom_and_a_missing_slug_is_one_clear_error(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    slug = tmp_path / "slug.tgz"
    SlugTarball(slug, "herokuish", None).write(tree, [], _describe)
    shown = run_cli("inspect", slug, "--sbom")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.encode() == sbom_path_for(slug).read_bytes()
    missing = run_cli("inspect", tmp_path / "nope.tgz", "--sbom")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "slug-not-found" in missing.stderr or "not found" in missing.stderr.lower()


@pytest.mark.slow
def test_a_real_build_lists_its_runtime_and_every_installed_package(flask_build: Any) -> None:
    assert flask_build.sbom_path == sbom_path_for(flask_build.slug_path)
    written = flask_build.sbom_path.read_bytes()
    assert sbom_for_slug(flask_build.slug_path) == written  # the build's is the slug's
    document = _valid(written)
    listed = {(c["name"], c["version"]) for c in document["components"] if c["type"] == "library"}
    assert listed == {(p["name"], p["version"]) for p in flask_build.packages}
    cpython = next(c for c in document["components"] if c["name"] == "cpython")
    assert cpython["version"] == flask_build.runtime["resolved"]
    assert all(c.get("hashes") for c in document["components"] if c["type"] == "library")
    assert document["metadata"]["component"]["hashes"][0]["content"] == flask_build.sha256


def test_a_license_field_with_non_ascii_bytes_is_read_not_a_crash() -> None:
    """Such a field comes from the metadata parser as an email Header, not a str
    (django-data-stack's packages have one)."""
    import email.parser

    from slugbuild.slug.sbom import _licenses

    meta = email.parser.BytesHeaderParser().parsebytes(
        "Metadata-Version: 2.1\nName: x\nLicense: MIT \u00a9 2024\n\n".encode())
    assert len(_licenses(meta)) == 1


def test_metadata_with_non_ascii_values_is_read_as_utf8(tmp_path: Path) -> None:
    """A License field with non-ASCII text (seen in the data-stack fixture) named the
    package's license instead of ending the build in an internal error."""
    tree = make_app(tmp_path / "tree", {
        f"{SITE}/thing-1.0.dist-info/METADATA":
            "Metadata-Version: 2.1\nName: thing\nVersion: 1.0\n"
            "License: © 2020 Ünïcode Ltd\nSummary: café\n\n",
        "Procfile": "web: python -m http.server $PORT\n",
    })
    slug = tmp_path / "slug.tgz"
    SlugTarball(slug, "herokuish", None).write(tree, [], _describe)
    components = {c["name"]: c for c in _valid(sbom_path_for(slug).read_bytes())["components"]}
    assert components["thing"]["licenses"] == [{"license": {"name": "© 2020 Ünïcode Ltd"}}]


def test_a_memoised_sbom_is_the_document_made_afresh_and_follows_its_inputs(
        tmp_path: Path) -> None:
    """A warm build fills its checksum into the document kept for the same inputs
    (outputs.py passes a layer's packed/ directory): byte for byte what a fresh run
    writes, for any checksum, and a changed input is never served the old one."""
    from slugbuild.slug.sbom import sbom_for_packed_tree

    tree = _tree(tmp_path / "tree")
    memo = tmp_path / "memo"
    memo.mkdir()
    metadata = _describe(1, "0" * 64)
    for seed in ("one", "two", "three"):
        sha = hashlib.sha256(seed.encode()).hexdigest()
        fresh = sbom_for_packed_tree(tree, sha, 1700000000, metadata)
        assert sbom_for_packed_tree(tree, sha, 1700000000, metadata, memo_dir=memo) == fresh
        assert len(list(memo.iterdir())) == 1
    # Same size and file time, other bytes: a stat would not see it, the key does.
    metadata_file = tree / SITE / "six-1.17.0.dist-info/METADATA"
    before = metadata_file.stat()
    metadata_file.write_text(metadata_file.read_text().replace("1.17.0", "1.17.1"))
    os.utime(metadata_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    sha = "ab" * 32
    changed = sbom_for_packed_tree(tree, sha, 1700000000, metadata, memo_dir=memo)
    assert changed == sbom_for_packed_tree(tree, sha, 1700000000, metadata)
    assert b'"version": "1.17.1"' in changed
    for other in (dict(metadata, runtime={**metadata["runtime"], "source": "local"}), metadata):
        assert sbom_for_packed_tree(tree, sha, 1700000001, other, memo_dir=memo) == \
            sbom_for_packed_tree(tree, sha, 1700000001, other)
    # A damaged memo is made again, not served.
    for kept in memo.iterdir():
        kept.write_bytes(b"{}")
    assert sbom_for_packed_tree(tree, sha, 1700000001, metadata, memo_dir=memo) == \
        sbom_for_packed_tree(tree, sha, 1700000001, metadata)


def test_an_sbom_made_while_the_slug_is_packed_is_the_one_made_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """outputs.py starts the document before packing (SbomInProgress, a thread) and fills
    in the checksum after: the same bytes as made after packing, with a memo or
    without, and made again from slug.json when its runtime fields are not the ones
    the thread was given; a failure in the thread is raised by ``result``."""
    from slugbuild.slug.sbom import SbomInProgress, sbom_for_packed_tree

    tree = _tree(tmp_path / "tree")
    memo = tmp_path / "memo"
    memo.mkdir()
    metadata = _describe(1, "0" * 64)
    other = dict(metadata, runtime={**metadata["runtime"], "source": "local"})
    sha = "cd" * 32
    for memo_dir in (None, memo, memo):  # no memo, the memo made, the memo reused
        for final in (metadata, other):
            started = SbomInProgress(tree, 1700000000, metadata, memo_dir)
            assert started.result(sha, final) == sbom_for_packed_tree(tree, sha, 1700000000,
                                                                      final)

    def fails(*_args: object) -> bytes:
        raise ValueError("made in the thread")

    monkeypatch.setattr("slugbuild.slug.sbom._document", fails)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="made in the thread"):
        SbomInProgress(tree, 1700000000, metadata, tmp_path / "empty").result(sha, metadata)


def test_a_kept_documents_serial_number_is_filled_without_the_uuid_module():
    import uuid

    from slugbuild.slug.sbom import _serial_text

    for sha256 in (hashlib.sha256(str(n).encode()).hexdigest() for n in range(50)):
        expected = uuid.uuid5(uuid.NAMESPACE_URL, f"slugbuild:slug:sha256:{sha256}")
        assert _serial_text(sha256) == str(expected)


def test_a_memo_made_ahead_serves_the_builds_own_document(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """``warm_memo`` (outputs.SlugTarball.prepare runs it during the entry-point check)
    is given only the runtime of slug.json; the write, given all of slug.json, then
    finds its memo and makes no document: byte for byte the fresh one."""
    from slugbuild.slug import sbom
    from slugbuild.slug.sbom import sbom_for_packed_tree, warm_memo

    tree = _tree(tmp_path / "tree")
    memo = tmp_path / "memo"
    memo.mkdir()
    metadata = _describe(1, "0" * 64)
    sha = "cd" * 32
    fresh = sbom_for_packed_tree(tree, sha, 1700000000, metadata)
    warm_memo(tree, 1700000000, {"runtime": metadata["runtime"]}, memo)

    def no_document(*args: Any) -> bytes:
        raise AssertionError("the memo made ahead was not used")

    monkeypatch.setattr(sbom, "_document", no_document)
    assert sbom_for_packed_tree(tree, sha, 1700000000, metadata, memo_dir=memo) == fresh
    # Nothing cached (no layer): nothing started, nothing to wait for.
    SlugTarball(tmp_path / "slug.tgz", "herokuish", None).prepare(tree, [], {})()
