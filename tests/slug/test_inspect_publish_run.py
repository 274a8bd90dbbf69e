"""inspect, publish and run on slugs: real slugs, hostile tarballs, a local fake API."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from slugbuild import compile_app, errors
from slugbuild.log import Reporter
from slugbuild.slug import publish
from slugbuild.slug.inspect import describe_slug
from slugbuild.slug.publish import publish_slug

from ..helpers import make_app, run_cli


def _tarball(path: Path, entries: list[tuple[str, bytes | None, str | None]]) -> Path:
    """Write a tar.gz of (name, content or None for a dir, symlink target or None)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content, link in entries:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ([("./../evil.txt", b"x", None)], "leaves the slug"),
        ([("/etc/evil", b"x", None)], "leaves the slug"),
        ([("./link", None, "/etc/passwd")], "leaves the slug"),
        ([("./a/link", None, "../../outside")], "leaves the slug"),
        # Each link stays inside on its own; the chain leads out.
        ([("./a", None, None), ("./a/b", None, ".."), ("./a/b/c", None, ".."),
          ("./a/b/c/escaped.txt", b"x", None)], "goes through the symlink"),
    ],
)
def test_hostile_slugs_are_refused(tmp_path, entries, problem):
    slug = _tarball(tmp_path / "evil.tgz", [("./Procfile", b"web: true\n", None), *entries])
    for command in (["inspect", slug], ["run", slug, "web", "--unpack-to", tmp_path / "u"]):
        result = run_cli(*command)
        assert result.returncode == 1
        assert "The slug holds an unsafe entry" in result.stderr
        assert problem in result.stderr
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "outside").exists()


def test_inward_links_are_fine(tmp_path):
    slug = _tarball(tmp_path / "ok.tgz", [
        ("./Procfile", b"web: true\n", None), ("./a", None, None),
        ("./a/b", b"x", None), ("./a/link", None, "../Procfile"), ("./top", None, "a/b")])
    assert describe_slug(slug)["process_types"] == {"web": "true"}


def test_run_with_env_file_and_unknown_process(tmp_path):
    procfile = b'show: echo "$GREETING/$OTHER/$PORT/$DYNO"\n'
    slug = _tarball(tmp_path / "s.tgz", [("./Procfile", procfile, None),
                                         ("./.profile.d", None, None)])
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nexport GREETING='hello there'\nOTHER=1\n")
    result = run_cli("run", slug, "show", "--env-file", env_file, "--env", "OTHER=2",
                     "--port", "7001")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello there/2/7001/show.1"
    missing = run_cli("run", slug, "worker")
    assert missing.returncode == 1
    assert "Unknown process type" in missing.stderr and "show" in missing.stderr
    unreadable = run_cli("run", slug, "show", "--env-file", tmp_path / "nope")
    assert unreadable.returncode == 1 and "Cannot read the env file" in unreadable.stderr


@pytest.mark.slow
def test_inspect_describes_a_real_slug(django_build, tmp_path):
    result = run_cli("inspect", django_build.slug_path, "--json")
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout)
    # Facts come from the tarball; slug.json (checksum matching) only adds labels.
    assert described["source"].startswith("tarball (stack")
    assert described["checksum"] == f"SHA256:{django_build.sha256}"
    assert described["process_types"]["web"].startswith("gunicorn")
    # Without slug.json beside it, the same facts come from the tarball itself.
    copy = tmp_path / "lonely.tgz"
    copy.write_bytes(django_build.slug_path.read_bytes())
    lonely = describe_slug(copy)
    assert lonely["source"] == "tarball"
    assert lonely["process_types"] == described["process_types"]
    assert lonely["runtime"]["resolved"] == django_build.runtime["resolved"]
    assert {p["name"] for p in lonely["packages"]} == {
        p["name"] for p in django_build.packages}
    table = run_cli("inspect", copy)
    assert table.returncode == 0
    assert "Process types" in table.stdout and "gunicorn" in table.stdout


