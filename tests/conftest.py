"""Shared test set-up: one cache per session and the Django fixture built once.

The cache (runtime layers, dependency layers and pip's download cache) is made
once per session, so each runtime is prepared and each wheel downloaded once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import DJANGO_APP


@pytest.fixture(autouse=True)
def _no_secrets_left_by_an_earlier_test():
    """The secret registry is process-wide: a build's config var values (``GREETING=there``
    in test_buildpack_runner) would otherwise be masked in every later test's messages."""
    from slugbuild import redact

    yield
    redact.forget_secrets()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slugbuild-cache")


@pytest.fixture(scope="session")
def django_build(tmp_path_factory, cache_dir):
    """The Django fixture compiled once for the whole session (slow tests share it)."""
    from slugbuild import compile_app
    from slugbuild.log import Reporter

    out = tmp_path_factory.mktemp("django-slug") / "django.tgz"
    return compile_app(DJANGO_APP, out, cache_dir=cache_dir, reporter=Reporter(quiet=True))
