"""The command line starts without the code a warm build never runs (issue 20)."""

from __future__ import annotations

import subprocess
import sys

from slugbuild.lazy_import import lazy_module


def _loaded_at_start(modules: tuple[str, ...], start: str = "") -> str:
    """Which of ``modules`` a fresh interpreter holds once the command line is loaded."""
    probe = (f"import gc, sys\n{start}import slugbuild.cli, slugbuild.pipeline\n"
             f"print(sorted(m for m in {modules!r} if m in sys.modules), gc.isenabled())")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_command_line_imports_no_http_or_image_code_until_used():
    out = _loaded_at_start(("requests", "urllib3", "slugbuild.oci.assemble"))
    assert out == "[] True"


def test_a_lazy_module_is_the_module_once_used():
    import json

    lazy = lazy_module("json")
    assert lazy.dumps({"a": 1}) == json.dumps({"a": 1})
    assert lazy.JSONDecodeError is json.JSONDecodeError  # exceptions match in except clauses
    try:
        lazy.loads("{")
    except lazy.JSONDecodeError:
        pass
    else:
        raise AssertionError("not raised")


def test_the_command_line_loads_no_download_metadata_or_parser_modules():
    # Each is needed only by a path a warm build does not take (an Aptfile download,
    # a new SBOM, nltk.txt, a new layer's console scripts); the entry point's
    # garbage collector is back on after loading.
    out = _loaded_at_start(("urllib.request", "importlib.metadata", "email.parser",
                            "xml.etree.ElementTree", "configparser", "difflib"),
                           start="from slugbuild.__main__ import entry\n"
                                 "sys.argv[1:] = ['--version']\n"
                                 "try:\n    entry()\nexcept SystemExit:\n    pass\n")
    assert out.splitlines()[-1] == "[] True"


def test_installed_versions_are_importlib_metadatas():
    from importlib.metadata import version

    from slugbuild.dist_version import installed_version

    for name in ("uv", "slugbuild", "cyclonedx-python-lib", "py_serializable",
                 "PackageURL-Python", "license-expression", "PyYAML"):
        assert installed_version(name) == version(name)
    assert installed_version("no-such-distribution-here") is None


def test_installed_headers_are_importlib_metadatas():
    # pip's Requires-Python is read this way on every build (installers/pip.py).
    from importlib.metadata import metadata

    from slugbuild.dist_version import installed_header

    for name in ("pip", "uv", "slugbuild", "PyYAML", "requests"):
        for header in ("Version", "Requires-Python", "Name", "Summary", "No-Such-Header"):
            found = metadata(name).get_all(header)
            assert installed_header(name, header) == (found[0] if found else None)
    assert installed_header("no-such-distribution-here", "Version") is None


def test_an_installed_version_is_read_from_dist_info_or_egg_info(tmp_path, monkeypatch):
    from slugbuild import dist_version

    egg = tmp_path / "Some_Thing-1.0.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: some-thing\nVersion: 1.0\n")
    dist = tmp_path / "other-2.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: other\nVersion: 2.0.post1\n"
                                   "Summary: one line\nKeywords: folded\n  over two\n\n"
                                   "Requires-Python: not-a-header\n")
    (tmp_path / "zipped-3.0.egg").write_bytes(b"not a zip")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "missing"), str(tmp_path)])
    dist_version.installed_header.cache_clear()
    try:
        assert dist_version.installed_version("some.thing") == "1.0"  # from PKG-INFO
        assert dist_version.installed_version("Other") == "2.0.post1"  # from the headers
        assert dist_version.installed_header("other", "summary") == "one line"
        assert dist_version.installed_header("other", "Requires-Python") is None  # the body's
        # A folded value is importlib.metadata's to unfold.
        folded = dist_version.installed_header("other", "Keywords")
        assert folded == dist_version._from_importlib("other", "Keywords") != "folded"
        # An egg is importlib.metadata's to read (here it finds nothing in it).
        assert dist_version.installed_version("zipped") is None
    finally:
        dist_version.installed_header.cache_clear()


# What a warm compile (every layer, collectstatic's output and the import check kept)
# must not load: each is needed only by a path it does not take (a cache registry or an
# image, a new dependency layer, a release that is not plain YAML, a new SBOM, a
# requirement with a marker, a boot check, an image reference).
NOT_ON_A_WARM_COMPILE = ("yaml", "requests", "cyclonedx", "slugbuild.oci.image",
                         "slugbuild.oci.registry", "slugbuild.oci.credentials",
                         "slugbuild.incremental", "importlib.metadata", "packaging.markers",
                         "slugbuild.slug.boot_check", "slugbuild.slug.run", "socket",
                         "slugbuild.oci.reference")


def test_a_warm_compile_imports_none_of_what_it_does_not_use(django_build, cache_dir,
                                                             tmp_path):
    from .helpers import DJANGO_APP, copy_app

    app = copy_app(DJANGO_APP, tmp_path / "app")
    probe = ("import sys\nfrom slugbuild.__main__ import entry\n"
             f"sys.argv[1:] = ['compile', {str(app)!r}, '-o', {str(tmp_path / 's.tgz')!r}, "
             f"'--cache-dir', {str(cache_dir)!r}]\n"
             "try:\n    entry()\nexcept SystemExit as done:\n    assert not done.code, done\n"
             f"print(sorted(m for m in {NOT_ON_A_WARM_COMPILE!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Restoring dependencies from cache" in done.stderr  # it was a warm build
    assert done.stdout.strip().splitlines()[-1] == "[]"
