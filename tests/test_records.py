"""records.py: the one reader and writer of dist-info RECORD files (CSV, as PEP 376 says)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from slugbuild import records, relocate


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _site(tmp_path: Path, record: str, files: dict[str, bytes]) -> Path:
    site = tmp_path / "site-packages"
    (site / "x-1.dist-info").mkdir(parents=True)
    (site / "x-1.dist-info" / "RECORD").write_text(record)
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    return site


def test_a_path_with_a_comma_is_refreshed_and_dropped_as_csv(tmp_path):
    record = ('"x/a,b.py",sha256=old,3\n'
              "x/plain.py,sha256=keep,4\n"
              "x-1.dist-info/RECORD,,\n")
    site = _site(tmp_path, record, {"x/a,b.py": b"new bytes", "x/plain.py": b"four"})
    relocate.refresh_records(site, [site / "x" / "a,b.py"])
    text = (site / "x-1.dist-info" / "RECORD").read_text()
    assert text == (f'"x/a,b.py",sha256={_digest(b"new bytes")},9\n'
                    "x/plain.py,sha256=keep,4\n"  # lines nobody changed keep their bytes
                    "x-1.dist-info/RECORD,,\n")
    assert [path for path, _digest_hex, _size in records.parse_record(text)] == [
        "x/a,b.py", "x/plain.py", "x-1.dist-info/RECORD"]

    relocate.drop_recorded_files(site, [site / "x" / "a,b.py"])
    assert not (site / "x" / "a,b.py").exists()
    assert (site / "x-1.dist-info" / "RECORD").read_text() == (
        "x/plain.py,sha256=keep,4\nx-1.dist-info/RECORD,,\n")


def test_a_record_nobody_changes_is_not_rewritten(tmp_path):
    site = _site(tmp_path, "x/plain.py,sha256=keep,4\n", {"x/plain.py": b"four"})
    record = site / "x-1.dist-info" / "RECORD"
    before = record.stat().st_ino
    relocate.refresh_records(site, [site / "x" / "other.py"])
    assert record.stat().st_ino == before  # not replaced: write_replacing never ran
    assert records.record_line("a b/c.py", b"") == f"a b/c.py,sha256={_digest(b'')},0"
