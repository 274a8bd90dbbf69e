"""Slug size: the limit (compile in both layouts, publish), the breakdown, the advice."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from slugbuild import compile_app, errors
from slugbuild.log import Reporter
from slugbuild.pack import pack_tree
from slugbuild.slug.publish import publish_slug
from slugbuild.slug_size import (
    HEROKU_SLUG_LIMIT,
    advice,
    measure_slug,
    parse_size,
    size_limit,
)

from .helpers import make_app, run_cli


@pytest.mark.parametrize(("text", "size"), [
    ("500MB", 500 * 2 ** 20), ("500M", 500 * 2 ** 20), ("500 MiB", 500 * 2 ** 20),
    ("1.5GB", int(1.5 * 2 ** 30)), ("2k", 2048), ("524288000", 524288000), ("0", 0),
    ("none", 0),
])
def test_sizes_parse_in_binary_units_as_herokus(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "5 XB", "-3MB", "1e9", "MB"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError):
        parse_size(text)
    with pytest.raises(errors.SlugbuildError) as caught:
        size_limit(text, "heroku")
    assert caught.value.code == "bad-slug-size"


def test_default_limit_is_herokus_enforced_for_the_heroku_layout_only(monkeypatch):
    monkeypatch.delenv("SLUGBUILD_MAX_SLUG_SIZE", raising=False)
    heroku, herokuish = size_limit(None, "heroku"), size_limit(None, "herokuish")
    assert heroku.limit == herokuish.limit == HEROKU_SLUG_LIMIT == 524_288_000
    assert heroku.enforce and not herokuish.enforce
    monkeypatch.setenv("SLUGBUILD_MAX_SLUG_SIZE", "10MB")
    chosen = size_limit(None, "herokuish")
    assert (chosen.limit, chosen.enforce, chosen.source) == (
        10 * 2 ** 20, True, "SLUGBUILD_MAX_SLUG_SIZE")
    assert size_limit("1MB", "herokuish").limit == 2 ** 20  # the argument wins


def _noise(size: int, seed: str) -> bytes:
    """Incompressible, reproducible bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def _record(site: Path, dist: str, files: dict[str, bytes]) -> None:
    """Install ``files`` (relative to site-packages) as distribution ``dist``."""
    info = site / f"{dist}.dist-info"
    info.mkdir(parents=True)
    rows = []
    for rel, content in files.items():
        target = site / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        rows.append(f"{rel},,")
    rows += [f"{dist}.dist-info/RECORD,,", f"{dist}.dist-info/METADATA,,"]
    (info / "METADATA").write_text(f"Name: {dist.split('-')[0]}\n")
    (info / "RECORD").write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("layout", ["herokuish", "heroku"])
