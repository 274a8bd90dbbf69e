"""Procfile parsing, misspelled Procfiles, hook entries, .release round trips and
bin/release validation (quick: no slug is built)."""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from slugbuild import compile_app, errors
from slugbuild.errors import SlugbuildError
from slugbuild.log import Reporter
from slugbuild.procfile import check_procfile_name, hook_warnings, parse_procfile, read_procfile
from slugbuild.release import (
    parse_release_yaml,
    python_addons,
    release_yaml,
    slug_metadata,
    slug_release,
)
from slugbuild.slug.inspect import describe_slug

from .helpers import DJANGO_APP, copy_app, make_app, run_cli


def test_compound_and_shell_lines_are_kept_whole():
    text = ("web: python manage.py migrate && python manage.py collectstatic --no-input "
            "&& gunicorn site.wsgi\n"
            "worker: cd backend && VAR=x celery -A proj worker | tee log; echo done\n"
            "clock : python clock.py --port ${PORT:-5000} # not a comment for bash\n")
    assert parse_procfile(text) == {
        "web": "python manage.py migrate && python manage.py collectstatic --no-input "
               "&& gunicorn site.wsgi",
        "worker": "cd backend && VAR=x celery -A proj worker | tee log; echo done",
        "clock": "python clock.py --port ${PORT:-5000} # not a comment for bash",
    }


def test_a_byte_order_mark_is_not_part_of_the_first_name():
    assert parse_procfile("\ufeffweb: gunicorn app:app\r\nworker: celery\r\n") == {
        "web": "gunicorn app:app", "worker": "celery"}


@pytest.mark.parametrize("line, problem", [
    ("no colon at all", "expected `name: command`"),
    ("we b: x", "not a valid process type name"),
    ("web:", "has no command"),
    (": x", "not a valid process type name"),
])
def test_malformed_lines_name_the_problem(line, problem):
    with pytest.raises(SlugbuildError) as caught:
        parse_procfile(line + "\n")
    assert caught.value.code == "procfile-malformed"
    assert problem in caught.value.found


def test_long_lines_without_a_colon_parse_in_linear_time():
    # The old regex backtracked quadratically on spaces between words.
    hostile = "a" + " " * 30_000 + "b"
    started = time.perf_counter()
    with pytest.raises(SlugbuildError):
        parse_procfile(hostile)
    parse_procfile("web: " + "x " * 30_000)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("name", ["procfile", "PROCFILE", "ProcFile", "Procfile.txt"])
def test_a_misspelled_procfile_alone_is_an_error(tmp_path, name):
    app = make_app(tmp_path / "app", {name: "web: gunicorn app:app\n"})
    if (app / "Procfile").exists():  # a case-insensitive file system finds it anyway
        pytest.skip("case-insensitive file system")
    with pytest.raises(SlugbuildError) as caught:
        read_procfile(app)
    assert caught.value.code == "misspelled-procfile"
    assert name in caught.value.found and f"git mv {name} Procfile" in caught.value.action


def test_a_misspelled_procfile_beside_the_real_one_warns(tmp_path):
    app = make_app(tmp_path / "app", {"Procfile": "web: a\n", "procfile": "web: b\n",
                                      "Procfile.dev": "web: c\n"})
    warnings = check_procfile_name(app)
    assert len(warnings) == 1 and "procfile is not read" in warnings[0]
    assert read_procfile(app) == {"web": "a"}


def test_postdeploy_is_named_as_a_scalingo_hook_release_is_not():
    warnings = hook_warnings({"web": "x", "postdeploy": "python manage.py migrate"})
    assert len(warnings) == 1
    assert "Scalingo" in warnings[0] and "postdeploy_command" in warnings[0]
    assert hook_warnings({"web": "x", "release": "python manage.py migrate"}) == []
    metadata = slug_metadata(
        process_types={"web": "x", "postdeploy": "m", "release": "r"}, runtime=None,
        package_manager=None, packages=[], platform={"stack": "s"}, checksum="0",
        size=1, layout="herokuish", framework=[], addons=["heroku-postgresql"])
    assert metadata["postdeploy_command"] == "m" and metadata["release_command"] == "r"
    assert metadata["addons"] == ["heroku-postgresql"]


TRICKY_TYPES = {
    "web": "gunicorn app:app --bind ${HOST:-0.0.0.0}:$PORT",
    "on": "python on.py", "null": "python null.py", "1": "python one.py",
    "yes": "echo 'a: b' # c", "no-2": '"quoted" && x: y',
    "Off": "uvicorn main:app --host 0.0.0.0\nsecond line",
}


# Strings made of the characters that decide PyYAML's quoting, near the plain rule's edges.
_EDGY = st.text(st.sampled_from(list("aZ_/.:=$@%+,- #'\"?!&*|>[]{}~<0981\t\né")), min_size=0,
                max_size=12) | st.sampled_from(["on", "Off", "NULL", "y", "N", "yes", "True",
                                                "a: b", "a:", "-x", "- x", "a #b", "1.5",
                                                "0800", ".inf", "=", "<<", "~", "x" * 130])
