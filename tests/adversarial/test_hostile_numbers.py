"""Numbers slugbuild reads from text it did not write: `str.isdigit` says yes to `²`
and to 100,000-digit strings, which `int` then refuses with a traceback. A PORT
config var, SOURCE_DATE_EPOCH, a package's RECORD sizes and a run image's user
ids are read as ASCII decimal numbers of sensible length, or ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from slugbuild.pack import DEFAULT_EPOCH, source_date_epoch
from slugbuild.records import parse_record
from slugbuild.slug.run import run_slug
from slugbuild.textfiles import decimal

from ..helpers import crafted_tar

ODD = ["²", "1" * 5000, "٣", "-1", "", " 7"]


@pytest.mark.parametrize("text", ODD)
def test_odd_digits_are_no_number(text: str) -> None:
    assert decimal(text) is None


def test_plain_numbers_are_numbers() -> None:
    assert (decimal("0"), decimal("8080", 5), decimal("123456", 5)) == (0, 8080, None)


@pytest.mark.parametrize("text", ODD[:-1])  # surrounding blanks are stripped there
def test_source_date_epoch_that_is_no_number_is_the_default(
        text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", text)
    assert source_date_epoch() == DEFAULT_EPOCH


def test_a_record_size_that_is_no_number_is_none() -> None:
    assert parse_record("a.py,sha256=AAAA,²\nb.py,," + "9" * 5000 + "\n") == [
        ("a.py", "000000", None), ("b.py", None, None)]


@pytest.mark.parametrize("port", ["²", "1" * 5000])
def test_a_port_config_var_that_is_no_number_does_not_crash_run(tmp_path: Path,
                                                                port: str) -> None:
    slug = crafted_tar(tmp_path / "app.tgz", [("./Procfile", None, "web: true\n")])
    assert run_slug(slug, command="true", env={"PORT": port}, forward_signals=False) == 0
