"""The bytes of every fixture app's slug, in both layouts, as recorded in tests/golden/.

A refactor must not change what slugbuild builds: each fixture's slug (or the
error code it fails with, for the fixtures that fail by design) is compared with
the sha256 recorded before. A change that is meant to change the bytes records
them again, on purpose and in the same commit:

    SLUGBUILD_RECORD_GOLDEN=1 .venv/bin/pytest tests/pipeline/test_golden_slugs.py

The builds share a cache of their own (not the session's: tests that expect a
cold dependency layer of a fixture must not find one made here): ``golden_cache``
in conftest.py, which the plan's agreement with these builds shares
(test_plan_vs_build.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

import pytest

from slugbuild import compile_app, errors
from slugbuild.log import Reporter

from ..helpers import FIXTURE_APPS, REPO, copy_app, fixture_build_options, fixture_names

GOLDEN = REPO / "tests" / "golden" / "slugs.json"
LAYOUTS = ("herokuish", "heroku")
RECORDING = os.environ.get("SLUGBUILD_RECORD_GOLDEN") == "1"


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


def _record(name: str, layout: str, outcome: str) -> None:
    with open(GOLDEN.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        recorded = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        recorded.setdefault(name, {})[layout] = outcome
        GOLDEN.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", fixture_names(include_failing=True))
def test_the_slug_of_every_fixture_is_byte_identical_to_the_recorded_one(
        tmp_path, golden_cache, name, layout):
    outcome = _outcome(name, layout, tmp_path, golden_cache)
    if RECORDING:
        _record(name, layout, outcome)
        return
    recorded = json.loads(GOLDEN.read_text())
    assert name in recorded and layout in recorded[name], (
        f"{name} ({layout}) has no recorded slug: record it (see this module's docstring)")
    assert outcome == recorded[name][layout], (
        f"{name} ({layout}): the slug changed; if that is intended, record it again")
