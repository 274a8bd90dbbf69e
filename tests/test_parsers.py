"""Fast tests of the pure parts: Procfile, version files, detection, config vars."""

from __future__ import annotations

import pytest

from slugbuild import errors
from slugbuild.config_vars import load_config_vars, parse_env_assignments
from slugbuild.detect import detect, find_manage_py, require_package_manager
from slugbuild.procfile import parse_procfile
from slugbuild.slug.metadata import metadata_path_for
from slugbuild.versions import PythonRequest, check_supported, pick, read_request

from .helpers import make_app


def test_procfile_types_comments_and_blank_lines():
    text = "# processes\n\nweb: gunicorn app:app --bind 0.0.0.0:$PORT\nworker_2:  celery -A x\n"
    assert parse_procfile(text) == {
        "web": "gunicorn app:app --bind 0.0.0.0:$PORT",
        "worker_2": "celery -A x",
    }


def test_procfile_command_may_contain_colons():
    assert parse_procfile("web: uvicorn main:app --host 0.0.0.0")["web"] == (
        "uvicorn main:app --host 0.0.0.0"
    )


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("web gunicorn app", 1, "expected `name: command`"),
        ("web: ok\nbad name: x", 2, "not a valid process type name"),
        ("web:", 1, "has no command"),
        ("web: a\nweb: b", 2, "declared twice"),
    ],
)
def test_procfile_malformed_line_is_named(text, line, words):
    with pytest.raises(errors.SlugbuildError) as caught:
        parse_procfile(text)
    assert caught.value.code == "procfile-malformed"
    assert f"line {line}" in caught.value.found
    assert words in caught.value.found


@pytest.mark.parametrize(
    ("files", "requested", "source"),
    [
        ({".python-version": "3.12\n"}, "3.12", ".python-version"),
        ({".python-version": "# pinned\n3.12.1  # patch\n\n"}, "3.12.1", ".python-version"),
        ({".python-version": "\ufeff3.11\n"}, "3.11", ".python-version"),
        ({"runtime.txt": "python-3.12.1\n"}, "3.12.1", "runtime.txt"),
        ({"runtime.txt": "python-3.11.7", ".python-version": "3.12"}, "3.11.7", "runtime.txt"),
        ({}, "3.14", None),
    ],
)
def test_version_sources(tmp_path, files, requested, source):
    make_app(tmp_path, files)
    request = read_request(tmp_path)
    assert (request.requested, request.source_file) == (requested, source)


@pytest.mark.parametrize(
    "files",
    [
        {".python-version": "3.12\n3.11\n"},
        {".python-version": "python-3.12"},
        {".python-version": "3.012"},
        {".python-version": "latest"},
        {".python-version": ""},
        {"runtime.txt": "3.12.1"},
        {"runtime.txt": "python-3.12.1\npython-3.11"},
    ],
)
def test_bad_version_files(tmp_path, files):
    make_app(tmp_path, files)
    with pytest.raises(errors.SlugbuildError) as caught:
        read_request(tmp_path)
    assert caught.value.code == "invalid-python-version"
    assert next(iter(files)) in caught.value.title


def test_pick_newest_patch_and_exact():
    available = ["3.11.7", "3.12.1", "3.12.10", "3.13.0"]
    assert pick(PythonRequest("3.12", ".python-version"), available) == "3.12.10"
    assert pick(PythonRequest("3.12.1", ".python-version"), available) == "3.12.1"
    assert pick(PythonRequest("3.12.2", ".python-version"), available) is None
    assert pick(PythonRequest("3.1", ".python-version"), available) is None


def test_end_of_life_refused():
    with pytest.raises(errors.SlugbuildError) as caught:
        check_supported(PythonRequest("3.8", ".python-version"))
    assert caught.value.code == "python-version-eol"
    with pytest.raises(errors.SlugbuildError):
        check_supported(PythonRequest("3.9", ".python-version"))
    check_supported(PythonRequest("3.9", ".python-version"), allow_eol=True)
    check_supported(PythonRequest("3.10", ".python-version"))


