"""JSON nested past Python's recursion limit, wherever slugbuild reads JSON it did not
write this moment: an image layout's index, an auth file, a Node.js dist index, the
cache's own records (a damaged or crafted cache). json raises RecursionError, not
ValueError, for it: each reader treats it as malformed, never as a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.cache import read_index
from slugbuild.node_runtime import FetchFailed, parse_dist_index
from slugbuild.oci.credentials import find_credentials
from slugbuild.oci.image import _read_index

DEEP = "[" * 100000 + "]" * 100000


def test_a_deep_auth_file_is_an_unreadable_credentials_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "auth.json").write_text('{"auths": ' + DEEP + "}")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    with pytest.raises(errors.SlugbuildError) as raised:
        find_credentials("registry.example:5000")
    assert raised.value.code == errors.REGISTRY_CREDENTIALS_INVALID.code
    assert "not JSON" in str(raised.value)


def test_a_deep_image_layout_index_is_an_unreadable_image(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_text(DEEP)
    with pytest.raises(errors.SlugbuildError) as raised:
        _read_index(tmp_path)
    assert raised.value.code == errors.IMAGE_UNREADABLE.code


def test_a_deep_node_dist_index_is_a_failed_fetch() -> None:
    with pytest.raises(FetchFailed, match="not JSON"):
        parse_dist_index(DEEP, "https://nodejs.example/dist/index.json")


def test_a_deep_files_json_in_the_cache_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "files.json").write_text(DEEP)
    assert read_index(tmp_path / "files.json") is None
