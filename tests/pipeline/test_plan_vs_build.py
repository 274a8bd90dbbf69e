"""A plan agrees with the real build it planned: Python version and its source,
package manager, installer, collectstatic, process types, and which layers came from
the cache (before the build: as the build then found them; after it: every layer
cached, under the key the build used).

Every fixture app is checked this way inside the two-cold-builds test
(pipeline/test_reproducible.py): a plan before and after its cold build (every
layer a miss), and before and after a warm build of the other layout (every layer
a hit), so no fixture is built just for this. The checks live in tests/helpers.py
(``assert_plan_agrees``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.log import Reporter
from slugbuild.plan import plan_app

from ..helpers import MINIMAL, layer_from_cache, make_app


@pytest.mark.slow
def test_a_cold_build_makes_every_layer_the_plan_said_it_would(tmp_path: Path) -> None:
    """In a cache of its own, whatever ran before: the plan says every layer is to
    build, the build makes each under the planned key, and the next plan finds them."""
    app = make_app(tmp_path / "app", MINIMAL)
    cache = tmp_path / "cache"
    before = plan_app(app, cache_dir=cache)
    assert [(layer.layer, layer.cached) for layer in before.layers] == [
        ("runtime", False), ("dependencies", False)]
    result = compile_app(app, tmp_path / "slug.tgz", cache_dir=cache,
                         reporter=Reporter(quiet=True))
    assert not layer_from_cache(result.log, before, "runtime")
    assert not layer_from_cache(result.log, before, "dependencies")
    after = plan_app(app, cache_dir=cache)
    assert [(layer.key, layer.cached) for layer in after.layers] == [
        (layer.key, True) for layer in before.layers]
