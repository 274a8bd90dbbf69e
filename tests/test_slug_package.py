"""slug/ (run, inspect, publish, the boot check, archive checks) reads slugs without
the builder: following its imports never reaches the pipeline, its stages or its
providers. And the reporting API a library user sees is typed."""

from __future__ import annotations

import ast
import io
import tarfile
from pathlib import Path

import slugbuild
from slugbuild import results
from slugbuild.log import LogEvent, Reporter

PACKAGE = Path(slugbuild.__file__).parent
# What a slug reader may import: the shared modules, and slug/ itself. (cache and
# stage come with the one file hasher, digests.file_sha256; records with slug_size's
# RECORD reading; process_cookie with the kill of a slug's escaped processes.)
SHARED = {"errors", "redact", "release", "procfile", "textfiles", "slug_size", "log",
          "results", "digests", "stage", "records", "tree", "arguments", "process_cookie",
          "envflag", "dist_version", "lazy_import"}


def _module_file(name: str) -> Path | None:
    path = PACKAGE.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(name: str) -> set[str]:
    """slugbuild modules ``name`` imports (anywhere in it, lazily or not)."""
    path = _module_file(name)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
            elif (node.module or "").split(".")[0] == "slugbuild":
                base = []
                node = ast.ImportFrom(module=node.module[len("slugbuild"):].lstrip(".") or None,
                                      names=node.names, level=0)
            else:
                continue
            module = ".".join(base + ([node.module] if node.module else []))
            if module:
                found.add(module)
            for alias in node.names:
                below = ".".join(filter(None, [module, alias.name]))
                if _module_file(below):
                    found.add(below)
        elif isinstance(node, ast.Import):
            found |= {a.name[len("slugbuild."):] for a in node.names
                      if a.name.startswith("slugbuild.")}
    return {m for m in found if _module_file(m)}


def test_slug_readers_never_import_the_builder():
    readers = [f"slug.{p.stem}" for p in (PACKAGE / "slug").glob("*.py") if p.stem != "__init__"]
    assert {"slug.archive", "slug.inspect", "slug.run", "slug.publish", "slug.boot_check"} \
        <= set(readers)
    reached, pending = set(), list(readers)
    while pending:
        module = pending.pop()
        if module not in reached:
            reached.add(module)
            pending += _imports(module)
    outside = {m for m in reached if not m.startswith("slug.") and m != "slug"} - SHARED
    assert outside == set(), f"slug/ reaches builder modules: {sorted(outside)}"


def test_reporter_events_reach_a_callback_and_a_stream_alike():
    seen: list[LogEvent] = []
    stream = io.StringIO()
    reporter = Reporter(stream, on_event=seen.append)
    reporter.step("Installing")
    reporter.detail("one\ntwo")
    held = reporter.held_back()
    held.warn("careful")
    reporter.replay(held)
    assert [(e.kind, e.message) for e in seen] == [
        ("step", "Installing"), ("detail", "one"), ("detail", "two"), ("warning", "careful")]
    assert stream.getvalue().splitlines() == [e.line for e in seen] == reporter.lines
    assert stream.getvalue().splitlines()[0] == "-----> Installing"


def test_a_quiet_reporter_still_calls_back():
    seen: list[LogEvent] = []
    Reporter(quiet=True, on_event=seen.append).warn("x")
    assert seen == [LogEvent("warning", "x")]


def test_result_shapes_are_typed_dicts_of_the_real_keys(tmp_path):
    from slugbuild.pipeline import BuildResult
    from slugbuild.slug.inspect import describe_slug

    result = BuildResult(Path("s.tgz"), Path("s.json"), "0" * 64, 1, {"web": "x"}, {}, [], {})
    assert set(result.as_dict()) == set(results.BuildResultDict.__annotations__)

    procfile = tmp_path / "Procfile"
    procfile.write_text("web: python app.py\n")
    slug = tmp_path / "slug.tgz"
    with tarfile.open(slug, "w:gz") as tar:
        tar.add(procfile, arcname="./Procfile")
    described = describe_slug(slug)
    assert set(described) == set(results.SlugDescription.__annotations__)
    assert described["process_types"] == {"web": "python app.py"}