def test_breakdown_of_a_packed_tree_sums_to_the_file_and_names_every_owner(tmp_path, layout):
    root = tmp_path / "tree"
    site = root / ".heroku/python/lib/python3.12/site-packages"
    (root / ".heroku/python/bin").mkdir(parents=True)
    site.mkdir(parents=True)
    (root / ".heroku/python/lib/libpython3.12.so").write_bytes(_noise(300_000, "runtime"))
    _record(site, "alpha-1.0", {"alpha/__init__.py": b"x = 1\n" * 1000,
                                "alpha/blob.bin": _noise(200_000, "alpha"),
                                "../../../bin/alpha": b"#!python\n"})
    (site / "alpha/__pycache__").mkdir()
    (site / "alpha/__pycache__/__init__.cpython-312.pyc").write_bytes(_noise(5000, "pyc"))
    # Two distributions share the nvidia/ namespace.
    _record(site, "nvidia_cublas_cu12-12.1", {"nvidia/cublas/lib.so": _noise(400_000, "cub")})
    _record(site, "nvidia_cudnn_cu12-9.0", {"nvidia/cudnn/lib.so": _noise(100_000, "cud")})
    _record(site, "pytest-8.0", {"pytest/__init__.py": b"# test\n" * 100})
    # The same distribution twice (two versions' metadata).
    _record(site, "six-1.16.0", {"six.py": b"# six\n" * 100})
    (site / "six-1.17.0.dist-info").mkdir()
    (site / "six-1.17.0.dist-info/RECORD").write_text("six.py,,\n")
    (root / "data").mkdir()
    (root / "data/big.csv").write_bytes(_noise(250_000, "data"))
    (root / "staticfiles").mkdir()
    (root / "staticfiles/staticfiles.json").write_text("{}")
    (root / "staticfiles/app.css").write_bytes(_noise(20_000, "css"))
    (root / "Procfile").write_text("web: true\n")
    slug = tmp_path / "slug.tgz"
    with open(slug, "wb") as handle:
        packed = pack_tree(root, handle, layout=layout)

    sizes = measure_slug(slug, layout)
    assert sizes["compressed"] == packed.size == slug.stat().st_size
    assert sum(p["compressed"] for p in sizes["parts"]) == packed.size
    on_disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert sizes["unpacked"] == sum(p["unpacked"] for p in sizes["parts"]) == on_disk
    parts = {(p["kind"], p["name"]): p for p in sizes["parts"]}
    alpha = parts[("distribution", "alpha")]
    # Its files, bytecode compiled after the install, script and metadata.
    assert alpha["unpacked"] == 6000 + 200_000 + 5000 + 9 + len(
        (site / "alpha-1.0.dist-info/METADATA").read_bytes()) + len(
        (site / "alpha-1.0.dist-info/RECORD").read_bytes())
    assert 190_000 < alpha["compressed"] < 225_000  # incompressible: about its size
    assert parts[("distribution", "nvidia-cublas-cu12")]["unpacked"] > 400_000
    assert 90_000 < parts[("distribution", "nvidia-cudnn-cu12")]["compressed"] < 120_000
    assert parts[("app", "data/")]["unpacked"] == 250_000
    assert parts[("collectstatic", "staticfiles/")]["unpacked"] == 20_002
    assert parts[("runtime", "python")]["unpacked"] == 300_000
    assert sizes["parts"][0]["kind"] == "runtime"
    dists = [p for p in sizes["parts"] if p["kind"] == "distribution"]
    assert dists == sorted(dists, key=lambda p: -p["compressed"])
    assert sizes["duplicates"] == ["six"]

    tips = " ".join(advice(sizes, packed.size - 1))
    assert "download.pytorch.org/whl/cpu" in tips and "nvidia-cublas-cu12" in tips
    assert "pytest" in tips and "requirements-dev" in tips
    assert "six" in tips and ".slugignore" in tips and "data/" in tips
    assert "container image" in tips
    assert "container image" not in " ".join(advice(sizes, packed.size))


def test_a_truncated_slug_is_unreadable_not_a_traceback(tmp_path):
    root = make_app(tmp_path / "tree", {"Procfile": "web: true\n"})
    (root / "blob").write_bytes(_noise(100_000, "t"))
    slug = tmp_path / "slug.tgz"
    with open(slug, "wb") as handle:
        pack_tree(root, handle)
    slug.write_bytes(slug.read_bytes()[:50_000])
    with pytest.raises(errors.SlugbuildError) as caught:
        measure_slug(slug, "herokuish")
    assert caught.value.code == "slug-unreadable"


# --- end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_app(tmp_path_factory) -> Path:
    """A small app carrying 2 MB of data files (incompressible, as real data often is)."""
    app = make_app(tmp_path_factory.mktemp("data-app") / "app", {
        ".python-version": "3.12\n", "requirements.txt": "six==1.17.0\n",
        "Procfile": "web: python -m http.server $PORT\n"})
    (app / "data").mkdir()
    (app / "data/model.bin").write_bytes(_noise(2 * 2 ** 20, "model"))
    return app


