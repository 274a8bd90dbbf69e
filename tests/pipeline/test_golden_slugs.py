"""The bytes of every fixture app's slug, in both layouts, as recorded in tests/golden/.

A refactor must not change what slugbuild builds: each fixture's slug (or the
error code it fails with, for the fixtures that fail by design) is compared with
the sha256 recorded before. The fixtures that build are compared where they are
built anyway, in the cold-build test (pipeline/test_reproducible.py: the
cold build gives the herokuish slug, a warm build on its cache the heroku
one); the fixtures that fail by design are built here. A change that is meant to
change the bytes records them again, on purpose and in the same commit:

    SLUGBUILD_RECORD_GOLDEN=1 .venv/bin/pytest tests/pipeline/test_golden_slugs.py \\
        tests/pipeline/test_reproducible.py -k "golden or recorded_slug"

The failing builds share a cache of their own (not the session's: tests that
expect a cold dependency layer of a fixture there must not find one made here):
``golden_cache`` in conftest.py.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from slugbuild import compile_app, errors
from slugbuild.log import Reporter

from ..helpers import (
    FIXTURE_APPS,
    FIXTURES_FAILING_BY_DESIGN,
    GOLDEN_SLUGS,
    RECORDING_GOLDEN,
    SLUG_LAYOUTS,
    check_golden,
    copy_app,
    fixture_build_options,
    fixture_names,
)


@pytest.mark.skipif(RECORDING_GOLDEN, reason="recording: the builds write the record")
def test_every_fixture_has_a_recorded_outcome_in_both_layouts():
    recorded = json.loads(GOLDEN_SLUGS.read_text())
    missing = [f"{name} ({layout})" for name in fixture_names(include_failing=True)
               for layout in SLUG_LAYOUTS if layout not in recorded.get(name, {})]
    assert missing == [], "record them (see this module's docstring)"


@pytest.mark.slow
@pytest.mark.parametrize("layout", SLUG_LAYOUTS)
@pytest.mark.parametrize("name", sorted(FIXTURES_FAILING_BY_DESIGN))
def test_the_fixtures_that_fail_by_design_fail_as_recorded(tmp_path, golden_cache, name,
                                                           layout):
    with contextlib.ExitStack() as stack:
        options = fixture_build_options(name, stack, tmp_path)
        app = copy_app(FIXTURE_APPS / name, tmp_path / "app" / name)
        try:
            result = compile_app(app, tmp_path / f"{name}.tgz", cache_dir=golden_cache,
                                 layout=layout, reporter=Reporter(quiet=True), **options)
        except errors.SlugbuildError as error:
            outcome = f"error:{error.code}"
        else:
            outcome = result.sha256
    check_golden(name, layout, outcome)
