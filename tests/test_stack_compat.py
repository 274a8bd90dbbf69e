"""What a slug needs from a run image (ELF needs, glibc floor) and the check of a run image.

ELF files are made with gcc (a Makefile system package) and compared with what
binutils' readelf says of the same files; run images are tar layers made here.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from slugbuild import errors
from slugbuild.stack_compat import (
    NotElf,
    RunImageFiles,
    StackRequirements,
    check_run_image,
    read_elf,
    require_compatible,
    requirements_for_slug,
    slug_archive_requirements,
    slug_requirements,
)

from .helpers import DJANGO_APP

HOST_LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")


def _gcc(out: Path, source: str, *flags: str) -> Path:
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run(["gcc", "-o", str(out), str(src), *flags], check=True, capture_output=True)
    src.unlink()
    return out


def _readelf(path: Path, what: str) -> list[str]:
    text = subprocess.run(["readelf", "-dW", str(path)], capture_output=True, text=True,
                          check=True).stdout
    return re.findall(rf"\({what}\)\s+\S.*?\[(.*?)\]", text)


@pytest.fixture(scope="module")
def elf_tree(tmp_path_factory) -> Path:
    """A slug-like tree: an executable needing a library it ships in $ORIGIN/../lib,
    a library found by its soname elsewhere, and libsqlite3 and libc from the host."""
    root = tmp_path_factory.mktemp("elf-tree")
    (root / "lib").mkdir()
    (root / "bin").mkdir()
    (root / "vendor").mkdir()
    _gcc(root / "lib" / "libown.so.1", "int own(void) { return 1; }\n",
         "-shared", "-fPIC", "-Wl,-soname,libown.so.1")
    _gcc(root / "vendor" / "libfar.so.2", "int far(void) { return 2; }\n",
         "-shared", "-fPIC", "-Wl,-soname,libfar.so.2")
    _gcc(root / "bin" / "tool",
         "#include <stdio.h>\nconst char *sqlite3_libversion(void);\n"
         "int own(void); int far(void);\n"
         "int main(void) { printf(\"%s\", sqlite3_libversion()); return own() + far(); }\n",
         f"-L{root / 'lib'}", f"-L{root / 'vendor'}", "-l:libown.so.1", "-l:libfar.so.2",
         "-l:libsqlite3.so.0",
         "-Wl,-rpath,$ORIGIN/../lib")
    (root / "README").write_text("not an ELF file\n")
    (root / "broken.so").write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 20)  # truncated
    return root


def test_reader_agrees_with_readelf(elf_tree):
    tool = elf_tree / "bin" / "tool"
    with open(tool, "rb") as handle:
        info = read_elf(handle)
    assert list(info.needed) == _readelf(tool, "NEEDED")
    assert list(info.search_paths) == ["$ORIGIN/../lib"]
    assert info.machine == "amd64"
    assert info.interpreter == "/lib64/ld-linux-x86-64.so.2"
    with open(elf_tree / "lib" / "libown.so.1", "rb") as handle:
        assert read_elf(handle).soname == "libown.so.1"
    with open(HOST_LIBC, "rb") as handle:
        libc = read_elf(handle)
    assert "GLIBC_2.2.5" in libc.version_defs and "GLIBC_PRIVATE" in libc.version_defs


def test_not_elf_and_truncated_files_are_refused(elf_tree):
    for name in ("README", "broken.so"):
        with open(elf_tree / name, "rb") as handle, pytest.raises(NotElf):
            read_elf(handle)


def test_requirements_subtract_what_the_slug_ships(elf_tree):
    requirements = slug_requirements(elf_tree)
    # libown is in $ORIGIN/../lib, libfar has its soname in the slug: neither is needed.
    assert requirements.needed == ["ld-linux-x86-64.so.2", "libc.so.6", "libsqlite3.so.0"]
    assert requirements.architecture == "amd64"
    versions = subprocess.run(["readelf", "-VW", str(elf_tree / "bin" / "tool"),
                               str(elf_tree / "lib" / "libown.so.1"),
                               str(elf_tree / "vendor" / "libfar.so.2")],
                              capture_output=True, text=True, check=True).stdout
    floor = max(tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_([\d.]+)", versions))
    assert requirements.glibc == ".".join(map(str, floor))


def test_a_packed_slug_gives_the_same_requirements(elf_tree, tmp_path):
    slug = tmp_path / "slug.tgz"
    with tarfile.open(slug, "w:gz") as archive:
        archive.add(elf_tree, arcname="./app")
    assert slug_archive_requirements(slug, "./app") == slug_requirements(elf_tree)


def test_a_slug_json_without_the_field_gets_it_from_the_slug(elf_tree, tmp_path):
    slug = tmp_path / "slug.tgz"
    with tarfile.open(slug, "w:gz") as archive:
        archive.add(elf_tree, arcname="./app")
    computed = requirements_for_slug(slug, {"layout": "heroku"})
    assert computed == slug_requirements(elf_tree)
    recorded = {"needed": ["libx.so.1"], "glibc": None, "architecture": "arm64"}
    assert requirements_for_slug(slug, {"stack_requirements": recorded}).needed == ["libx.so.1"]


def test_requirements_round_trip_through_slug_json():
    requirements = StackRequirements(["libc.so.6", "libssl.so.3"], "2.34", "amd64",
                                     {"libssl.so.3": ["OPENSSL_3.0.0"]})
    assert StackRequirements.from_dict(json.loads(json.dumps(requirements.as_dict()))) \
        == requirements
    older = {"needed": ["libc.so.6"], "glibc": "2.34", "architecture": "amd64"}
    assert StackRequirements.from_dict(older) == StackRequirements(["libc.so.6"], "2.34",
                                                                   "amd64")
    assert StackRequirements.from_dict(None) is None  # an older slug.json
    assert StackRequirements.from_dict({"needed": "libc.so.6"}) is None


def _layer(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]], gz: bool) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, b"")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    if gz:  # two gzip members, as slugbuild's own layers are
        half = len(raw) // 2
        raw = gzip.compress(raw[:half]) + gzip.compress(raw[half:])
    return io.BytesIO(raw)


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


@pytest.fixture(scope="module")
def two_layers() -> list[bytes]:
    libdir = "usr/lib/x86_64-linux-gnu"
    base = _layer([
        _entry("./usr", tarfile.DIRTYPE), _entry("./usr/lib", tarfile.DIRTYPE),
        _entry(f"./{libdir}", tarfile.DIRTYPE),
        _entry("./lib", tarfile.SYMTYPE, "usr/lib"),
        (_entry(f"./{libdir}/libc.so.6"), HOST_LIBC.read_bytes()),
        _entry(f"./{libdir}/libsqlite3.so.0.8.6"),
        _entry(f"./{libdir}/libsqlite3.so.0", tarfile.SYMTYPE, "libsqlite3.so.0.8.6"),
        _entry(f"./{libdir}/libz.so.1"), _entry("./opt", tarfile.DIRTYPE),
        _entry("./opt/libs", tarfile.DIRTYPE), _entry("./opt/libs/x"),
    ], gz=True).getvalue()
    top = _layer([
        _entry(f"./{libdir}/.wh.libz.so.1"),  # libz removed by the upper layer
        _entry("./opt/libs/.wh..wh..opq"), _entry("./opt/libs/y"),
    ], gz=False).getvalue()
    return [base, top]


def test_run_image_layers_merge_with_whiteouts(two_layers):
    image = RunImageFiles.from_layers([io.BytesIO(layer) for layer in two_layers], "amd64")
    assert image.has_library("libsqlite3.so.0")  # through /lib -> usr/lib and a symlink
    assert not image.has_library("libz.so.1")
    assert "/opt/libs/y" in image.entries and "/opt/libs/x" not in image.entries
    host = subprocess.run(["ldd", "--version"], capture_output=True, text=True).stdout
    assert image.glibc_version() == re.search(r"(\d+\.\d+)\s*$", host.splitlines()[0]).group(1)


def test_directories_of_the_images_ld_so_conf_count(two_layers):
    image = RunImageFiles.from_layers([io.BytesIO(layer) for layer in two_layers] + [_layer([
        _entry("./etc", tarfile.DIRTYPE), _entry("./etc/ld.so.conf.d", tarfile.DIRTYPE),
        (_entry("./etc/ld.so.conf"), b"include /etc/ld.so.conf.d/*.conf\n"),
        (_entry("./etc/ld.so.conf.d/vendor.conf"), b"# vendor libraries\n/opt/vendor/lib\n"),
        _entry("./opt/vendor", tarfile.DIRTYPE), _entry("./opt/vendor/lib", tarfile.DIRTYPE),
        _entry("./opt/vendor/lib/libvendor.so.2"), _entry("./opt/other.so.1"),
    ], gz=False)], "amd64")
    assert image.has_library("libvendor.so.2")
    assert not image.has_library("other.so.1")  # not in a directory the loader reads
    assert image.library_dirs()[0] == "/opt/vendor/lib"


def test_check_names_missing_libraries_and_an_old_glibc(two_layers):
    image = RunImageFiles.from_layers([io.BytesIO(layer) for layer in two_layers], "amd64")
    ok = StackRequirements(["libc.so.6", "libsqlite3.so.0"], "2.17", "amd64")
    assert check_run_image(ok, image) == []
    wants = StackRequirements(["libc.so.6", "libz.so.1", "libssl.so.3"], "9.99", "amd64")
    assert check_run_image(wants, image) == [
        "libz.so.1", "libssl.so.3", f"glibc 9.99 (the image has {image.glibc_version()})"]
    with pytest.raises(errors.RUN_IMAGE_INCOMPATIBLE.exception) as raised:
        require_compatible(wants, image, "oci:run:latest")
    message = raised.value.render()
    assert "libssl.so.3" in message and "zlib1g" in message and "libssl3" in message


def test_a_run_image_of_another_architecture_is_refused(two_layers):
    image = RunImageFiles.from_layers([io.BytesIO(layer) for layer in two_layers], "arm64")
    with pytest.raises(errors.RUN_IMAGE_INCOMPATIBLE.exception) as raised:
        require_compatible(StackRequirements(["libc.so.6"], None, "amd64"), image, "oci:r:1")
    assert raised.value.fields["variant"] == "architecture"
    assert "arm64" in raised.value.found and "amd64" in raised.value.found


def _versioned_library(directory: Path, versions: list[str]) -> Path:
    """libver.so.1 defining a function in each of ``versions`` (a version script)."""
    script = directory / "ver.map"
    script.write_text("".join(f"{v} {{ global: fn_{v.lower()}; }};\n" for v in versions))
    source = "".join(f"int fn_{v.lower()}(void) {{ return 0; }}\n" for v in versions)
    return _gcc(directory / "libver.so.1", source, "-shared", "-fPIC",
                "-Wl,-soname,libver.so.1", f"-Wl,--version-script={script}")


def test_symbol_versions_of_other_libraries_are_checked(tmp_path):
    """A program linked against a newer library than the run image's (OpenSSL 3.2's
    OPENSSL_3.2.0 on an image with 3.0) fails at boot just like a missing one."""
    new, old, slug = tmp_path / "new", tmp_path / "old", tmp_path / "slug"
    for directory in (new, old, slug):
        directory.mkdir()
    _versioned_library(new, ["VER_1", "VER_2"])
    _versioned_library(old, ["VER_1"])
    _gcc(slug / "tool", "int fn_ver_2(void);\nint main(void) { return fn_ver_2(); }\n",
         f"-L{new}", "-l:libver.so.1")
    requirements = slug_requirements(slug)
    assert requirements.versions == {"libver.so.1": ["VER_2"]}
    assert "GLIBC_" not in json.dumps(requirements.versions)  # the floor covers those

    def image_with(library: Path) -> RunImageFiles:
        libdir = "usr/lib/x86_64-linux-gnu"
        return RunImageFiles.from_layers([_layer([
            _entry("./usr", tarfile.DIRTYPE), _entry("./usr/lib", tarfile.DIRTYPE),
            _entry(f"./{libdir}", tarfile.DIRTYPE),
            (_entry(f"./{libdir}/libc.so.6"), HOST_LIBC.read_bytes()),
            (_entry(f"./{libdir}/libver.so.1.2"), library.read_bytes()),
            _entry(f"./{libdir}/libver.so.1", tarfile.SYMTYPE, "libver.so.1.2"),
        ], gz=True)], "amd64")

    requirements.needed = [n for n in requirements.needed if n.startswith("lib")]
    assert check_run_image(requirements, image_with(new / "libver.so.1")) == []
    assert check_run_image(requirements, image_with(old / "libver.so.1")) == [
        "libver.so.1 with VER_2 (the image's is older)"]


@pytest.mark.slow
def test_compile_records_stack_requirements(django_build):
    recorded = json.loads(django_build.metadata_path.read_text())["stack_requirements"]
    assert {"libc.so.6", "libsqlite3.so.0", "libssl.so.3", "libffi.so.8"} <= set(
        recorded["needed"])
    assert not any(name.startswith("libpython") for name in recorded["needed"])
    assert recorded["architecture"] == "amd64"
    assert recorded["versions"]["libssl.so.3"][0].startswith("OPENSSL_")
    assert re.fullmatch(r"2\.\d+", recorded["glibc"])


def test_a_layer_record_kept_ahead_gives_the_requirements_of_the_layer_placed(elf_tree,
                                                                             tmp_path):
    """A build showing a layer by a view keeps its record in the background
    (keep_stack_record); read back, it gives what walking the files placed gives."""
    from slugbuild.stack_compat import keep_stack_record

    record = tmp_path / "packed" / "stack-requirements.json"
    record.parent.mkdir()
    keep_stack_record(elf_tree, record)
    kept = record.read_bytes()
    build = tmp_path / "build"
    build.mkdir()
    assert slug_requirements(build, [("m", elf_tree, record)]) == \
        slug_requirements(build, [("m", elf_tree, tmp_path / "elsewhere.json")])
    placed = tmp_path / "placed"
    shutil.copytree(elf_tree, placed / "m", symlinks=True)
    assert slug_requirements(placed) == slug_requirements(build, [("m", elf_tree, record)])
    keep_stack_record(elf_tree, record)  # kept already: not read again
    assert record.read_bytes() == kept


def test_a_record_from_the_host_path_scan_is_the_record_a_full_read_keeps(elf_tree,
                                                                           tmp_path):
    """A new dependency layer's record takes its ELF files from the host-path scan's
    read of every file's head (relocate.find_references): byte-equal to the record
    read from every file, a symlink to an ELF file, an empty file and a sparse one
    (its data after a hole) included."""
    import os

    from slugbuild.relocate import find_references
    from slugbuild.stack_compat import keep_stack_record

    tree = tmp_path / "tree"
    shutil.copytree(elf_tree, tree, symlinks=True)
    (tree / "lib" / "libown.so").symlink_to("libown.so.1")
    (tree / "empty").write_bytes(b"")
    with open(tree / "sparse", "wb") as handle:
        handle.seek(1 << 16)
        handle.write(b"\x7fELF and more")
    (tree / "mentions").write_text(f"built in {tmp_path}/build\n")
    elf_files: list[str] = []
    found = find_references(tree, [f"{tmp_path}/build"], elf_files=elf_files)
    assert [p.name for p, _ in found] == ["mentions"]
    assert sorted(os.path.relpath(p, tree) for p in elf_files) == [
        "bin/tool", "broken.so", "lib/libown.so.1", "vendor/libfar.so.2"]
    whole, scanned = tmp_path / "whole.json", tmp_path / "scanned.json"
    keep_stack_record(tree, whole)
    keep_stack_record(tree, scanned, elf_files)
    assert scanned.read_bytes() == whole.read_bytes()
    assert json.loads(whole.read_text())["elves"]  # the tree's ELF files are in it
    nothing: list[str] = []  # no needle: the heads are still read
    find_references(tree, [], elf_files=nothing)
    assert sorted(nothing) == sorted(elf_files)


@pytest.mark.slow
def test_a_warm_build_showing_layers_by_views_records_the_same(django_build, cache_dir,
                                                                 tmp_path):
    """A warm build shows the cached layers by links (layer_view.py) that the walk does
    not enter: their ELF files count all the same, read from the layer (then from a
    record kept beside it)."""
    from slugbuild import compile_app
    from slugbuild.log import Reporter
    from slugbuild.stack_compat import STACK_RECORD

    recorded = json.loads(django_build.metadata_path.read_text())["stack_requirements"]
    for run in range(2):
        warm = compile_app(DJANGO_APP, tmp_path / f"{run}.tgz", cache_dir=cache_dir,
                           reporter=Reporter(quiet=True))
        assert warm.sha256 == django_build.sha256
        assert json.loads(warm.metadata_path.read_text())["stack_requirements"] == recorded
    assert len(list(cache_dir.glob(f"*/*/packed/{STACK_RECORD}"))) >= 2


if shutil.which("gcc") is None:  # the Makefile installs it; a missing one fails loudly
    raise RuntimeError("gcc is needed by tests/test_stack_compat.py (make system-packages)")
