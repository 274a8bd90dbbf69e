"""What the incremental layer (incremental.py) trusts of a previous layer another app
made: each distribution's RECORD, as uv wrote it. A package cannot hide an overwrite
of another distribution's files behind its own RECORD: uv refuses a wheel with a
second ``.dist-info``, and lists in the installing wheel's RECORD every file its
``.data`` directory put over another distribution's, so both RECORDs claim it and the
layer is not built onto. Checked here against the uv slugbuild runs (a quick local
install from two wheels, no index)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from slugbuild import incremental
from slugbuild.cache import build_index
from slugbuild.installers.uv import uv_binary

SITE = "lib/python3.12/site-packages"


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(
        b"=").decode()


def _wheel(directory: Path, name: str, files: dict[str, bytes]) -> None:
    dist = f"{name}-1.0.dist-info"
    files = {**files,
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n\n"}
    record = "".join(f"{rel},{_hash(data)},{len(data)}\n" for rel, data in files.items())
    with zipfile.ZipFile(directory / f"{name}-1.0-py3-none-any.whl", "w") as wheel:
        for rel, data in files.items():
            wheel.writestr(rel, data)
        wheel.writestr(f"{dist}/RECORD", record + f"{dist}/RECORD,,\n")


def _install(wheels: Path, tree: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [uv_binary(), "pip", "install", "--no-config", "--no-index", "--find-links",
         str(wheels), "--python", sys.executable, "--python-version", "3.12",
         "--target", str(tree / SITE), *names],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                          "UV_CACHE_DIR": str(wheels / "c")})


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    directory.mkdir()
    _wheel(directory, "victim", {"victim.py": b"SAFE = True\n"})
    return directory


def test_an_overwrite_through_data_is_claimed_by_both_records(tmp_path: Path,
                                                             wheels: Path) -> None:
    evil_record = b"victim.py,sha256=x,1\n"
    _wheel(wheels, "evil", {"evil/__init__.py": b"",
                            "evil-1.0.data/purelib/victim.py": b"SAFE = False\n",
                            "evil-1.0.data/purelib/victim-1.0.dist-info/RECORD": evil_record})
    tree = tmp_path / "tree"
    done = _install(wheels, tree, "victim", "evil")
    assert done.returncode == 0, done.stderr
    with pytest.raises(incremental.NotIncremental, match="installed by several"):
        incremental._distributions(tree, build_index(tree), "python3.12")


def test_a_wheel_with_a_second_dist_info_is_refused_by_uv(tmp_path: Path,
                                                         wheels: Path) -> None:
    _wheel(wheels, "evil", {"victim.py": b"SAFE = False\n",
                            "victim-1.0.dist-info/RECORD": b"victim.py,,\n"})
    done = _install(wheels, tmp_path / "tree", "victim", "evil")
    assert done.returncode != 0 and "dist-info" in done.stderr
