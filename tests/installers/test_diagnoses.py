"""The dependency stage's judgements, without a build: Heroku's baseline, markers,
installer support for the runtime, failure diagnoses, missing-module explanations,
and the entry points the import check starts from.

The end-to-end counterparts (real installs, a real gunicorn answering HTTP) are in
pipeline/test_dependencies_e2e.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.collectstatic import diagnose
from slugbuild.dependencies import check_declared_installed, excluded_requirements, layer_key
from slugbuild.importcheck import (
    REMOVED_STDLIB,
    check_process_commands,
    console_scripts,
    diagnose_missing_module,
    entry_points,
    explain_missing_module,
)
from slugbuild.installers import InstallJob
from slugbuild.installers.baseline import SETUPTOOLS_VERSION, baseline_requirements
from slugbuild.installers.failures import diagnose_install_failure, failed_package
from slugbuild.installers.pip import PipInstaller, pip_for_runtime
from slugbuild.installers.requirements import export_requirements, requirement_lines
from slugbuild.log import Reporter

from ..helpers import make_app

# --- baseline -------------------------------------------------------------------------

@pytest.mark.parametrize(("manager", "version", "expected"), [
    ("pip", "3.12.1", (f"setuptools=={SETUPTOOLS_VERSION}",)),
    ("pip", "3.10.13", (f"setuptools=={SETUPTOOLS_VERSION}",)),
    ("pip", "3.13.0", ()),
    ("pip", "3.14.0", ()),
    ("pipenv", "3.12.1", ()),
    ("poetry", "3.11.7", ()),
    ("uv", "3.12.1", ()),
])
def test_baseline_matches_herokus_per_manager_and_python(manager, version, expected):
    assert baseline_requirements(manager, version, {}) == expected


def test_keep_pip_adds_the_installing_pip():
    assert baseline_requirements("pip", "3.13.0", {"SLUGBUILD_KEEP_PIP": "1"},
                                 "26.3") == ("pip==26.3",)
    assert baseline_requirements("uv", "3.13.0", {"SLUGBUILD_KEEP_PIP": "0"}) == ()
    assert baseline_requirements("pip", "3.12.1", {"SLUGBUILD_KEEP_PIP": "yes"},
                                 "26.3") == (f"setuptools=={SETUPTOOLS_VERSION}", "pip==26.3")


def test_baseline_keys_the_layer_only_when_there_is_one(tmp_path):
    app = make_app(tmp_path / "app", {"requirements.txt": "six==1.17.0\n"})
    runtime = {"name": "cpython-3.13.0", "key": "k"}
    installer = PipInstaller("3.13.0").plan(app, "requirements.txt", {})
    plain, inputs = layer_key(app, ["requirements.txt"], runtime, installer, {})
    assert "baseline" not in inputs  # layers made before the baseline keep their key
    assert layer_key(app, ["requirements.txt"], runtime, installer, {}, None, ())[0] == plain
    with_baseline, inputs = layer_key(app, ["requirements.txt"], runtime, installer, {}, None,
                                      ("setuptools==70.3.0",))
    assert with_baseline != plain and inputs["baseline"] == ["setuptools==70.3.0"]


# --- installer support for the runtime -------------------------------------------------------

def test_pip_for_runtime_uses_an_older_pip_for_39_and_refuses_older():
    from importlib.metadata import version

    assert pip_for_runtime("3.13.0").version == version("pip")
    assert pip_for_runtime("3.13.0").cached is None
    old = pip_for_runtime("3.9.18")
    assert (old.version, old.cached) == ("26.0.1", "pip-26.0.1")
    with pytest.raises(errors.SlugbuildError) as caught:
        pip_for_runtime("3.8.18")
    assert caught.value.code == "installer-unsupported-python"
    assert "3.8.18" in caught.value.found


def test_installer_version_names_the_pip_that_runs(tmp_path):
    # --prefer-binary is pip's alone: pip installs, and the plan names the pip that runs.
    app = make_app(tmp_path / "app", {"requirements.txt": "--prefer-binary\nsix>=1\n"})
    installer = PipInstaller("3.9.18").plan(app, "requirements.txt", {})
    assert installer.version == "26.0.1"


# --- markers -----------------------------------------------------------------------------

def _job(tmp_path: Path, declared: list[str], version: str = "3.13.0",
         reporter: Reporter | None = None) -> InstallJob:
    return InstallJob(python=Path("/nonexistent/python3.13"), python_version=version,
                      app_dir=tmp_path, lock_file="requirements.txt", config_vars={},
                      cache=None, reporter=reporter or Reporter(quiet=True),  # type: ignore[arg-type]
                      scratch=tmp_path, declared=declared)


def test_every_requirement_excluded_by_markers_fails(tmp_path):
    job = _job(tmp_path, ['flask==3.1.3 ; python_version < "3.12"',
                          'gunicorn==27.0.1; python_version<"3.12"'])
    with pytest.raises(errors.SlugbuildError) as caught:
        check_declared_installed(job, installed=[])
    assert caught.value.code == "dependencies-excluded-by-markers"
    assert "a line `3.11` there" in caught.value.action
    assert "3.13.0" in caught.value.title and 'gunicorn==27.0.1; python_version<"3.12"' \
        in caught.value.found


def test_some_requirements_excluded_is_fine_and_logged(tmp_path):
    reporter = Reporter(quiet=True)
    job = _job(tmp_path, ["flask==3.1.3", 'tomli==2.2.1 ; python_version < "3.11"',
                          'colorama==0.4.6 ; sys_platform == "win32"'], reporter=reporter)
    check_declared_installed(job, installed=["flask", "click"])
    assert any("tomli" in line for line in reporter.lines)
    assert not any("colorama" in line for line in reporter.lines)  # not the Python's doing
    # Markers that allow the runtime, or no markers: nothing to say.
    check_declared_installed(_job(tmp_path, ['six ; python_version >= "3.9"']), ["six"])
    check_declared_installed(_job(tmp_path, []), [])


def test_excluded_requirements_follow_includes_not_constraints(tmp_path):
    app = make_app(tmp_path / "app", {
        "requirements.txt": "-r base.txt\n-c pins.txt\nflask==3.1.3\n",
        "base.txt": 'gunicorn==27.0.1 ; python_version < "3.12"  # old\n',
        "pins.txt": 'six==1.0 ; python_version < "3.12"\n',
    })
    assert requirement_lines(app, "requirements.txt") == [
        "flask==3.1.3", 'gunicorn==27.0.1 ; python_version < "3.12"']
    assert excluded_requirements(app, "requirements.txt", "3.13.0") == {
        "gunicorn": 'gunicorn==27.0.1 ; python_version < "3.12"'}
    assert excluded_requirements(app, "requirements.txt", "3.11.7") == {}


def test_export_requirements_read_hashed_continuations():
    text = ('-i https://pypi.org/simple\n'
            'flask==3.1.3 ; python_version < "3.12" \\\n    --hash=sha256:aa \\\n'
            '    --hash=sha256:bb\n# a comment\nsix==1.17.0 --hash=sha256:cc\n')
    assert export_requirements(text) == ['flask==3.1.3 ; python_version < "3.12"',
                                           "six==1.17.0"]


# --- missing modules -----------------------------------------------------------------------

def test_removed_stdlib_module_names_the_python_and_the_version_file():
    text = explain_missing_module("cgi", "3.13.0", importer="django/http/request.py")
    assert "removed from Python's standard library in 3.13 (PEP 594)" in text
    assert "Python 3.13.0" in text and "3.12 in .python-version" in text
    assert "legacy-cgi" in text and "django/http/request.py" in text
    assert "distutils" in REMOVED_STDLIB and "asyncore" in REMOVED_STDLIB
    assert "3.11 in .python-version" in explain_missing_module("distutils.core", "3.12.1")
    # Still in the standard library of this Python: an ordinary missing package.
    assert "removed" not in explain_missing_module("cgi", "3.12.1")


def test_pkg_resources_points_at_setuptools():
    text = explain_missing_module("pkg_resources", "3.13.0", importer="gunicorn/util.py")
    assert "setuptools<82" in text and "gunicorn/util.py" in text


def test_no_doubled_punctuation_in_collectstatic_diagnoses():
    output = ('Traceback (most recent call last):\n'
              '  File "/build/app/proj/settings.py", line 3, in <module>\n'
              "ModuleNotFoundError: No module named 'cgi'\n")
    generic = diagnose(output)
    assert generic and not generic.endswith(("?", ".")) and "?" not in generic
    specific = diagnose(output, "3.13.0", build_dir=Path("/build/app"))
    assert "standard library in 3.13" in specific and "(imported by proj/settings.py)" in specific
    assert diagnose_missing_module("nothing here", "3.13.0") is None


def test_collectstatic_diagnosis_takes_the_error_reported_last():
    output = ("KeyError: 'collectstatic'\n\nDuring handling of the above exception, another "
              "exception occurred:\n\nModuleNotFoundError: No module named 'imghdr'\n")
    assert "imghdr" in diagnose(output, "3.13.0")


def test_rendered_errors_do_not_repeat_streamed_output():
    error = errors.COLLECTSTATIC_FAILED.error(manage_py="manage.py", exit_code=1,
                                              diagnosis="", output="TRACEBACK LINE",
                                              output_shown=True)
    assert "TRACEBACK LINE" not in error.render() and error.output == "TRACEBACK LINE"
    shown = errors.COLLECTSTATIC_FAILED.error(manage_py="m", exit_code=1, diagnosis="",
                                              output="TRACEBACK LINE")
    assert shown.render().count("TRACEBACK LINE") == 1


# --- entry points -------------------------------------------------------------------------

def test_entry_points_of_process_commands(tmp_path):
    dist = tmp_path / "gunicorn-20.1.0.dist-info"
    dist.mkdir()
    (dist / "entry_points.txt").write_text(
        "[console_scripts]\ngunicorn = gunicorn.app.wsgiapp:run\n\n"
        "[paste.server_runner]\nmain = gunicorn.app.pasterapp:serve\n")
    other = tmp_path / "newrelic-9.0.dist-info"
    other.mkdir()
    (other / "entry_points.txt").write_text("[console_scripts]\nnewrelic-admin = "
                                            "newrelic.admin:main\n")
    local = tmp_path / "myapp-1.0.dist-info"  # the app itself, installed from `.`
    local.mkdir()
    (local / "entry_points.txt").write_text("[console_scripts]\nmyapp = myapp.cli:main\n")
    (local / "direct_url.json").write_text('{"url": "file:///app", "dir_info": {}}')
    scripts = console_scripts(tmp_path)
    assert scripts == {"gunicorn": "gunicorn.app.wsgiapp", "newrelic-admin": "newrelic.admin"}
    found = entry_points({
        "web": "FOO=1 newrelic-admin run-program gunicorn app:app --bind :$PORT",
        "worker": "python -m celery -A proj worker",
        "clock": "python clock.py",
        "bad": "echo 'unterminated",
    }, scripts)
    assert [(p.process, p.module) for p in found] == [
        ("web", "newrelic.admin"), ("web", "gunicorn.app.wsgiapp"), ("worker", "celery")]
    (tmp_path / "myworker").mkdir()  # the app's own package: never imported
    assert entry_points({"worker": "python3 -m myworker.run", "web": "python -m http.server"},
                        scripts, tmp_path)[0].module == "http.server"
    assert len(entry_points({"worker": "python3 -m myworker.run"}, scripts, tmp_path)) == 0


# --- install failures ---------------------------------------------------------------------

PIP_PG_CONFIG = """\
Collecting psycopg2==2.9.10
  Downloading psycopg2-2.9.10.tar.gz (385 kB)
  Preparing metadata (setup.py): finished with status 'error'
  error: subprocess-exited-with-error
  Error: pg_config executable not found.
  pg_config is required to build psycopg2 from source.
