"""A plan agrees with the real build of every fixture app: Python version and its
source, package manager, installer, collectstatic, process types, and which layers
came from the cache (before the build: as the build then found them; after it:
every layer cached, under the key the build used).

The builds share the golden slugs' cache (``golden_cache``): in the full suite they
are warm (every layer a hit), run alone they are cold (every layer a miss); either
way the plan must say which. Not the session's cache: tests that expect a fixture's
dependency layer to be cold there must not find one made here."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.log import Reporter
from slugbuild.plan import BuildPlan, plan_app

from ..helpers import FIXTURE_APPS, MINIMAL, fixture_build_options, fixture_names, make_app


def _layer_from_cache(log: list[str], plan: BuildPlan, kind: str) -> bool:
    """Whether the build's log says ``kind`` came from the cache (and under the
    layer name the plan computed, for the dependency layer)."""
    layer = plan.layer(kind)
    assert layer is not None and layer.name is not None
    if kind == "runtime":
        assert plan.python is not None
        restored = f"Restoring Python {plan.python.version} from cache"
        installed = f"Installing Python {plan.python.version} (from"
    elif kind == "nltk-data":
        restored, installed = "NLTK package(s) from cache", "Downloading NLTK packages:"
    else:
        restored = f"Restoring dependencies from cache (layer {layer.name[:12]}"
        installed = f"cached as layer {layer.name[:12]}"
    if any(restored in line for line in log):
        return True
    assert any(installed in line for line in log), (kind, layer.name, log)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("name", fixture_names())
def test_the_plan_of_every_fixture_agrees_with_its_build(
        tmp_path: Path, golden_cache: Path, name: str) -> None:
    with contextlib.ExitStack() as stack:
        options = fixture_build_options(name, stack, tmp_path)
        planned = {k: v for k, v in options.items() if k in ("env", "app_base", "node_build")}
        app = FIXTURE_APPS / name
        before = plan_app(app, cache_dir=golden_cache, **planned)
        result = compile_app(app, tmp_path / "slug.tgz", cache_dir=golden_cache,
                             reporter=Reporter(quiet=True), **options)
        after = plan_app(app, cache_dir=golden_cache, **planned)

    assert before.python is not None and before.dependencies is not None
    runtime, manager = result.runtime, result.metadata["package_manager"]
    assert before.python.version == runtime["resolved"]
    assert before.python.source_file == runtime["source_file"]
    assert before.python.requested_from == runtime["requested_from"]
    assert before.python.runtime_source == runtime["source"]
    assert before.dependencies.package_manager == manager["name"]
    assert before.dependencies.installer == manager["installer"]
    assert before.dependencies.installer_version == manager["installer_version"]
    assert before.dependencies.installer_because == manager["installer_reason"]
    assert sorted(before.dependencies.key_files) == sorted(manager["files"])
    collectstatic_ran = any("collectstatic --noinput" in line for line in result.log)
    assert before.collectstatic is not None and before.collectstatic.runs == collectstatic_ran
    assert before.process_types.types == result.process_types
    for kind in ("runtime", "dependencies", "nltk-data"):
        layer = before.layer(kind)
        if kind == "nltk-data" and layer is None:
            assert not any("NLTK packages:" in line for line in result.log)
            continue
        assert layer is not None
        assert layer.cached == _layer_from_cache(result.log, before, kind), kind
    # After the build, everything it made is in the cache under the planned keys.
    assert [(layer.layer, layer.key, layer.cached) for layer in after.layers] == [
        (layer.layer, layer.key, True if layer.cached is not None else None)
        for layer in before.layers]
    assert after.dependencies is not None and after.dependencies.packages_from == "cached layer"
    assert after.dependencies.packages == sorted(
        {p["name"].lower().replace("_", "-").replace(".", "-") for p in result.packages})


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
    assert not _layer_from_cache(result.log, before, "runtime")
    assert not _layer_from_cache(result.log, before, "dependencies")
    after = plan_app(app, cache_dir=cache)
    assert [(layer.key, layer.cached) for layer in after.layers] == [
        (layer.key, True) for layer in before.layers]
