"""Choosing the package manager and reading its files: fast checks, no installs."""

from __future__ import annotations

import json

import pytest

from slugbuild import errors
from slugbuild.dependencies import constraints_from_slug_json, rebuild_reasons
from slugbuild.detect import detect, require_package_manager
from slugbuild.installers.locks import check_syntax
from slugbuild.installers.pip import PipInstaller
from slugbuild.installers.requirements import unpinned_requirements

from ..helpers import make_app


@pytest.mark.parametrize("lock_file, manager", [
    ("requirements.txt", "pip"), ("Pipfile.lock", "pipenv"), ("poetry.lock", "poetry"),
    ("uv.lock", "uv"),
])
def test_each_lock_file_selects_its_manager(tmp_path, lock_file, manager):
    info = detect(make_app(tmp_path, {lock_file: "", "pyproject.toml": ""}))
    assert (info.package_manager, info.lock_file) == (manager, lock_file)


def _code(app) -> errors.SlugbuildError:
    info = detect(app)  # detection itself accepts the app, as Heroku's bin/detect does
    with pytest.raises(errors.SlugbuildError) as caught:
        require_package_manager(info)
    return caught.value


def test_several_managers_is_an_error_naming_them(tmp_path):
    app = make_app(tmp_path, {"requirements.txt": "", "poetry.lock": "", "uv.lock": ""})
    error = _code(app)
    assert error.code == "multiple-package-managers"
    for name in ("requirements.txt", "poetry.lock", "uv.lock"):
        assert name in error.found


@pytest.mark.parametrize("files, code", [
    ({"Pipfile": "[packages]\n"}, "pipfile-without-lock"),
    ({"setup.py": "from setuptools import setup\nsetup()\n"}, "project-without-lock"),
    ({"pyproject.toml": "[project]\nname='x'\n"}, "project-without-lock"),
    ({"requirements.in": "flask\n"}, "requirements-not-compiled"),
    ({"app.py": ""}, "no-package-manager"),
])
def test_missing_lock_gets_advice_of_its_own(tmp_path, files, code):
    assert _code(make_app(tmp_path, files)).code == code


@pytest.mark.parametrize("directory", [".venv", "venv"])
def test_committed_virtualenv_is_refused(tmp_path, directory):
    app = make_app(tmp_path, {"requirements.txt": "", f"{directory}/pyvenv.cfg": "home = /x\n"})
    error = _code(app)
    assert error.code == "committed-virtualenv" and directory in error.found


def test_a_venv_folder_that_is_not_a_virtualenv_is_fine(tmp_path):
    app = make_app(tmp_path, {"requirements.txt": "", "venv/notes.txt": "not a venv\n"})
    assert detect(app).package_manager == "pip"


def test_pinned_requirements_go_to_uv_and_the_rest_to_pip(tmp_path):
    app = make_app(tmp_path, {
        "requirements.txt": "-r base.txt\nsix==1.17.0 \\\n    --hash=sha256:abc\n",
        "base.txt": "--extra-index-url https://example.invalid/simple\nidna==3.10  # pin\n",
    })
    installer = PipInstaller()
    plan = installer.plan(app, "requirements.txt", {})
    assert list(plan.key_files) == ["requirements.txt", "base.txt"]
    assert plan.tool == "uv"
    plan = installer.plan(app, "requirements.txt", {"SLUGBUILD_PIP_INSTALLER": "pip"})
    assert plan.key_files
    assert plan.tool == "pip"
    # Hashes beside a range, and options only pip reads as pip does: pip.
    for line in ("flask>=3", "--find-links ./wheels", "--pre\nflask", "./libs/x"):
        (app / "base.txt").write_text(line + "\n")
        plan = installer.plan(app, "requirements.txt", {})
        assert plan.tool == "pip", line
        assert plan.installer_reason.endswith("pip installs it, as on Heroku"), line
    # Ranges and direct references without hashes: uv resolves them (issue 20).
    (app / "requirements.txt").write_text("-r base.txt\nsix==1.17.0\n")
    for line in ("flask>=3", "git+https://example.invalid/x.git", "x @ https://e.invalid/x.whl"):
        (app / "base.txt").write_text(line + "\n")
        plan = installer.plan(app, "requirements.txt", {})
        assert (plan.tool, plan.resolves) == ("uv", True), line
    (app / "base.txt").write_text("flask>=3\nclick\n")
    assert unpinned_requirements(app, "requirements.txt") == ["flask>=3", "click"]


