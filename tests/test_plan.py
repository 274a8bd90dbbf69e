"""``slugbuild plan``: what a build would do, learned without building (quick tests).

The plan's agreement with real builds of every fixture is in pipeline/test_plan_vs_build.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.plan import plan_app, render_plan
from slugbuild.versions import sticky_minor

from .helpers import make_app, make_buildpack, run_cli

FLASK_APP = {
    ".python-version": "3.12\n",
    "requirements.txt": "flask==3.0.3\ngunicorn==23.0.0\n",
    "app.py": "from flask import Flask\napp = Flask(__name__)\n",
}


def test_a_pinned_flask_app_is_planned_without_building(tmp_path: Path) -> None:
    import slugbuild

    app = make_app(tmp_path / "app", FLASK_APP)
    cache = tmp_path / "cache"
    plan = slugbuild.plan_app(app, cache_dir=cache)
    assert isinstance(plan, slugbuild.BuildPlan)
    assert plan.python is not None and plan.python.version.startswith("3.12.")
    assert plan.python.source_file == ".python-version"
    assert plan.python.requested_from == "file"
    assert plan.dependencies is not None
    assert plan.dependencies.package_manager == "pip"
    assert plan.dependencies.installer == "uv"
    assert "pinned" in plan.dependencies.installer_because
    assert plan.dependencies.packages_from == "declared"
    assert {"flask", "gunicorn"} <= set(plan.dependencies.packages)
    assert plan.collectstatic is not None and not plan.collectstatic.runs
    assert plan.process_types.source == "inferred"
    assert plan.process_types.types == {"web": "gunicorn app:app"}
    assert plan.buildpacks == ["python (built-in)"]
    assert [(layer.layer, layer.cached) for layer in plan.layers] == [
        ("runtime", False), ("dependencies", False)]
    # Nothing built or kept: no layer, no scratch directory left behind.
    assert not (cache / "layers").exists() or not any((cache / "layers").iterdir())
    assert not (cache / "runtimes").exists() or not any((cache / "runtimes").iterdir())
    assert not list((cache / "tmp").iterdir())
    assert "collectstatic:   skipped" in render_plan(plan)


def test_the_installer_choice_and_collectstatic_follow_config_vars(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", {
        ".python-version": "3.12\n",
        "requirements.txt": "django>=5,<6\ngunicorn\n",
        "manage.py": "import os\n",
    })
    plan = plan_app(app, cache_dir=tmp_path / "cache")
    assert plan.dependencies is not None and plan.dependencies.installer == "uv"
    assert "version ranges" in plan.dependencies.installer_because  # uv resolves them
    assert plan.collectstatic is not None and plan.collectstatic.runs

    plan = plan_app(app, cache_dir=tmp_path / "cache",
                    env={"DISABLE_COLLECTSTATIC": "1", "SLUGBUILD_PIP_INSTALLER": "pip"})
    assert plan.dependencies is not None and plan.dependencies.installer == "pip"
    assert plan.dependencies.installer_because == "SLUGBUILD_PIP_INSTALLER=pip"
    assert plan.collectstatic is not None and not plan.collectstatic.runs
    assert plan.collectstatic.why == "DISABLE_COLLECTSTATIC is set"


def test_a_plan_records_no_sticky_version(tmp_path: Path) -> None:
    """An app without a version file sticks to the minor its first *build* used; a plan
    must not decide that for it."""
    app = make_app(tmp_path / "app", {"requirements.txt": "flask==3.0.3\n",
                                      "Procfile": "web: flask run\n"})
    plan = plan_app(app, cache_dir=tmp_path / "cache")
    assert plan.python is not None and plan.python.requested_from == "default"
    assert plan.process_types.source == "Procfile"
    assert sticky_minor(tmp_path / "cache", app) is None


def test_a_pre_compile_hook_is_noted_on_the_dependency_key(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", {**FLASK_APP, "bin/pre_compile": "#!/bin/sh\n"})
    plan = plan_app(app, cache_dir=tmp_path / "cache")
    layer = plan.layer("dependencies")
    assert layer is not None and "pre_compile" in layer.note


@pytest.mark.parametrize(("files", "kind"), [
    ({"requirements.txt": "flask\n", "Pipfile.lock": "{}"}, errors.MULTIPLE_PACKAGE_MANAGERS),
    ({"README": "no python here"}, errors.NOT_A_PYTHON_APP),
    ({"requirements.txt": "flask\n", ".python-version": "2.7\n"}, None),
])
def test_bad_input_fails_as_the_build_would(tmp_path: Path, files: dict[str, str],
                                             kind: errors.ErrorKind | None) -> None:
    app = make_app(tmp_path / "app", files)
    with pytest.raises(errors.SlugbuildError) as failed:
        plan_app(app, cache_dir=tmp_path / "cache")
    if kind is not None:
        assert failed.value.code == kind.code
    with pytest.raises(errors.SlugbuildError) as missing:
        plan_app(tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    assert missing.value.code == errors.APP_DIR_MISSING.code


def test_the_command_prints_the_plan_as_json(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", FLASK_APP)
    done = run_cli("plan", app, "--json", "--cache-dir", tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["dependencies"]["installer"] == "uv"
    assert [layer["layer"] for layer in shown["layers"]] == ["runtime", "dependencies"]
    text = run_cli("plan", app, "--cache-dir", tmp_path / "cache")
    assert text.returncode == 0 and "web: gunicorn app:app" in text.stdout
    bad = run_cli("plan", tmp_path / "nowhere", "--cache-dir", tmp_path / "cache")
    assert bad.returncode == 1 and "Error" in bad.stderr and "Traceback" not in bad.stderr


def test_a_plan_shows_what_slug_json_would_record_of_app_json(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app", {
        **FLASK_APP,
        "app.json": json.dumps({"scripts": {"postdeploy": "flask seed"},
                                "env": {"GREETING": {"value": "hi"}}}),
    })
    plan = plan_app(app, cache_dir=tmp_path / "cache")
    assert plan.app_json == {"scripts": {"postdeploy": "flask seed"}, "env_applied": []}
    applied = plan_app(app, cache_dir=tmp_path / "cache", app_json_env=True)
    assert applied.app_json is not None and applied.app_json["env_applied"] == ["GREETING"]
    assert "postdeploy: flask seed" in render_plan(applied)
    (app / "app.json").write_text("{")
    with pytest.raises(errors.SlugbuildError) as failed:
        plan_app(app, cache_dir=tmp_path / "cache")
    assert failed.value.code == errors.APP_JSON_INVALID.code


def test_buildpacks_are_planned_in_order_and_noted_where_they_may_change_things(
        tmp_path: Path) -> None:
    pack = make_buildpack(tmp_path / "bp", "echo hi\n")
    app = make_app(tmp_path / "app", {**FLASK_APP, "Procfile": "web: gunicorn app:app\n"})
    plan = plan_app(app, cache_dir=tmp_path / "cache", buildpacks=[str(pack), "python"])
    assert plan.buildpacks == [str(pack), "python"]
    layer = plan.layer("dependencies")
    assert layer is not None and str(pack) in layer.note
    assert "bin/release" in plan.process_types.note
    alone = plan_app(app, cache_dir=tmp_path / "cache", buildpacks=[str(pack)])
    assert alone.python is None and alone.dependencies is None and alone.layers == []
    assert alone.process_types.types == {"web": "gunicorn app:app"}
    assert "python:" not in render_plan(alone)