"""
UV_SDIST = """\
  x Failed to build `numpy==1.24.4`
  |-> The build backend returned an error
  `-> Call to `setuptools.build_meta.build_wheel` failed (exit status: 1)
      AttributeError: module 'pkgutil' has no attribute 'ImpImporter'
"""
PIP_LOCAL = """\
Processing ./libs/greeting
  Preparing metadata (pyproject.toml): finished with status 'error'
  error: subprocess-exited-with-error
  x Preparing metadata (pyproject.toml) did not run successfully.
"""


def _diagnosed(output: str, local: list[str] = ()):
    return diagnose_install_failure(command="pip install -r requirements.txt", exit_code=1,
                                    output=output, python_version="3.13.0",
                                    local_paths=list(local))


def test_missing_system_library_is_not_a_naming_problem():
    error = _diagnosed(PIP_PG_CONFIG)
    assert error.code == "dependency-needs-system-library"
    assert "psycopg2-binary" in error.action and "psycopg[binary]" in error.action
    assert "psycopg2" in error.found and "package index" not in error.action
    header = _diagnosed("Building wheel for lxml (pyproject.toml) ... error\n"
                        "src/lxml/etree.c:1:10: fatal error: libxml/xmlversion.h: No such "
                        "file or directory\n")
    assert header.code == "dependency-needs-system-library"
    assert "libxml/xmlversion.h" in header.found and "lxml" in header.found
    mysql = _diagnosed("/bin/sh: 1: mysql_config: not found\nFailed to build mysqlclient\n")
    assert mysql.code == "dependency-needs-system-library" and "PyMySQL" in mysql.action


def test_sdist_that_does_not_build_on_the_python():
    error = _diagnosed(UV_SDIST)
    assert error.code == "dependency-build-failed"
    assert "numpy" in error.title or "numpy" in error.found
    assert "3.13" in error.action and error.output_shown
    assert failed_package("Failed building wheel for pyyaml\n") == "pyyaml"
    old_setup = _diagnosed("  x Failed to build `oldpkg==0.1`\n  File \"setup.py\", line 1\n"
                           "ModuleNotFoundError: No module named 'distutils'\n")
    assert old_setup.code == "dependency-build-failed"
    assert "removed from Python's standard library in 3.12" in old_setup.found


def test_local_package_failure_names_the_package():
    error = _diagnosed(PIP_LOCAL, ["./libs/greeting"])
    assert error.code == "local-package-failed" and "./libs/greeting" in error.found


def test_unknown_failures_keep_the_generic_error():
    assert _diagnosed("ERROR: No matching distribution found for flaskk==9\n") is None


def _slug_with_gunicorn(tmp_path: Path) -> Path:
    """A build dir whose runtime has gunicorn's console script: returns its python."""
    bin_dir = tmp_path / ".heroku" / "python" / "bin"
    site = tmp_path / ".heroku" / "python" / "lib" / "python3.12" / "site-packages"
    (site / "gunicorn-23.0.0.dist-info").mkdir(parents=True)
    (site / "gunicorn-23.0.0.dist-info" / "entry_points.txt").write_text(
        "[console_scripts]\ngunicorn = gunicorn.app.wsgiapp:run\n")
    bin_dir.mkdir(parents=True)
    (bin_dir / "python3.12").write_text("")
    return bin_dir / "python3.12"


def test_a_misspelt_program_is_one_catalogue_error(tmp_path):
    """`web: gunicron app:app` would die at every boot: the build stops and names gunicorn."""
    python = _slug_with_gunicorn(tmp_path)
    with pytest.raises(errors.PROCESS_COMMAND_UNKNOWN.exception) as caught:
        check_process_commands(tmp_path, python, {"web": "gunicron app:app"}, {}, "3.12.1",
                               "requirements.txt")
    assert caught.value.code == "process-command-unknown"
    assert "did you mean `gunicorn`" in caught.value.render()


def test_programs_from_elsewhere_are_left_to_the_dyno(tmp_path):
    """A program that is no near miss of the slug's (the run image's, another buildpack's),
    one on PATH, or the app's own file is not refused."""
    python = _slug_with_gunicorn(tmp_path)
    (tmp_path / "start.sh").write_text("")
    check_process_commands(tmp_path, python, {
        "web": "gunicorn app:app", "proxy": "nginx -g daemon-off", "shell": "sh -c 'x'",
        "own": "start.sh", "env": "FOO=1 exec gunicorn app:app", "script": "bin/start",
    }, {}, "3.12.1", "requirements.txt")