def test_editable_requirements_are_keyed_and_installed_as_copies(tmp_path):
    from slugbuild.installers.requirements import install_editables_as_copies

    app = make_app(tmp_path, {
        "requirements.txt": "six==1.17.0\n-e ./lib\n--editable=.\n",
        "lib/pyproject.toml": "", "lib/lib/__init__.py": "",
        "app.py": "", ".heroku/python/bin/python": "", "lib/build/lib/x.py": "",
    })
    plan = PipInstaller().plan(app, "requirements.txt", {})
    files = list(plan.key_files)
    assert plan.tool == "pip"
    # `-e .` is the whole app: every file keys the layer, but never what the build adds.
    assert files == ["requirements.txt", "app.py", "lib/lib/__init__.py", "lib/pyproject.toml"]
    assert install_editables_as_copies(app, "requirements.txt") == ["./lib", "."]
    assert (app / "requirements.txt").read_text() == "six==1.17.0\n./lib\n.\n"


@pytest.mark.parametrize("lock_file, text, syntax", [
    ("Pipfile.lock", '{"default": {', "JSON"),
    ("Pipfile.lock", '["not", "a", "lock"]', "JSON"),
    ("uv.lock", "version = 1\n[[package]\nname = 'x'\n", "TOML"),
    ("poetry.lock", "[[package]]\nname = \n", "TOML"),
])
def test_malformed_locks_name_the_problem(tmp_path, lock_file, text, syntax):
    app = make_app(tmp_path, {lock_file: text})
    with pytest.raises(errors.SlugbuildError) as caught:
        check_syntax(app, lock_file, "relock")
    assert caught.value.code == "lock-file-malformed"
    assert syntax in caught.value.found


def test_rebuild_reasons_say_what_changed():
    before = {"files": {"requirements.txt": "a", "base.txt": "b"}, "runtime": "cpython-3.12.1",
              "runtime_key": "k", "installer": "pip 25", "installer_config_sha256": "x",
              "layer_format": 2}
    after = {**before, "files": {"requirements.txt": "c", "extra.txt": "d"},
             "runtime": "cpython-3.12.2", "installer_config_sha256": "y"}
    assert rebuild_reasons(before, after) == [
        "base.txt is no longer read",
        "extra.txt is new",
        "The contents of requirements.txt changed",
        "The Python runtime changed (cpython-3.12.1 -> cpython-3.12.2)",
        "The installer config vars (PIP_*, UV_*) changed",
    ]
    assert rebuild_reasons(before, dict(before)) == []


def test_constraints_from_a_slug_json(tmp_path):
    good = tmp_path / "slug.json"
    good.write_text(json.dumps({"packages": [{"name": "six", "version": "1.16.0"},
                                             {"name": "Flask", "version": "3.1.3"}]}))
    assert constraints_from_slug_json(good) == "Flask==3.1.3\nsix==1.16.0\n"
    for content in ("not json", json.dumps({"process_types": {}}),
                    json.dumps({"packages": [{"name": "six"}]})):
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(errors.SlugbuildError) as caught:
            constraints_from_slug_json(bad)
        assert caught.value.code == "constraints-unusable"
    with pytest.raises(errors.SlugbuildError):
        constraints_from_slug_json(tmp_path / "missing.json")


@pytest.mark.parametrize("head", [
    "#!/bin/sh\n'''exec' '/very/long/build/python3.12' \"$0\" \"$@\"\n' '''\n",  # pip
    "#!/bin/sh\n# coding: utf-8\n'''exec' \"$(printf %b '\\0057')\" \"$0\" \"$@\"\n' '''\n",  # uv
    "#!/very/long/build/bin/python3.12\n",
])
def test_installer_trampolines_become_relocatable(tmp_path, head):
    from slugbuild.relocate import make_scripts_relocatable

    script = tmp_path / "bottle.py"
    script.write_text(head + "import sys\nprint(sys.argv)\n")
    assert make_scripts_relocatable(tmp_path, "python3.12") == [script]
    text = script.read_text()
    assert "/very/long" not in text and "printf" not in text
    assert text.endswith("' '''\nimport sys\nprint(sys.argv)\n")


