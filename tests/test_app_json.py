"""app.json: read and checked on every build, scripts recorded in slug.json, env applied
only with --app-json-env (as Heroku's app setup and review apps do)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from slugbuild import compile_app, errors
from slugbuild.app_json import read_app_json
from slugbuild.log import Reporter

from .helpers import MINIMAL, assert_clean_failure, make_app, read_member

APP_JSON = {
    "name": "demo",
    "env": {
        "GREETING": {"description": "what the app says", "value": "hello"},
        "SHORT": "plain",
        "SECRET_KEY": {"generator": "secret"},
        "OPTIONAL": {"required": False},
        "GIVEN": {"description": "given to the build"},
    },
    "scripts": {"postdeploy": "python manage.py seed",
                "pr-predestroy": {"command": "./bin/teardown", "size": "basic"},
                "dokku": {"predeploy": "python manage.py migrate"}},
}


def _app(directory: Path, manifest: object) -> Path:
    return make_app(directory, {"app.json": json.dumps(manifest)})


def test_env_defaults_apply_as_an_app_setup_would(tmp_path: Path) -> None:
    manifest = read_app_json(_app(tmp_path, APP_JSON))
    assert manifest is not None
    added = manifest.build_env({"GIVEN": "mine", "GREETING": "given wins"})
    assert added["SHORT"] == "plain"
    assert "GREETING" not in added and "GIVEN" not in added
    assert re.fullmatch(r"[0-9a-f]{64}", added["SECRET_KEY"])
    assert "OPTIONAL" not in added
    assert manifest.scripts == {"postdeploy": "python manage.py seed",
                                "pr-predestroy": "./bin/teardown",
                                "dokku.predeploy": "python manage.py migrate"}
    with pytest.raises(errors.SlugbuildError) as missing:
        manifest.build_env({})
    assert missing.value.code == errors.APP_JSON_ENV_REQUIRED.code
    assert "GIVEN" in missing.value.found


@pytest.mark.parametrize(("content", "variant_words"), [
    ("{not json", "is not JSON"),
    ("[]", "is not a JSON object"),
    ('{"env": []}', "`env` that is not an object"),
    ('{"env": {"X": 3}}', "neither a string nor an object"),
    ('{"env": {"X": {"value": 3}}}', "`value` that is not a string"),
    ('{"env": {"X": {"generator": "uuid"}}}', "generator 'uuid'"),
    ('{"scripts": "x"}', "`scripts` that is not an object"),
    ('{"scripts": {"postdeploy": ""}}', "scripts.postdeploy is not a command"),
    ('{"scripts": {"postdeploy": {"size": "basic"}}}', "scripts.postdeploy is not a command"),
])
def test_a_malformed_app_json_is_one_catalogue_error(tmp_path: Path, content: str,
                                                      variant_words: str) -> None:
    (tmp_path / "app.json").write_text(content)
    with pytest.raises(errors.SlugbuildError) as failed:
        read_app_json(tmp_path)
    assert failed.value.code == errors.APP_JSON_INVALID.code
    assert variant_words in failed.value.found


def test_a_build_fails_before_any_work_on_a_malformed_app_json(tmp_path: Path,
                                                               cache_dir: Path) -> None:
    app = make_app(tmp_path / "app", {**MINIMAL, ".buildpacks": "python\n",
                                      "app.json": '{"env": {"X": 3}}'})
    assert_clean_failure(app, cache_dir, tmp_path, "app-json-invalid")


@pytest.mark.slow
def test_scripts_are_recorded_and_env_applies_only_when_asked(tmp_path: Path,
                                                              cache_dir: Path) -> None:
    app = make_app(tmp_path / "app", {
        **MINIMAL, "app.json": json.dumps(APP_JSON),
        "bin/post_compile": "#!/bin/sh\necho \"$GREETING/$SHORT/${#SECRET_KEY}\" > seen.txt\n",
    })
    (app / "bin" / "post_compile").chmod(0o755)
    plain = compile_app(app, tmp_path / "plain.tgz", cache_dir=cache_dir,
                        reporter=Reporter(quiet=True))
    assert read_member(plain.slug_path, "./seen.txt") == "//0\n"
    recorded = json.loads(plain.metadata_path.read_text())["app_json"]
    assert recorded == {"scripts": {"dokku.predeploy": "python manage.py migrate",
                                    "postdeploy": "python manage.py seed",
                                    "pr-predestroy": "./bin/teardown"},
                        "env_applied": []}

    applied = compile_app(app, tmp_path / "applied.tgz", cache_dir=cache_dir,
                          env={"GIVEN": "x", "SHORT": "mine"}, app_json_env=True,
                          reporter=Reporter(quiet=True))
    assert read_member(applied.slug_path, "./seen.txt") == "hello/mine/64\n"
    metadata = json.loads(applied.metadata_path.read_text())
    assert metadata["app_json"]["env_applied"] == ["GREETING", "SECRET_KEY"]
    assert "hello" not in applied.metadata_path.read_text()  # names, never values
