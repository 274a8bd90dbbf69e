"""The pipeline's shape: project analysis up front, buildpacks as objects, one result."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import slugbuild
from slugbuild import compile_app, errors, pipeline
from slugbuild.buildpack_runner import ExternalBuildpack
from slugbuild.buildpacks import NodeStep, choose_buildpacks
from slugbuild.log import Reporter
from slugbuild.python_buildpack import PythonBuildpack
from slugbuild.release import RELEASE_COPY, Release, slug_release, write_release

from .helpers import REPO, make_app


def test_a_missing_included_requirements_file_fails_before_the_runtime_layer(tmp_path):
    """Bad input fails early: the requirements files are read and checked before the
    runtime layer is copied (on a cold cache that copy takes seconds)."""
    app = make_app(tmp_path / "app", {".python-version": "3.12\n",
                                      "requirements.txt": "six==1.17.0\n-r base.txt\n"})
    cache = tmp_path / "cache"
    reporter = Reporter(quiet=True)
    with pytest.raises(errors.SlugbuildError) as caught:
        compile_app(app, tmp_path / "slug.tgz", cache_dir=cache, reporter=reporter)
    assert caught.value.code == errors.REQUIREMENTS_FILE_MISSING.code
    assert not any("Python 3.12" in line and ("Installing" in line or "Restoring" in line)
                   for line in reporter.lines), reporter.lines
    runtimes = cache / "runtimes"
    assert not runtimes.exists() or not any(runtimes.iterdir())
    assert not (tmp_path / "slug.tgz").exists()


def test_project_analysis_runs_before_the_system_packages(tmp_path, monkeypatch):
    """The first buildpack's analysis comes before the Aptfile's packages are
    fetched: nothing can change the app before it, and bad input fails first."""
    placed = []
    monkeypatch.setattr(pipeline, "place_apt_layer", lambda build: placed.append(build) or {})
    app = make_app(tmp_path / "app", {".python-version": "3.12\n", "Aptfile": "libpq5\n",
                                      "requirements.txt": "-r base.txt\n"})
    with pytest.raises(errors.SlugbuildError) as caught:
        compile_app(app, tmp_path / "slug.tgz", cache_dir=tmp_path / "cache",
                    reporter=Reporter(quiet=True))
    assert caught.value.code == errors.REQUIREMENTS_FILE_MISSING.code
    assert placed == []


def test_buildpacks_are_objects_of_one_interface(tmp_path):
    """The built-in Python stages are a buildpack like an external one; named twice,
    they run once (the second listing only warns)."""
    app = make_app(tmp_path / "app", {"requirements.txt": "six==1.17.0\n"})
    hello = str(REPO / "fixtures" / "buildpacks" / "hello")
    chosen = choose_buildpacks(app, ["slugbuild:node", hello, "python", "heroku/python"],
                               None, node_build=False, runtime_options=None)
    kinds = [type(buildpack) for buildpack in chosen.order]
    assert kinds == [NodeStep, ExternalBuildpack, PythonBuildpack, PythonBuildpack]
    assert chosen.listed and chosen.python is chosen.order[2]
    assert [b.shown for b in chosen.order][2:] == ["python", "heroku/python"]

    alone = choose_buildpacks(app, None, None, node_build=False, runtime_options=None)
    assert not alone.listed and alone.order == [alone.python]


PIPELINE_MODULES = {"pipeline", "context", "buildpacks", "python_buildpack", "dependency_stage",
                    "layer_checks", "outputs", "config_vars", "release", "buildpack_runner",
                    "buildpack_lists", "dependencies"}


def _imports_of(path: Path) -> set[str]:
    """The slugbuild modules a module imports, anywhere in it (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_the_pipeline_modules_are_in_no_import_cycle():
    """Following imports from a pipeline module never leads back to it."""
    package = Path(slugbuild.__file__).parent
    graph = {path.stem: _imports_of(path) for path in package.glob("*.py")}
    graph.update({path.name: set().union(*(_imports_of(p) for p in path.glob("*.py")))
                  for path in package.iterdir() if (path / "__init__.py").is_file()})
    for start in PIPELINE_MODULES:
        seen, pending = set(), list(graph[start])
        while pending:
            module = pending.pop()
            assert module != start, f"{start} imports itself through {sorted(seen)}"
            if module not in seen:
                seen.add(module)
                pending.extend(graph.get(module, ()))


def test_the_release_written_into_the_slug_reads_back_as_written(tmp_path):
    """.release is written with PyYAML: process types and values YAML would read as
    booleans, nulls or numbers come back as the strings they were."""
    tricky = {"on": "python on.py", "null": "python null.py", "1": "echo one",
              "yes": "echo yes", "web": "gunicorn 'app:make()' --bind :$PORT"}
    release = Release(tricky, {"OFF": "off", "EMPTY": "", "OCTAL": "0800"}, ["heroku-redis"])
    write_release(tmp_path, release)
    read = slug_release((tmp_path / ".release").read_text(), None)
    assert read.default_process_types == tricky
    assert read.config_vars == {"OFF": "off", "EMPTY": "", "OCTAL": "0800"}
    assert read.addons == ["heroku-redis"]
    assert (tmp_path / RELEASE_COPY).read_text() == (tmp_path / ".release").read_text()


def test_build_tools_do_not_inherit_the_shells_bookkeeping(monkeypatch, tmp_path):
    """PWD/OLDPWD/SHLVL/_ say where the user's shell was: a tool runs in the build
    directory, and collectstatic's reuse key must not change with the shell's directory."""
    from slugbuild.proc import clean_env

    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.setenv("OLDPWD", "/somewhere/else")
    monkeypatch.setenv("SHLVL", "3")
    monkeypatch.setenv("_", "/usr/bin/slugbuild")
    monkeypatch.setenv("SOME_SETTING", "kept")
    env = clean_env({"PWD": "/given/explicitly"})
    assert not {"OLDPWD", "SHLVL", "_"} & env.keys()
    assert env["PWD"] == "/given/explicitly"  # what the build sets itself still goes
    assert env["SOME_SETTING"] == "kept"
