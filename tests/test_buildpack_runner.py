"""slugbuild running Heroku-API buildpacks: paths, git URLs, .buildpacks, failures."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from slugbuild import compile_app, errors
from slugbuild.log import Reporter

from .helpers import REPO, make_app, run_cli

BUILDPACKS = REPO / "fixtures" / "buildpacks"
PYTHON_APP = {
    ".python-version": "3.12\n",
    "requirements.txt": "six==1.17.0\n",
    "Procfile": "web: python -m http.server $PORT\n",
}


def _build(app, out, cache_dir, **kwargs):
    return compile_app(app, out, cache_dir=cache_dir, reporter=Reporter(quiet=True), **kwargs)


def test_two_buildpacks_in_order_with_export_release_and_cache(tmp_path):
    app = make_app(tmp_path / "app", {"hello.txt": "hi\n", "Procfile": "worker: echo mine\n"})
    cache = tmp_path / "cache"
    packs = [str(BUILDPACKS / "hello"), str(BUILDPACKS / "uses-export")]
    first = _build(app, tmp_path / "one.tgz", cache, buildpacks=packs,
                   env={"GREETING": "there"})
    log = "\n".join(first.log)
    assert "Hello app detected" in log and "build number 1" in log
    # The Procfile wins for `worker`; `web` comes from hello's bin/release.
    assert first.process_types == {"web": "bin/hello", "worker": "echo mine"}
    meta = json.loads(first.metadata_path.read_text())
    assert meta["release_config_vars"] == {"FROM_RELEASE": "yes: quoted"}
    assert [b["buildpack"] for b in meta["buildpacks"]] == packs
    assert meta["buildpack_provided_description"] == "Uses export"
    assert meta["runtime"] is None and meta["packages"] == []
    # The buildpack directories themselves were never written to.
    assert not (BUILDPACKS / "hello" / "export").exists()
    again = _build(app, tmp_path / "two.tgz", cache, buildpacks=packs,
                   env={"GREETING": "there"})
    assert "build number 2" in "\n".join(again.log)  # CACHE_DIR persists per buildpack

    result = run_cli("run", first.slug_path, "web")
    # bin/hello prints and exits: a web process that never listened is not a success.
    assert result.returncode == 1 and "exited without serving" in result.stderr, result.stderr
    assert result.stdout.strip() == "hello, there"
    shown = run_cli("run", first.slug_path, "worker")
    assert shown.stdout.strip() == "mine"


@pytest.mark.slow
def test_dot_buildpacks_mixes_a_buildpack_with_the_builtin_python(tmp_path, cache_dir):
    hello = shutil.copytree(BUILDPACKS / "hello", tmp_path / "app" / "vendor" / "hello")
    assert hello.is_dir()
    app = make_app(tmp_path / "app", {
        **PYTHON_APP, "hello.txt": "hi\n",
        ".buildpacks": "# mine first\nvendor/hello\nheroku/python\n",
    })
    result = _build(app, tmp_path / "s.tgz", cache_dir)
    meta = json.loads(result.metadata_path.read_text())
    assert [b["buildpack"] for b in meta["buildpacks"]] == ["vendor/hello", "heroku/python"]
    assert meta["buildpack_provided_description"] == "Python"
    assert result.runtime["resolved"].startswith("3.12")
    assert {"name": "six", "version": "1.17.0"} in result.packages
    assert result.process_types == {"web": "python -m http.server $PORT"}
    # Later buildpacks see the earlier ones' work; the slug holds both.
    import tarfile

    with tarfile.open(result.slug_path) as tar:
        names = set(tar.getnames())
    assert {"./bin/hello", "./.heroku/python/bin/python3.12"} <= names


def test_git_url_with_ref(tmp_path):
    repo = shutil.copytree(BUILDPACKS / "hello", tmp_path / "hello-bp")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "v1"],
                 ["tag", "v1"]):
        subprocess.run([*git, *argv], cwd=repo, check=True)
    (repo / "bin" / "detect").write_text("#!/usr/bin/env bash\nexit 1\n")
    subprocess.run([*git, "commit", "-qam", "break detect"], cwd=repo, check=True)
    app = make_app(tmp_path / "app", {"hello.txt": "hi\n"})
    good = _build(app, tmp_path / "ok.tgz", tmp_path / "cache",
                  buildpacks=[f"file://{repo}#v1"])
    assert good.process_types == {"web": "bin/hello"}
    with pytest.raises(errors.SlugbuildError) as caught:
        _build(app, tmp_path / "bad.tgz", tmp_path / "cache", buildpacks=[f"file://{repo}"])
    assert caught.value.code == "buildpack-detect-failed"
    with pytest.raises(errors.SlugbuildError) as caught:
        _build(app, tmp_path / "bad.tgz", tmp_path / "cache",
               buildpacks=[f"file://{repo}#no-such-tag"])
    assert caught.value.code == "buildpack-fetch-failed"


@pytest.mark.parametrize(
    ("buildpack", "title", "words"),
    [
        ("fails-detect", "App not compatible with buildpack", "no foo here"),
        ("fails-compile", "A buildpack failed to compile the app", "boom: the compiler broke"),
        ("does-not-exist", "Not a buildpack", "has no bin/compile"),
    ],
)
def test_failing_buildpacks_give_one_clear_error(tmp_path, buildpack, title, words):
    app = make_app(tmp_path / "app", {"hello.txt": "hi\n"})
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("compile", app, "-o", out / "slug.tgz", "--cache-dir", tmp_path / "c",
                     "--buildpack", str(BUILDPACKS / buildpack))
    assert result.returncode == 1
    assert result.stderr.count(" !     Error [") == 1
    assert title in result.stderr and words in result.stderr
    assert list(out.iterdir()) == []
    assert list((tmp_path / "c" / "tmp").iterdir()) == []


def test_release_output_must_be_a_mapping(tmp_path):
    pack = shutil.copytree(BUILDPACKS / "hello", tmp_path / "bp")
    (pack / "bin" / "release").write_text("#!/usr/bin/env bash\nprintf -- '- a\\n- b\\n'\n")
    app = make_app(tmp_path / "app", {"hello.txt": "hi\n"})
    with pytest.raises(errors.SlugbuildError) as caught:
        _build(app, tmp_path / "s.tgz", tmp_path / "c", buildpacks=[str(pack)])
    assert caught.value.code == "buildpack-release-invalid"
    assert not (tmp_path / "s.tgz").exists()


def test_cli_relative_paths_are_relative_to_the_working_directory(tmp_path):
    app = make_app(tmp_path / "app", {"hello.txt": "hi\n"})
    result = run_cli("compile", app, "-o", tmp_path / "s.tgz", "--cache-dir", tmp_path / "c",
                     "--buildpack", "fixtures/buildpacks/hello", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert Path(tmp_path / "s.tgz").is_file()


def _inline_buildpack(directory: Path, compile_body: str, release: str = "") -> Path:
    (directory / "bin").mkdir(parents=True)
    scripts = {"detect": "echo Inline\n", "compile": compile_body}
    if release:
        scripts["release"] = release
    for name, body in scripts.items():
        script = directory / "bin" / name
        script.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
        script.chmod(0o755)
    return directory


@pytest.mark.slow
def test_python_after_a_buildpack_sees_its_files_and_exports(tmp_path, cache_dir):
    # The app itself is not Python: the first buildpack writes what makes it one,
    # and exports a variable and a tool that the Python stages' hooks use.
    writer = _inline_buildpack(tmp_path / "writer", """