@pytest.mark.parametrize("lock_file, text", [
    ("uv.lock", 'version = 1\n[[package]]\nname = "app"\nsource = { virtual = "." }\n'
                '[[package]]\nname = "greet"\nsource = { directory = "libs/greet" }\n'),
    ("poetry.lock", '[[package]]\nname = "greet"\nversion = "1.0"\n'
                    '[package.source]\ntype = "directory"\nurl = "libs/greet"\n'),
    ("Pipfile.lock", '{"default": {"greet": {"path": "./libs/greet", "editable": true},'
                     ' "six": {"version": "==1.17.0"}}}'),
])
def test_local_packages_in_locks_key_the_layer(tmp_path, lock_file, text):
    from slugbuild.installers.locks import local_source_files

    app = make_app(tmp_path, {lock_file: text, "libs/greet/pyproject.toml": "",
                              "libs/greet/greet/__init__.py": "",
                              "libs/greet/greet/__pycache__/x.pyc": "",
                              "libs/greet/greet.egg-info/PKG-INFO": ""})
    assert local_source_files(app, lock_file) == ["libs/greet/greet/__init__.py",
                                                  "libs/greet/pyproject.toml"]
    (app / lock_file).write_text(text.replace("libs/greet", "../outside"))
    with pytest.raises(errors.SlugbuildError) as caught:
        local_source_files(app, lock_file)
    assert caught.value.code == "requirements-outside-app"


def test_exported_local_packages_are_installed_apart_and_not_editable(tmp_path):
    from slugbuild.installers.requirements import local_requirement, split_local_lines

    hashed, local = split_local_lines(
        "-e ./libs/a\n./libs/b ; python_version >= '3'\nsix==1.17.0 \\\n    --hash=sha256:ab\n"
        "-e .\n.\ngreet @ file:///x/libs/greet ; python_version >= \"3.8\"\n"
        "pinned @ file:///x/y.whl --hash=sha256:cd\n")
    assert local == ["./libs/a", "./libs/b ; python_version >= '3'", ".", ".",
                     'greet @ file:///x/libs/greet ; python_version >= "3.8"']
    assert hashed == ("six==1.17.0 \\\n    --hash=sha256:ab\n"
                      "pinned @ file:///x/y.whl --hash=sha256:cd\n")
    assert local_requirement("./libs/b ; python_version >= '3'", tmp_path) == (
        f"{tmp_path}/libs/b ; python_version >= '3'")
    assert local_requirement(".", tmp_path) == str(tmp_path)
    assert local_requirement("greet @ file:///x", tmp_path) == "greet @ file:///x"


def test_lock_refuses_an_app_another_manager_locks(tmp_path):
    from slugbuild.lock import lock_app
    from slugbuild.log import Reporter

    app = make_app(tmp_path / "app", {"requirements.in": "six\n", "uv.lock": "version = 1\n"})
    with pytest.raises(errors.SlugbuildError) as caught:
        lock_app(app, cache_dir=tmp_path / "cache", reporter=Reporter(quiet=True))
    assert caught.value.code == "lock-would-conflict" and "uv lock" in caught.value.action
    assert not (app / "requirements.txt").exists()


@pytest.mark.parametrize("tool", ["pip", "uv"])
def test_index_credentials_go_through_the_environment_not_the_command_line(
        tmp_path, monkeypatch, tool):
    # A command line is readable by every user of the machine (ps); an environment is not.
    import sys
    from pathlib import Path

    from slugbuild.cache import Cache
    from slugbuild.installers import InstallJob, common, uv
    from slugbuild.log import Reporter

    calls = []
    # Installs run through common.run_install_tool (sealed or not); uv's own runs too.
    monkeypatch.setattr(common, "run_tool", lambda argv, *a, **k: calls.append((argv, a[1])))
    monkeypatch.setattr(uv, "run_tool", lambda argv, *a, **k: calls.append((argv, a[1])))
    index = "https://user:s3cret@index.example/simple"
    extra = "https://user:t0ken@extra.example/simple"
    app = make_app(tmp_path / "app", {"requirements.txt": "six==1.17.0\n"})
    job = InstallJob(python=Path(sys.executable), python_version="3.12.7", app_dir=app,
                     lock_file="requirements.txt",
                     config_vars={"PIP_INDEX_URL": index, "PIP_EXTRA_INDEX_URL": extra},
                     cache=Cache(tmp_path / "cache"), reporter=Reporter(quiet=True),
                     scratch=tmp_path)
    installer = PipInstaller()
    installer.install(job, installer.plan(app, "requirements.txt",
                                          {"SLUGBUILD_PIP_INSTALLER": tool}))
    (argv, env), = calls
    assert not any("s3cret" in str(arg) or "t0ken" in str(arg) for arg in argv)
    if tool == "uv":
        assert env["UV_INDEX_URL"] == index and env["UV_EXTRA_INDEX_URL"] == extra
        # A same-named package on a later index never wins (docs/package-managers.md).
        assert env["UV_INDEX_STRATEGY"] == "first-index"
    else:
        assert env["PIP_INDEX_URL"] == index and env["PIP_EXTRA_INDEX_URL"] == extra