@pytest.fixture(scope="module")
def built(data_app, tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("built") / "slug.tgz"
    return compile_app(data_app, out, cache_dir=cache_dir, layout="heroku",
                       reporter=Reporter(quiet=True))


@pytest.mark.slow
def test_slug_json_breakdown_sums_to_the_slug_and_matches_inspect(built):
    sizes = built.metadata["sizes"]
    assert sizes["compressed"] == built.size == built.slug_path.stat().st_size
    assert sum(p["compressed"] for p in sizes["parts"]) == built.size
    assert sizes["limit"] == {"bytes": HEROKU_SLUG_LIMIT, "enforced": True,
                              "source": "Heroku's slug size limit",
                              "compared": "compressed slug (the size of the .tgz file)"}
    names = {(p["kind"], p["name"]) for p in sizes["parts"]}
    assert {("runtime", "python"), ("distribution", "six"), ("app", "data/")} <= names
    on_disk = json.loads(built.metadata_path.read_text())["sizes"]
    assert on_disk == sizes
    shown = run_cli("inspect", "--sizes", "--json", built.slug_path)
    assert shown.returncode == 0, shown.stderr
    inspected = json.loads(shown.stdout)["sizes"]
    assert inspected["parts"] == sizes["parts"]
    text = run_cli("inspect", "--sizes", built.slug_path)
    assert "distribution: six" in text.stdout and "app: data/" in text.stdout


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["herokuish", "heroku"])
def test_compile_past_the_limit_fails_and_writes_nothing(data_app, built, tmp_path, cache_dir,
                                                        layout):
    out = tmp_path / "slug.tgz"
    # Past the limit only with the app's files: found after packing, with the breakdown.
    # (`built` is the heroku layout's slug; the herokuish one is a few KB smaller: its
    # names lack "app/". 64 KB under either is still far above the layers' 15 MB.)
    result = run_cli("compile", data_app, "-o", out, "--cache-dir", cache_dir,
                     "--layout", layout, "--max-slug-size", str(built.size - 64 * 1024))
    assert result.returncode == 1, result.stderr
    assert "[slug-too-large]" in result.stderr
    assert "app: data/" in result.stderr and ".slugignore" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(tmp_path)) == []
    # Past it with the runtime and packages alone: found before collectstatic and packing.
    env = {**os.environ, "SLUGBUILD_MAX_SLUG_SIZE": "1MB"}
    result = run_cli("compile", data_app, "-o", out, "--cache-dir", cache_dir,
                     "--layout", layout, env=env)
    assert result.returncode == 1
    assert "[slug-too-large]" in result.stderr
    assert "runtime and installed packages alone" in result.stderr
    assert "Compressing" not in result.stderr
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.slow
def test_herokuish_default_only_warns_and_a_big_slug_gets_its_breakdown_logged(
        data_app, tmp_path, cache_dir, monkeypatch):
    import slugbuild.slug_size as slug_size

    monkeypatch.setattr(slug_size, "HEROKU_SLUG_LIMIT", 2 ** 20)  # as if the slug were huge
    reporter = Reporter(quiet=True)
    result = compile_app(data_app, tmp_path / "slug.tgz", cache_dir=cache_dir,
                         reporter=reporter)
    log = "\n".join(result.log)
    assert "over 1.0 MB" in log and "Heroku would refuse it" in log
    assert "app: data/" in log and "Advice:" in log
    assert result.metadata["sizes"]["limit"]["enforced"] is False


class _CountingAPI:
    """Any request to 127.0.0.1 is counted (and answered 500): publish must send none."""

    def __init__(self) -> None:
        self.requests = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _any(self):
                api.requests += 1
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_PATCH = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_publish_refuses_a_slug_over_the_limit_before_any_request(built, monkeypatch):
    api = _CountingAPI()
    try:
        with pytest.raises(errors.SlugbuildError) as caught:
            publish_slug(built.slug_path, "demo", api_url=api.url, token="test-token",
                         reporter=Reporter(quiet=True), max_slug_size=built.size - 1)
        assert caught.value.code == "slug-too-large"
        assert "Nothing was written or uploaded" in caught.value.action
        env = {**os.environ, "HEROKU_API_KEY": "test-token",
               "SLUGBUILD_MAX_SLUG_SIZE": "1MB"}
        result = run_cli("publish", built.slug_path, "--heroku-app", "demo",
                         "--api-url", api.url, env=env)
        assert result.returncode == 1
        assert "[slug-too-large]" in result.stderr and "distribution: six" in result.stderr
        assert api.requests == 0
    finally:
        api.close()