# Mostly strings the plain rule takes, with its edges (": ", a trailing ":" or space, two
# spaces, a leading "-", words YAML reads as booleans) among them.
_WORDS = st.from_regex(r"[a-zA-Z_/-][a-zA-Z0-9_./:=$@%+, -]{0,12}", fullmatch=True) | _EDGY


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_WORDS, _WORDS, max_size=4), st.dictionaries(_WORDS, _WORDS, max_size=3),
       st.lists(_WORDS, max_size=3))
def test_release_yaml_is_pyyamls_text_without_pyyaml(process_types, config_vars, addons):
    # A warm build writes .release without loading PyYAML when every string is plain:
    # its text must be byte for byte what PyYAML writes (slugs stay the same bytes).
    document = {"addons": addons, "config_vars": config_vars,
                "default_process_types": process_types}
    assert release_yaml(process_types, config_vars, addons) == yaml.safe_dump(
        document, sort_keys=False, explicit_start=True, default_flow_style=False,
        allow_unicode=True, width=1 << 30)


def test_every_string_the_plain_rule_takes_is_plain_in_pyyaml():
    # Every string of up to three of these tokens: what the rule takes, PyYAML writes
    # unquoted as a key and as a value, and reads back as the same string.
    import itertools

    from slugbuild.release import _plain

    tokens = ["a", "on", "No", "-", ":", " ", "#", "1", ".", "/", "$", "=", ",", "%", "@", "+",
              "_", "'", "?", "~"]
    taken = 0
    for size in (1, 2, 3):
        for parts in itertools.product(tokens, repeat=size):
            text = "".join(parts)
            if not _plain(text):
                continue
            taken += 1
            dumped = yaml.safe_dump({text: text}, default_flow_style=False, width=1 << 30)
            assert dumped == f"{text}: {text}\n", text
            assert yaml.safe_load(dumped) == {text: text}
    assert taken > 1000


def test_a_plain_release_is_written_without_pyyaml():
    from slugbuild.release import _plain_release_yaml

    assert _plain_release_yaml({"addons": [], "config_vars": {},
                                "default_process_types": {"web": "gunicorn app:app -b :$PORT"}}
                               ) == ("---\naddons: []\nconfig_vars: {}\ndefault_process_types:\n"
                                     "  web: gunicorn app:app -b :$PORT\n")
    assert _plain_release_yaml({"addons": [], "config_vars": {},
                                "default_process_types": {"web": "echo 'a'"}}) is None


def test_release_yaml_round_trips_names_yaml_would_mistype():
    text = release_yaml(TRICKY_TYPES, {"ON": "1", "NULL_VAR": "null", "PORT_X": "0800"},
                        ["heroku-postgresql"])
    assert text.startswith("---\n")
    info = parse_release_yaml(text, ".release")
    assert info.default_process_types == TRICKY_TYPES
    assert info.config_vars == {"ON": "1", "NULL_VAR": "null", "PORT_X": "0800"}
    assert info.addons == ["heroku-postgresql"]
    # Any YAML reader gets the same strings back.
    assert yaml.safe_load(text)["default_process_types"] == TRICKY_TYPES


def test_slugs_written_before_keep_their_meaning():
    # .release as slugbuild wrote it before PyYAML: keys bare, values JSON-quoted.
    old = ('---\naddons: []\nconfig_vars:\n  X: "1"\ndefault_process_types:\n'
           '  on: "python on.py"\n  1: "echo"\n')
    info = slug_release(old, None)
    assert info.default_process_types == {"on": "python on.py", "1": "echo"}
    assert info.config_vars == {"X": "1"}


@pytest.mark.parametrize("text, problem", [
    ("default_process_types:\n  'web: x': y\n", "process type names are"),
    ("default_process_types:\n  'a b': y\n", "process type names are"),
    ("default_process_types:\n  web: ''\n", "has no command"),
    ("default_process_types:\n  web: [a, b]\n", "is not a string"),
    ("config_vars:\n  A=B: x\n", "config var names are"),
    ("config_vars:\n  1X: x\n", "config var names are"),
    ("config_vars:\n  X: {a: b}\n", "is not a string"),
    ("addons: heroku-postgresql\n", "`addons` is not a list"),
    ("- a\n- b\n", "not a YAML mapping"),
])
def test_bin_release_names_are_checked_at_build_time(text, problem):
    with pytest.raises(SlugbuildError) as caught:
        parse_release_yaml(text, "my-buildpack")
    assert caught.value.code == errors.BUILDPACK_RELEASE_INVALID.code
    assert problem in caught.value.found


def test_bin_release_values_stay_as_written():
    info = parse_release_yaml("config_vars:\n  A: 1.10\n  B: true\n  C: ~\n"
                              "default_process_types:\n  on: x\n", "bp")
    assert info.config_vars == {"A": "1.10", "B": "true", "C": "~"}
    assert info.default_process_types == {"on": "x"}