# --- lock files read without their package manager ------------------------------------

def _lock_app(tmp_path, name: str):
    from ..helpers import FIXTURE_APPS, copy_app

    return copy_app(FIXTURE_APPS / name, tmp_path / name)


def _pinned_names(pins: str) -> list[str]:
    return [line.split("==")[0] for line in pins.splitlines()
            if line and not line.startswith((" ", "-"))]


def test_current_poetry_lock_gives_its_main_group_without_poetry(tmp_path):
    from slugbuild.installers.poetry import locked_main_pins

    pins = locked_main_pins(_lock_app(tmp_path, "poetry-falcon"))
    assert _pinned_names(pins) == ["falcon", "gunicorn"]  # not iniconfig (dev group)
    assert "--hash=sha256:" in pins


def _edit_poetry_lock(app, edit) -> None:
    from slugbuild.toml_compat import tomllib

    lock = tomllib.loads((app / "poetry.lock").read_text())
    text = (app / "poetry.lock").read_text()
    first = lock["package"][0]
    anchor = f'name = "{first["name"]}"\nversion = "{first["version"]}"\n'
    (app / "poetry.lock").write_text(text.replace(anchor, anchor + edit, 1))


@pytest.mark.parametrize("change", [
    "stale", "lock 2.0", "git source", "extra marker", "no files", "bad marker",
])
def test_poetry_lock_is_left_to_poetry_when_it_cannot_prove_itself(tmp_path, change):
    from slugbuild.installers.poetry import locked_main_pins
    from slugbuild.toml_compat import tomllib

    app = _lock_app(tmp_path, "poetry-falcon")
    lock = app / "poetry.lock"
    if change == "stale":
        with open(app / "pyproject.toml", "a") as handle:
            handle.write("[tool.poetry.group.docs.dependencies]\nsix = '*'\n")
    elif change == "lock 2.0":
        lock.write_text(lock.read_text().replace('lock-version = "2.1"', 'lock-version = "2.0"'))
    elif change == "git source":
        head, _, rest = lock.read_text().partition("files = [")  # the first package's
        lock.write_text(head + 'source = { type = "git", url = "https://example.invalid/x" }\n'
                        "files = [" + rest)
    elif change == "extra marker":
        _edit_poetry_lock(app, 'markers = "extra == \\"speed\\""\n')
    elif change == "no files":
        text = lock.read_text()
        head, _, rest = text.partition("files = [")
        lock.write_text(head + "files = []\nx-files = [" + rest)
    elif change == "bad marker":
        _edit_poetry_lock(app, 'markers = "python_version >>> \\"3\\""\n')
    tomllib.loads(lock.read_text())  # still a lock; only slugbuild cannot vouch for it
    assert locked_main_pins(app) is None


def test_poetry_group_markers_pick_the_main_groups_marker(tmp_path):
    from slugbuild.installers.poetry import locked_main_pins

    app = _lock_app(tmp_path, "poetry-falcon")
    _edit_poetry_lock(app, 'markers = {main = "sys_platform == \\"linux\\"", '
                           'dev = "sys_platform == \\"win32\\""}\n')
    first_line = locked_main_pins(app).splitlines()[0]
    assert first_line.endswith('; sys_platform == "linux" \\'), first_line