printf '3.12\\n' > "$1/.python-version"
printf 'six==1.17.0\\n' > "$1/requirements.txt"
mkdir -p "$1/tools" && printf '#!/bin/sh\\necho tool-ran\\n' > "$1/tools/mytool"
chmod +x "$1/tools/mytool"
bp_dir=$(cd "$(dirname "$0")/.."; pwd)
printf 'export PATH="%s/tools:$PATH"\\nexport FROM_WRITER=yes\\n' "$1" > "$bp_dir/export"
""")
    app = make_app(tmp_path / "app", {
        "index.html": "<p>hi</p>\n",
        "bin/post_compile": "#!/usr/bin/env bash\nmytool > from-hook.txt\n"
                            "echo \"$FROM_WRITER\" >> from-hook.txt\n",
    })
    (app / "bin" / "post_compile").chmod(0o755)
    result = _build(app, tmp_path / "s.tgz", cache_dir, buildpacks=[str(writer), "python"])
    assert {"name": "six", "version": "1.17.0"} in result.packages
    import tarfile

    with tarfile.open(result.slug_path) as tar:
        hook_output = tar.extractfile("./from-hook.txt").read().decode()
    assert hook_output == "tool-ran\nyes\n"


def test_buildpack_only_slug_and_credentials(tmp_path):
    from slugbuild.buildpack_runner import BuildpackRef, write_env_dir

    ref = BuildpackRef("https://user:s3cret@git.example.invalid/bp.git#v1")
    assert "s3cret" not in ref.shown and "s3cret" not in ref.cache_name
    assert ref.shown == "https://***@git.example.invalid/bp.git#v1"
    env_dir = write_env_dir(tmp_path / "env", {"TOKEN": "x"})
    assert (env_dir.stat().st_mode & 0o777) == 0o700
    assert ((env_dir / "TOKEN").stat().st_mode & 0o777) == 0o600

    app = make_app(tmp_path / "app", {"hello.txt": "hi\n"})
    slug = _build(app, tmp_path / "s.tgz", tmp_path / "c",
                  buildpacks=[str(BUILDPACKS / "hello"), str(BUILDPACKS / "hello")])
    shown = run_cli("inspect", slug.slug_path)  # no runtime in this slug
    assert shown.returncode == 0, shown.stderr
    assert "bin/hello" in shown.stdout