@pytest.mark.slow
def test_layer_measurements_are_kept_and_a_bad_one_is_not_trusted(built, data_app, tmp_path,
                                                                 cache_dir):
    kept = sorted(Path(cache_dir).glob("**/packed/*.sizes.json"))
    assert kept, "a build keeps each layer part's measurement beside the part"
    for path in kept:  # damaged or stale: measured again, never believed
        record = json.loads(path.read_text())
        record["measured"]["unpacked"] = {"runtime": 1}
        path.write_text(json.dumps(record))
    again = compile_app(data_app, tmp_path / "slug.tgz", cache_dir=cache_dir, layout="heroku",
                        reporter=Reporter(quiet=True))
    assert again.sha256 == built.sha256
    assert again.metadata["sizes"] == built.metadata["sizes"]
    # Whole-file measurement (as inspect does) agrees with the part-wise one.
    assert measure_slug(again.slug_path, "heroku")["parts"] == again.metadata["sizes"]["parts"]


@pytest.mark.slow
def test_a_pinned_heroku_python_buildpack_is_said_to_be_replaced(data_app, tmp_path, cache_dir):
    app = make_app(tmp_path / "pinned", {
        ".python-version": "3.12\n", "requirements.txt": "six==1.17.0\n",
        "Procfile": "web: python -m http.server $PORT\n",
        ".buildpacks": "https://github.com/heroku/heroku-buildpack-python#v212\n"})
    result = compile_app(app, tmp_path / "slug.tgz", cache_dir=cache_dir,
                         reporter=Reporter(quiet=True))
    log = "\n".join(result.log)
    assert "at v212" in log and "built-in Python stages replace it" in log
    assert "v351" in log
    (entry,) = result.metadata["buildpacks"]
    assert entry["requested_version"] == "v212"
    assert entry["follows"] == "heroku-buildpack-python v351"
    assert entry["replaced_by"] == "slugbuild built-in Python stages"
    unpinned = compile_app(app, tmp_path / "again.tgz", cache_dir=cache_dir,
                           buildpacks=["heroku/python"], reporter=Reporter(quiet=True))
    assert "replace it" not in "\n".join(unpinned.log)
    assert "requested_version" not in unpinned.metadata["buildpacks"][0]


@pytest.mark.parametrize("tar_format", ["gnu", "pax"])
def test_long_names_and_entries_without_data_from_other_tars(tmp_path, tar_format):
    import io
    import tarfile

    long_dir = "./" + "/".join(["deep" * 10] * 4)
    slug = tmp_path / "other.tgz"
    fmt = tarfile.GNU_FORMAT if tar_format == "gnu" else tarfile.PAX_FORMAT
    with tarfile.open(slug, "w:gz", format=fmt) as tar:
        for name, content in ((f"{long_dir}/big.bin", _noise(50_000, "long")),
                              ("./Procfile", b"web: true\n")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        link = tarfile.TarInfo("./hard")
        link.type, link.linkname = tarfile.LNKTYPE, "Procfile"
        tar.addfile(link)
    sizes = measure_slug(slug, "herokuish")
    assert sum(p["compressed"] for p in sizes["parts"]) == slug.stat().st_size
    parts = {p["name"]: p for p in sizes["parts"]}
    assert parts["deep" * 10 + "/"]["unpacked"] == 50_000
    assert parts["(top-level files)"]["unpacked"] == 10