@pytest.mark.parametrize("constraint, allowed, refused", [
    ("^3.12", ["3.12.0", "3.13.1"], ["3.11.9", "4.0.0"]),
    ("~3.12", ["3.12.7"], ["3.13.0", "3.11.0"]),
    (">=3.9, <3.12", ["3.9.0", "3.11.9"], ["3.12.0"]),
    (">= 3.9 < 3.12", ["3.10.1"], ["3.12.1"]),
    ("^3.8 || ~3.13", ["3.8.1", "3.13.2"], ["3.7.9"]),
    ("3.12", ["3.12.7"], ["3.13.0"]),
    ("3.12.*", ["3.12.7"], ["3.11.0"]),
    ("~=3.11", ["3.11.2", "3.13.0"], ["3.10.0"]),
    ("*", ["3.8.0", "3.13.0"], []),
    ("==3.12", ["3.12.7"], ["3.13.0"]),
    ("~3rc1", ["3.12.0"], ["4.0.0"]),
    (">3.12", ["3.12.7"], ["3.12.0"]),
])
def test_poetry_python_constraints_read_as_pep440(constraint, allowed, refused):
    from packaging.version import Version

    from slugbuild.installers.poetry import poetry_constraint_to_pep440

    alternatives = poetry_constraint_to_pep440(constraint)
    for version, expected in [(v, True) for v in allowed] + [(v, False) for v in refused]:
        assert any(s.contains(Version(version)) for s in alternatives) is expected, version


def test_runtime_the_poetry_project_excludes_is_refused(tmp_path):
    from slugbuild.installers.poetry import check_python_allowed

    app = _lock_app(tmp_path, "poetry-falcon")  # python = "^3.12"
    check_python_allowed(app, "3.12.7")
    with pytest.raises(errors.SlugbuildError) as caught:
        check_python_allowed(app, "3.11.7")
    error = caught.value
    assert error.code == "python-not-allowed-by-project"
    assert "3.11.7" in error.found and "^3.12" in error.found
    (app / "pyproject.toml").write_text('[project]\nname = "x"\nrequires-python = "==3.11"\n')
    check_python_allowed(app, "3.11.7")  # read as Poetry reads it: every 3.11.x
    # [tool.poetry.dependencies] python narrows requires-python, as in poetry-core.
    (app / "pyproject.toml").write_text('[project]\nname = "x"\nrequires-python = ">=3.9"\n'
                                        '[tool.poetry.dependencies]\npython = "~3.11"\n')
    with pytest.raises(errors.SlugbuildError):
        check_python_allowed(app, "3.12.7")


def test_poetry_python_constraint_slugbuild_cannot_read_leaves_the_lock_to_poetry(tmp_path):
    from slugbuild.installers.poetry import content_hash, locked_main_pins
    from slugbuild.toml_compat import tomllib

    app = _lock_app(tmp_path, "poetry-falcon")
    pyproject = app / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('python = "^3.12"', 'python = "3"'))
    lock = (app / "poetry.lock").read_text()
    old = tomllib.loads(lock)["metadata"]["content-hash"]
    (app / "poetry.lock").write_text(lock.replace(old, content_hash(tomllib.loads(
        pyproject.read_text()))))
    assert locked_main_pins(app) is None


def test_current_pipfile_lock_gives_its_packages_without_pipenv(tmp_path):
    from slugbuild.installers.pipenv import locked_default_pins

    pins = locked_default_pins(_lock_app(tmp_path, "flask-pipenv"))
    lines = pins.splitlines()
    assert lines[0] == "-i https://pypi.org/simple"
    assert "flask" in _pinned_names(pins) and "iniconfig" not in _pinned_names(pins)
    assert all(" --hash=sha256:" in line for line in lines[1:])


@pytest.mark.parametrize("change", ["stale", "case only", "no pipfile", "vcs entry",
                                    "unpinned entry", "no sources"])
def test_pipfile_lock_is_left_to_pipenv_when_it_cannot_prove_itself(tmp_path, change):
    from slugbuild.installers.pipenv import locked_default_pins

    app = _lock_app(tmp_path, "flask-pipenv")
    lock = json.loads((app / "Pipfile.lock").read_text())
    if change in ("stale", "case only"):
        pipfile = (app / "Pipfile").read_text()
        edited = (pipfile.replace("flask =", "Flask =") if change == "case only"
                  else pipfile + 'requests = "*"\n')
        (app / "Pipfile").write_text(edited)
    elif change == "no pipfile":
        (app / "Pipfile").unlink()
    elif change == "vcs entry":
        lock["default"]["flask"] = {"git": "https://example.invalid/flask.git", "ref": "abc"}
    elif change == "no sources":
        del lock["_meta"]["sources"]  # pipenv requirements fails on such a lock
    else:
        lock["default"]["flask"]["version"] = "*"
    (app / "Pipfile.lock").write_text(json.dumps(lock))
    pins = locked_default_pins(app)
    # A change of case only is no change to Pipenv (it hashes canonical names).
    assert (pins is not None) is (change == "case only")


