"""The pyc store (``CACHE/pyc``) is shared by every app: a pyc compiled for a source
at a path serves every later build compiling the same bytes at the same path. The
compile runs the build's interpreter, so code the build's prefix holds must not run
in it: a ``sitecustomize.py`` or a package's ``.pth`` in site-packages (a pre_compile
hook, or the install itself, puts them there when the packages go into the build's
prefix), or a standard library module the hook or a package's build edited. Such
code stored pycs of its own making under the clean keys, and another app, with no
hook at all, shipped them (a checked-hash pyc whose header names the right source
hash runs whatever code it holds)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from slugbuild import compile_app
from slugbuild.log import Reporter

from ..helpers import make_app, seed_runtimes

SITE = ".heroku/python/lib/python3.12/site-packages"
FILES = {
    ".python-version": "3.12\n",
    "requirements.txt": "six==1.17.0\n",
    "Procfile": "web: python -m http.server $PORT\n",
}
# Makes every compile of six.py print POISONED (at its end: six starts with a __future__ import).
PATCH = (
    "import builtins\n"
    "_compile = builtins.compile\n"
    "def compile(source, filename, *args, **kwargs):\n"
    "    if str(filename).endswith('/six.py') and isinstance(source, bytes):\n"
    "        source = source + b'\\nprint(\"POISONED\")\\n'\n"
    "    return _compile(source, filename, *args, **kwargs)\n"
    "builtins.compile = compile\n"
)
HOOKS = {
    "sitecustomize": f"cat > {SITE}/sitecustomize.py <<'EOF'\n{PATCH}EOF\n",
    # py_compile is imported by the compile script: the patch appended to it.
    "stdlib": f"cat >> .heroku/python/lib/python3.12/py_compile.py <<'EOF'\n{PATCH}EOF\n",
}


def _six_pyc(slug: Path) -> bytes:
    with tarfile.open(slug) as tar:
        name = next(n for n in tar.getnames() if n.endswith("__pycache__/six.cpython-312.pyc"))
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


@pytest.mark.slow
@pytest.mark.parametrize("route", sorted(HOOKS))
def test_code_in_one_builds_prefix_never_compiles_another_apps_pycs(
        tmp_path: Path, runtime_seed: Path, route: str) -> None:
    cache = seed_runtimes(runtime_seed, tmp_path / "cache")
    hook = "#!/bin/sh\nset -e\n" + HOOKS[route]
    editor = make_app(tmp_path / "editor", {**FILES, "bin/pre_compile": hook})
    (editor / "bin/pre_compile").chmod(0o755)
    compile_app(editor, tmp_path / "editor.tgz", cache_dir=cache, reporter=Reporter(quiet=True))

    other = make_app(tmp_path / "other", FILES)
    result = compile_app(other, tmp_path / "other.tgz", cache_dir=cache,
                         reporter=Reporter(quiet=True))
    clean = _six_pyc(result.slug_path)
    assert b"POISONED" not in clean
    # The clean build still shares its pycs through the store.
    assert any(entry.read_bytes() == clean for entry in (cache / "pyc").glob("*/*"))
