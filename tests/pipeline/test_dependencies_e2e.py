"""The dependency stage on real apps: Heroku's setuptools baseline (gunicorn 20.1.0 on
3.12 serving HTTP from the slug), the entry-point import check, requirements excluded by
markers, a removed stdlib module in collectstatic and hooks, failure hints, pip for an
older runtime, and keeping pip in the slug.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import requests

from slugbuild import compile_app, errors
from slugbuild.installers.baseline import SETUPTOOLS_VERSION
from slugbuild.log import Reporter
from slugbuild.runtime.resolve import RuntimeOptions

from ..helpers import FIXTURE_APPS, Server, copy_app, make_app, run_cli, unpack

pytestmark = pytest.mark.slow
GUNICORN20 = FIXTURE_APPS / "gunicorn20-py312"


def _build(app, out, cache_dir, **options):
    return compile_app(app, out, cache_dir=cache_dir, reporter=Reporter(quiet=True), **options)


def _refused(app, out, cache_dir, **options) -> errors.SlugbuildError:
    with pytest.raises(errors.SlugbuildError) as caught:
        _build(app, out, cache_dir, **options)
    assert not out.exists() and not out.with_suffix(".json").exists()
    return caught.value


def test_gunicorn_20_on_312_gets_the_baseline_and_serves(tmp_path, cache_dir):
    result = _build(GUNICORN20, tmp_path / "g.tgz", cache_dir)
    assert result.metadata["package_manager"]["baseline"] == [f"setuptools=={SETUPTOOLS_VERSION}"]
    versions = {p["name"]: p["version"] for p in result.packages}
    assert versions == {"gunicorn": "20.1.0", "setuptools": SETUPTOOLS_VERSION}
    with Server(result.slug_path) as server:
        response = requests.get(server.base + "/", timeout=10)
    assert response.status_code == 200 and b"gunicorn 20.1.0" in response.content
    assert "Checking that the process types' entry points import: gunicorn.app.wsgiapp" \
        in "\n".join(result.log)
    warm = _build(GUNICORN20, tmp_path / "warm.tgz", cache_dir)
    assert warm.sha256 == result.sha256
    assert any("checked for this dependency layer before" in line for line in warm.log)


def test_pip_keeps_the_baseline_and_can_stay_in_the_slug(tmp_path, cache_dir):
    """pip (not uv) resolving gunicorn's `setuptools>=3.0` against the baseline, and
    SLUGBUILD_KEEP_PIP leaving a working pip in the slug."""
    result = _build(GUNICORN20, tmp_path / "p.tgz", cache_dir,
                    env={"SLUGBUILD_PIP_INSTALLER": "pip", "SLUGBUILD_KEEP_PIP": "1"})
    manager = result.metadata["package_manager"]
    assert manager["installer"] == "pip" and not manager["installer_version"].startswith("uv")
    pip_pin = f"pip=={manager['installer_version']}"
    assert manager["baseline"] == [f"setuptools=={SETUPTOOLS_VERSION}", pip_pin]
    versions = {p["name"]: p["version"] for p in result.packages}
    assert versions["setuptools"] == SETUPTOOLS_VERSION and "pip" in versions
    root = unpack(result.slug_path, tmp_path / "unpacked")
    assert not (root / ".heroku/python/pyvenv.cfg").exists()
    pip = subprocess.run([root / ".heroku/python/bin/pip", "--version"], capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin",
                                         "PYTHONHOME": str(root / ".heroku/python")})
    assert pip.returncode == 0 and manager["installer_version"] in pip.stdout
    with Server(result.slug_path) as server:
        assert requests.get(server.base + "/", timeout=10).status_code == 200


def test_the_apps_own_setuptools_pin_replaces_the_baseline(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {".python-version": "3.12\n",
                                      "requirements.txt": "setuptools==80.9.0\nsix==1.17.0\n"})
    result = _build(app, tmp_path / "s.tgz", cache_dir)
    assert {p["name"]: p["version"] for p in result.packages} == {
        "setuptools": "80.9.0", "six": "1.17.0"}
    assert "Heroku's baseline for pip apps" in "\n".join(result.log)


def test_gunicorn_20_on_313_is_refused_at_build_time(tmp_path, cache_dir):
    """No baseline on 3.13 (as on Heroku): the import check finds pkg_resources missing."""
    app = copy_app(GUNICORN20, tmp_path / "app")
    (app / ".python-version").write_text("3.13\n")
    out = tmp_path / "g.tgz"
    done = run_cli("compile", app, "-o", out, "--cache-dir", cache_dir)
    assert done.returncode == 1 and not out.exists()
    assert "Traceback" not in done.stderr
    assert ("Error [process-import-failed]: The web process would not start: "
            "pkg_resources is missing") in done.stderr
    assert "setuptools<82" in done.stderr and "gunicorn/util.py" in done.stderr


def test_all_requirements_excluded_by_markers(tmp_path, cache_dir):
    error = _refused(FIXTURE_APPS / "markers-excluded", tmp_path / "m.tgz", cache_dir)
    assert error.code == "dependencies-excluded-by-markers"
    assert 'gunicorn==27.0.1 ; python_version < "3.12"' in error.found
    assert "3.13" in error.title


def test_server_excluded_by_its_marker(tmp_path, cache_dir):
    app = copy_app(FIXTURE_APPS / "markers-excluded", tmp_path / "app")
    (app / "requirements.txt").write_text(
        'flask==3.1.3\ngunicorn==27.0.1 ; python_version < "3.12"\n')
    error = _refused(app, tmp_path / "m.tgz", cache_dir)
    assert error.code == "process-command-excluded"
    assert "gunicorn: not found" in error.found


def test_removed_stdlib_module_in_collectstatic(tmp_path, cache_dir):
    out = tmp_path / "c.tgz"
    done = run_cli("compile", FIXTURE_APPS / "django-removed-cgi", "-o", out,
                   "--cache-dir", cache_dir)
    assert done.returncode == 1 and not out.exists()
    assert "Error [collectstatic-failed]: Django's collectstatic failed" in done.stderr
    assert "the module cgi (imported by mysite/settings.py) was removed from Python's " \
           "standard library in 3.13 (PEP 594)" in done.stderr
    assert "3.12 in .python-version" in done.stderr and "legacy-cgi" in done.stderr
    assert "?." not in done.stderr
    # The failure's output is shown once (streamed), not again under the error.
    assert done.stderr.count("No module named 'cgi'") == 1
    assert "/app/mysite/settings.py" in done.stderr  # the traceback itself is there


def test_removed_stdlib_module_in_a_hook(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {
        "requirements.txt": "", ".python-version": "3.13\n",
        "bin/post_compile": "#!/bin/sh\nexec python -c 'import imghdr'\n",
    })
    error = _refused(app, tmp_path / "h.tgz", cache_dir)
    assert error.code == "hook-failed"
    assert "imghdr" in error.found and "in 3.13 (PEP 594)" in error.found
    assert "standard-imghdr" in error.found and not error.found.endswith("..")


def test_local_package_failure_names_the_app_directory(tmp_path, cache_dir):
    app = make_app(tmp_path / "myapp", {
        "requirements.txt": "./libs/broken\n",
        "libs/broken/pyproject.toml": '[build-system]\nrequires = ["setuptools>=70"]\n'
                                      'build-backend = "setuptools.build_meta"\n',
        "libs/broken/setup.py": "raise SystemExit('this package does not build')\n",
    })
    error = _refused(app, tmp_path / "l.tgz", cache_dir)
    assert error.code == "local-package-failed" and "./libs/broken" in error.found
    assert "scratch" not in error.render() and "/tmp/" not in error.found


def test_python_39_installs_with_a_pip_that_supports_it(tmp_path, cache_dir):
    """slugbuild's own pip needs 3.10; a 3.9 app (built with --allow-eol-python, as
    the version policy refuses 3.9 otherwise) gets the last pip for 3.9 (when pip
    installs: --prefer-binary is an option only pip reads)."""
    app = make_app(tmp_path / "app", {".python-version": "3.9\n",
                                      "requirements.txt": "--prefer-binary\nsix>=1.16\n"})
    with pytest.raises(errors.SlugbuildError) as refused:
        _build(app, tmp_path / "refused.tgz", cache_dir)
    assert refused.value.code == "python-version-eol"
    result = _build(app, tmp_path / "s.tgz", cache_dir,
                    runtime_options=RuntimeOptions.from_env(allow_eol=True))
    assert result.metadata["package_manager"]["installer_version"] == "26.0.1"
    assert [p["name"] for p in result.packages] == ["setuptools", "six"]
    assert json.loads(result.metadata_path.read_text())["package_manager"]["baseline"] == [
        f"setuptools=={SETUPTOOLS_VERSION}"]