def _site_packages(build: Path, *modules: str) -> None:
    site = build / ".heroku/python/lib/python3.13/site-packages"
    for module in modules:
        (site / module).mkdir(parents=True)
        (site / module / "__init__.py").write_text("")


@pytest.mark.parametrize("files, modules, addons", [
    ({"manage.py": ""}, ("django", "psycopg2"), ["heroku-postgresql"]),
    ({"manage.py": ""}, ("django", "psycopg"), []),          # psycopg 3: Heroku adds none
    ({"manage.py": ""}, ("psycopg2",), []),                   # not Django
    ({"site/manage.py": ""}, ("django", "psycopg2"), []),     # manage.py not at the root
])
def test_postgres_addon_as_herokus_bin_release(tmp_path, files, modules, addons):
    build = make_app(tmp_path / "build", files)
    _site_packages(build, *modules)
    assert python_addons(build) == addons


# --- through compile_app, inspect and the CLI ----------------------------------------

def _buildpack(directory: Path, release_output: str) -> Path:
    """A buildpack whose bin/release prints ``release_output``."""
    make_app(directory, {
        "bin/detect": "#!/usr/bin/env bash\necho Test\n",
        "bin/compile": "#!/usr/bin/env bash\nexit 0\n",
        "bin/release": f"#!/usr/bin/env bash\ncat <<'YAML'\n{release_output}YAML\n",
    })
    for script in (directory / "bin").iterdir():
        script.chmod(0o755)
    return directory


@pytest.mark.parametrize("release_output, problem", [
    ("default_process_types:\n  'web: x': y\n", "process type names are"),
    ("config_vars:\n  A=B: c\n", "config var names are"),
])
def test_a_buildpack_with_invalid_release_names_fails_the_build(tmp_path, release_output,
                                                                problem):
    pack = _buildpack(tmp_path / "pack", release_output)
    app = make_app(tmp_path / "app", {"index.html": "hi\n"})
    with pytest.raises(SlugbuildError) as caught:
        compile_app(app, tmp_path / "slug.tgz", cache_dir=tmp_path / "cache",
                    buildpacks=[str(pack)], reporter=Reporter(quiet=True))
    assert caught.value.code == "buildpack-release-invalid" and problem in caught.value.found
    assert not (tmp_path / "slug.tgz").exists()


def test_types_yaml_would_mistype_survive_build_inspect_and_run(tmp_path):
    pack = _buildpack(tmp_path / "pack", "default_process_types:\n  'on': echo on-type\n"
                                         "  'null': echo null-type\n")
    app = make_app(tmp_path / "app", {"index.html": "hi\n", "Procfile": "1: echo one\n"})
    result = compile_app(app, tmp_path / "slug.tgz", cache_dir=tmp_path / "cache",
                         buildpacks=[str(pack)], reporter=Reporter(quiet=True))
    expected = {"on": "echo on-type", "null": "echo null-type", "1": "echo one"}
    assert result.process_types == expected
    result.metadata_path.unlink()  # inspect then reads the tarball itself
    assert describe_slug(result.slug_path)["process_types"] == expected
    ran = run_cli("run", result.slug_path, "on", timeout=60)
    assert (ran.returncode, ran.stdout) == (0, "on-type\n"), ran.stderr


def test_a_lone_misspelled_procfile_stops_compile_before_any_work(tmp_path):
    app = make_app(tmp_path / "app", {"requirements.txt": "", "procfile": "web: x\n"})
    if (app / "Procfile").exists():
        pytest.skip("case-insensitive file system")
    result = run_cli("compile", app, "-o", tmp_path / "slug.tgz",
                     "--cache-dir", tmp_path / "cache", timeout=60)
    assert result.returncode == 1
    assert "Procfile has the wrong name" in result.stderr
    assert "git mv procfile Procfile" in result.stderr
    assert "Installing" not in result.stderr and not (tmp_path / "slug.tgz").exists()


@pytest.mark.slow
def test_django_with_psycopg2_asks_for_postgres_and_postdeploy_is_named(tmp_path,
                                                                        cache_dir):
    app = copy_app(DJANGO_APP, tmp_path / "app")
    with open(app / "requirements.txt", "a") as requirements:
        requirements.write("psycopg2-binary==2.9.10\n")
    with open(app / "Procfile", "a") as procfile:
        procfile.write("postdeploy: python manage.py check\n")
    result = compile_app(app, tmp_path / "slug.tgz", cache_dir=cache_dir,
                         reporter=Reporter(quiet=True))
    assert result.metadata["addons"] == ["heroku-postgresql"]
    assert result.metadata["postdeploy_command"] == "python manage.py check"
    assert any("Scalingo deploy hook" in line for line in result.log)
    with tarfile.open(result.slug_path) as tar:
        release = tar.extractfile("./.release").read().decode()
    assert yaml.safe_load(release)["addons"] == ["heroku-postgresql"]