class FakeHerokuAPI:
    """A Platform API stand-in on 127.0.0.1 that checks requests as Heroku documents them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self.uploaded = b""
        self.fail_with: int | None = None
        # The release phase: the statuses GET /apps/demo/releases/rel-1 answers in turn
        # (none: the release object has no status, as without a release command), and
        # the release command's output, served at output_stream_url line by line.
        self.statuses: list[str] = []
        self.output: list[str] | None = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: dict | None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def do_POST(self):
                body = self._body()
                api.requests.append(("POST", self.path, dict(self.headers), body))
                if api.fail_with:
                    return self._reply(api.fail_with, {"id": "forbidden",
                                                       "message": "You do not have access"})
                if self.headers["Accept"] != "application/vnd.heroku+json; version=3" or \
                        self.headers["Authorization"] != "Bearer test-token":
                    return self._reply(401, {"message": "bad headers"})
                if self.path == "/apps/demo/slugs":
                    port = self.server.server_address[1]
                    return self._reply(201, {"id": "slug-1", "blob": {
                        "method": "put", "url": f"http://127.0.0.1:{port}/blob?sig=s3cr3t"}})
                if self.path == "/apps/demo/releases":
                    release: dict = {"id": "rel-1", "version": 7}
                    if api.statuses:
                        release["status"] = "pending"
                    if api.output is not None:
                        port = self.server.server_address[1]
                        release["output_stream_url"] = f"http://127.0.0.1:{port}/out?sig=xyz"
                    return self._reply(201, release)
                return self._reply(404, {"message": "not found"})

            def do_GET(self):
                api.requests.append(("GET", self.path, dict(self.headers), b""))
                if self.path == "/out?sig=xyz" and api.output is not None:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    for line in api.output:  # as a release command prints it, over time
                        self.wfile.write(line.encode() + b"\n")
                        self.wfile.flush()
                        time.sleep(0.05)
                    return None
                if self.path == "/apps/demo/releases/rel-1" and api.statuses:
                    status = api.statuses.pop(0) if len(api.statuses) > 1 else api.statuses[0]
                    return self._reply(200, {"id": "rel-1", "version": 7, "status": status})
                return self._reply(404, {"message": "not found"})

            def do_PUT(self):
                body = self._body()
                api.requests.append(("PUT", self.path, dict(self.headers), body))
                api.uploaded = body
                self._reply(200, None)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHerokuAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def heroku_slug(tmp_path_factory, cache_dir):
    app = make_app(tmp_path_factory.mktemp("app") / "app", {
        ".python-version": "3.12\n", "requirements.txt": "six==1.17.0\n",
        "Procfile": "web: python -m http.server $PORT\n"})
    out = tmp_path_factory.mktemp("heroku") / "slug.tgz"
    return compile_app(app, out, cache_dir=cache_dir, layout="heroku",
                       reporter=Reporter(quiet=True))


@pytest.mark.slow
def test_publish_creates_uploads_and_releases(heroku_slug, monkeypatch):
    monkeypatch.setenv("HEROKU_API_KEY", "test-token")
    with FakeHerokuAPI() as api:
        release = publish_slug(heroku_slug.slug_path, "demo", api_url=api.url,
                               stack="heroku-24", reporter=Reporter(quiet=True))
    assert release == {"id": "rel-1", "version": 7}
    (m1, p1, _, body1), (m2, p2, headers2, _), (m3, p3, _, body3) = api.requests
    assert (m1, p1, m2, p2, m3, p3) == (
        "POST", "/apps/demo/slugs", "PUT", "/blob?sig=s3cr3t", "POST", "/apps/demo/releases")
    created = json.loads(body1)
    assert created == {
        "process_types": {"web": "python -m http.server $PORT"},
        "checksum": f"SHA256:{heroku_slug.sha256}",
        "buildpack_provided_description": "Python",
        "stack": "heroku-24",
    }
    assert headers2.get("Content-Type", "") == ""
    assert hashlib.sha256(api.uploaded).hexdigest() == heroku_slug.sha256
    assert json.loads(body3) == {"slug": "slug-1"}


@pytest.mark.slow
def test_publish_failures_are_clear(heroku_slug, django_build, monkeypatch, tmp_path):
    monkeypatch.delenv("HEROKU_API_KEY", raising=False)
    with pytest.raises(errors.SlugbuildError) as caught:
        publish_slug(heroku_slug.slug_path, "demo", api_url="http://127.0.0.1:9")
    assert caught.value.code == "publish-no-token"
    monkeypatch.setenv("HEROKU_API_KEY", "test-token")
    with pytest.raises(errors.SlugbuildError) as caught:
        publish_slug(django_build.slug_path, "demo", api_url="http://127.0.0.1:9")
    assert caught.value.code == "publish-wrong-layout"
    with FakeHerokuAPI() as api:
        api.fail_with = 403
        with pytest.raises(errors.SlugbuildError) as caught:
            publish_slug(heroku_slug.slug_path, "demo", api_url=api.url,
                         reporter=Reporter(quiet=True))
    assert caught.value.code == "publish-api-error"
    assert "403" in caught.value.found and "You do not have access" in caught.value.found
    assert len(api.requests) == 1  # nothing uploaded, nothing released
    result = run_cli("publish", heroku_slug.slug_path, "--heroku-app", "demo",
                     "--api-url", "http://127.0.0.1:9", "--timeout", "1")
    assert result.returncode == 1 and "Could not reach the Heroku API" in result.stderr


@pytest.mark.slow
def test_publish_follows_the_release_phase_and_prints_its_output(heroku_slug, monkeypatch):
    monkeypatch.setenv("HEROKU_API_KEY", "test-token")
    monkeypatch.setattr(publish, "RELEASE_POLL_SECONDS", 0.01)
    lines: list[str] = []
    with FakeHerokuAPI() as api:
        api.output = ["Running migrations:", "  Applying app.0001_initial... OK"]
        api.statuses = ["pending", "pending", "succeeded"]
        release = publish_slug(heroku_slug.slug_path, "demo", api_url=api.url,
                               reporter=Reporter(quiet=True, on_event=lambda e: lines.append(
                                   e.line)))
    assert release["status"] == "succeeded"
    shown = "\n".join(lines)
    assert shown.index("Running release command...") < shown.index(
        "Applying app.0001_initial... OK") < shown.index("Released v7 of demo")
    gets = [path for method, path, _, _ in api.requests if method == "GET"]
    assert gets[0] == "/out?sig=xyz" and gets[1:] == ["/apps/demo/releases/rel-1"] * 3
    stream_headers = next(h for m, p, h, _ in api.requests if p == "/out?sig=xyz")
    assert "Authorization" not in stream_headers  # the token never goes to the stream
    assert "sig=xyz" not in shown


@pytest.mark.slow
def test_a_failed_release_phase_is_one_clear_error(heroku_slug, monkeypatch):
    monkeypatch.setenv("HEROKU_API_KEY", "test-token")
    monkeypatch.setattr(publish, "RELEASE_POLL_SECONDS", 0.01)
    with FakeHerokuAPI() as api:
        api.output = ["django.db.utils.OperationalError: could not connect"]
        api.statuses = ["pending", "failed"]
        result = run_cli("publish", heroku_slug.slug_path, "--heroku-app", "demo",
                         "--api-url", api.url, env={**os.environ, "HEROKU_API_KEY": "test-token"})
    assert result.returncode == 1
    assert "OperationalError: could not connect" in result.stderr
    assert f"Error [{errors.PUBLISH_RELEASE_FAILED.code}]" in result.stderr
    assert "v7" in result.stderr and "Traceback" not in result.stderr