# --- the package-manager table ---------------------------------------------------------

def test_every_row_of_the_table_is_what_detection_and_the_installers_use(tmp_path):
    from slugbuild.detect import detect
    from slugbuild.installers import installer_for
    from slugbuild.installers.conformance import INSTALLERS
    from slugbuild.package_managers import PACKAGE_MANAGERS, by_lock_file, relock_command

    assert [cls.name for cls in INSTALLERS] == [m.name for m in PACKAGE_MANAGERS]
    for manager in PACKAGE_MANAGERS:
        assert installer_for(manager.name).name == manager.name
        assert by_lock_file(manager.lock_file) is manager
        app = make_app(tmp_path / manager.name, {manager.lock_file: ""})
        assert detect(app).package_manager == manager.name
        if manager.relock is not None:
            assert relock_command(manager.name) == manager.relock
    with pytest.raises(KeyError):
        relock_command("pip")  # requirements.txt has no lock to rewrite


@pytest.mark.parametrize("arch, libc, expected", [
    ("x86_64", "glibc2.36", "x86_64-manylinux_2_36"),
    ("aarch64", "glibc2.17", "aarch64-manylinux_2_17"),
    ("x86_64", "glibc2.5", "x86_64-manylinux_2_17"),
    ("x86_64", "glibc2.99", "x86_64-manylinux_2_40"),
    ("x86_64", "musl1.2", "x86_64-unknown-linux-musl"), ("riscv64", "glibc2.36", "linux"),
])
def test_lock_resolves_for_this_machines_platform(arch, libc, expected):
    from slugbuild.lock import uv_platform
    from slugbuild.platform_info import Platform

    assert uv_platform(Platform("s", "debian", "12", arch, libc)) == expected


@pytest.mark.parametrize("files, version", [
    ({".python-version": "3.10\n"}, "3.10"), ({"runtime.txt": "python-3.12.4\n"}, "3.12.4"),
    ({"pyproject.toml": "[project]\nrequires-python = '>=3.9,<3.12'\n"}, "3.11"),
])
def test_lock_resolves_for_the_version_the_build_would_use(tmp_path, files, version):
    from slugbuild.cache import Cache
    from slugbuild.lock import lock_target

    app = make_app(tmp_path / "app", files)
    assert lock_target(app, Cache(tmp_path / "cache"))[0] == version
    app = make_app(tmp_path / "old", {"pyproject.toml": "[project]\nrequires-python = '<3.5'\n"})
    with pytest.raises(errors.SlugbuildError) as caught:
        lock_target(app, Cache(tmp_path / "cache"))
    assert caught.value.code == "lock-no-python"


def test_a_tool_install_that_leaves_a_package_out_is_one_error_and_caches_nothing(
        tmp_path, monkeypatch):
    """uv exiting 0 without installing a pinned package of the tool: the error says which
    package is missing (not an exit code), and no tool layer is published."""
    import sys
    from pathlib import Path

    from slugbuild.cache import Cache
    from slugbuild.installers import InstallJob, tools
    from slugbuild.log import Reporter

    monkeypatch.setattr(tools, "run_install_tool", lambda *args, **kwargs: "")
    cache = Cache(tmp_path / "cache")
    job = InstallJob(python=Path(sys.executable), python_version="3.12.0", app_dir=tmp_path,
                     lock_file="-", config_vars={}, cache=cache,
                     reporter=Reporter(quiet=True), scratch=tmp_path)
    with pytest.raises(errors.SlugbuildError) as caught:
        tools.ensure_tool("poetry", job)
    error = caught.value
    assert error.code == "manager-tool-failed"
    assert "is not among what it installed" in error.render()
    assert "exit code" not in error.render()
    assert not [path for path in (tmp_path / "cache" / "tools").rglob("*")
                if path.name == "tree"]
