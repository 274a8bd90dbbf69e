"""The outcome of every fixture app that fails by design, in both layouts, as
recorded in tests/golden/slugs.json.

The slugs of the other fixtures are compared with their recorded sha256 by
test_reproducible.py's two-cold-builds test (herokuish from its cold builds,
heroku from a warm build after them), so no fixture is built a third time for
it. A change that is meant to change the bytes records them again, on purpose
and in the same commit:

    SLUGBUILD_RECORD_GOLDEN=1 .venv/bin/pytest tests/pipeline/test_golden_slugs.py \
        tests/pipeline/test_reproducible.py -k "golden or every_fixture"

The builds here share a cache of their own (not the session's: tests that expect
a cold dependency layer of a fixture must not find one made here).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from slugbuild import compile_app, errors
from slugbuild.log import Reporter

from ..helpers import (
    FIXTURE_APPS,
    FIXTURES_FAILING_BY_DESIGN,
    check_golden,
    copy_app,
    fixture_build_options,
)

LAYOUTS = ("herokuish", "heroku")


def _outcome(name: str, layout: str, scratch: Path, cache_dir: Path) -> str:
    """sha256 of the slug, or ``error:<code>`` when the build refuses the app."""
    with contextlib.ExitStack() as stack:
        options = fixture_build_options(name, stack, scratch)
        app = copy_app(FIXTURE_APPS / name, scratch / "app" / name)
        try:
            result = compile_app(app, scratch / f"{name}.tgz", cache_dir=cache_dir,
                                 layout=layout, reporter=Reporter(quiet=True), **options)
        except errors.SlugbuildError as error:
            return f"error:{error.code}"
        return result.sha256


@pytest.fixture(scope="module")
def golden_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("golden-cache")


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", sorted(FIXTURES_FAILING_BY_DESIGN))
def test_every_fixture_failing_by_design_fails_as_recorded(tmp_path, golden_cache, name,
                                                           layout):
    check_golden(name, layout, _outcome(name, layout, tmp_path, golden_cache))
