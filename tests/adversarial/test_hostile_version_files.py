"""Version files whose numbers are absurdly long: `.python-version` and `runtime.txt`
holding a 100,000-digit part reached int(), which refuses past 4,300 digits, and
`plan`/`compile` ended in an internal error. They are an invalid version."""

from __future__ import annotations

from pathlib import Path

import pytest

from slugbuild import errors

from ..helpers import cli, limited

LONG = "1" * 100000


@pytest.mark.parametrize("name, content", [(".python-version", f"3.{LONG}\n"),
                                           (".python-version", f"{LONG}.12\n"),
                                           ("runtime.txt", f"python-3.12.{LONG}\n")])
def test_a_version_with_a_huge_number_is_invalid(tmp_path: Path, name: str,
                                                 content: str) -> None:
    (tmp_path / "requirements.txt").write_text("six\n")
    (tmp_path / name).write_text(content)
    result = limited(cli("plan", tmp_path))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"Error [{errors.INVALID_PYTHON_VERSION.code}]: Invalid Python version in {name}" \
        in result.stderr
    assert len(result.stderr) < 4000