def test_detect(tmp_path):
    with pytest.raises(errors.SlugbuildError) as caught:
        detect(tmp_path)
    assert caught.value.code == "not-a-python-app"
    make_app(tmp_path, {"app.py": "print(1)\n"})
    info = detect(tmp_path)
    assert info.markers == ("app.py",)
    with pytest.raises(errors.SlugbuildError) as caught:
        require_package_manager(info)
    assert caught.value.code == "no-package-manager"
    make_app(tmp_path, {"requirements.txt": "Django==5.2\n", "src/site/manage.py": ""})
    info = detect(tmp_path)
    assert info.package_manager == "pip"
    assert info.manage_py == "src/site/manage.py"
    assert info.is_django


def test_manage_py_shallowest_wins_and_depth_limit(tmp_path):
    make_app(tmp_path, {"a/b/c/d/manage.py": "", "z/manage.py": "", "b/a/manage.py": ""})
    assert find_manage_py(tmp_path) == "z/manage.py"
    deep = make_app(tmp_path / "deep", {"a/b/c/d/manage.py": ""})
    assert find_manage_py(deep) is None


def test_config_vars(tmp_path):
    env_dir = make_app(tmp_path / "env", {"SECRET_KEY": "s3cret\n", "DEBUG": "0"})
    config = load_config_vars(parse_env_assignments(["DEBUG=1", "URL=a=b"]), env_dir)
    assert config == {"SECRET_KEY": "s3cret", "DEBUG": "1", "URL": "a=b"}
    for bad in (["NOEQUALS"], ["1ABC=x"], ["A-B=x"]):
        with pytest.raises(errors.SlugbuildError) as caught:
            load_config_vars(parse_env_assignments(bad))
        assert caught.value.code == "invalid-config-var"
    with pytest.raises(errors.SlugbuildError) as caught:
        load_config_vars({}, tmp_path / "missing")
    assert caught.value.code == "env-dir-missing"


def test_metadata_path():
    from pathlib import Path

    assert metadata_path_for(Path("/x/slug.tgz")) == Path("/x/slug.json")
    assert metadata_path_for(Path("/x/app.tar.gz")) == Path("/x/app.json")
    assert metadata_path_for(Path("/x/app")) == Path("/x/app.json")


def test_every_error_renders_title_found_and_action():
    for kind in errors.CATALOG.values():
        fields = {name: "X" for name in kind.fields}
        # every form: the kind's own and each variant's
        for variant in ([None] if kind.found else []) + list(kind.variants):
            rendered = kind.error(variant=variant, **fields).render()
            assert rendered.startswith(f" !     Error [{kind.code}]: ")
            assert all(line.startswith(" !") for line in rendered.splitlines())


def test_requirements_includes_are_followed(tmp_path):
    from slugbuild.installers.requirements import requirements_files

    app = make_app(tmp_path, {
        "requirements.txt": "-rreqs/base.txt\n--constraint=constraints.txt\nsix\n",
        "reqs/base.txt": "-r ../common.txt  # shared\n",
        "common.txt": "idna\n-r requirements.txt\n",
        "constraints.txt": "six<2\n",
    })
    assert requirements_files(app, "requirements.txt") == [
        "requirements.txt", "reqs/base.txt", "constraints.txt", "common.txt"]
    (app / "common.txt").write_text("-r ../../outside.txt\n")
    with pytest.raises(errors.SlugbuildError) as caught:
        requirements_files(app, "requirements.txt")
    assert caught.value.code == "requirements-outside-app"


def test_framework_detection_matches_whole_names(tmp_path):
    make_app(tmp_path, {"requirements.txt": "djangorestframework\nflask-cors\nfastapi[all]\n"})
    assert detect(tmp_path).frameworks == ("fastapi",)


def test_errors_doc_is_up_to_date():
    import subprocess
    import sys

    from .helpers import REPO

    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_errors_doc.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
