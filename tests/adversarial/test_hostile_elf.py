"""Crafted ELF files: the stack check parses ELF files from the slug (its packages'
libraries), from slugs made elsewhere and from run images pulled from a registry.
A crafted one is "not an ELF file this reader understands" (skipped, or the image
refused), never a traceback, minutes of CPU or gigabytes of memory."""

from __future__ import annotations

import io
import struct
import sys
import textwrap
from pathlib import Path

import pytest

from slugbuild.stack_compat import NotElf, read_elf, slug_requirements

from ..helpers import limited

PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_NEEDED, DT_STRTAB = 0, 1, 5
DT_VERNEED, DT_VERNEEDNUM = 0x6FFFFFFE, 0x6FFFFFFF


def crafted_elf(dynamic: list[tuple[int, int]], tail: bytes, tail_at: int,
                size: int) -> bytes:
    """A little-endian ELF64 whose one PT_LOAD maps the whole file at address 0, with the
    ``dynamic`` entries at offset 256 and ``tail`` at ``tail_at``."""
    data = bytearray(size)
    data[:16] = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    struct.pack_into("<HHIQQQIHHHHHH", data, 16, 3, 62, 1, 0, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    struct.pack_into("<IIQQQQQQ", data, 64, PT_LOAD, 5, 0, 0, 0, size, size, 4096)
    struct.pack_into("<IIQQQQQQ", data, 120, PT_DYNAMIC, 6, 256, 256, 256,
                     16 * (len(dynamic) + 1), 16 * (len(dynamic) + 1), 8)
    for index, (tag, value) in enumerate(dynamic):
        struct.pack_into("<qQ", data, 256 + 16 * index, tag, value)
    data[tail_at:tail_at + len(tail)] = tail
    return bytes(data)


def version_bomb() -> bytes:
    """4096 version-need records all pointing at one chain of 4096 auxiliary records, each
    naming a distinct 3 KB string: 16 million steps and gigabytes of strings unbounded."""
    strtab, verneed, aux_at = 4096, 16384, 16384 + 4096 * 16
    strings = b"\0" + b"A" * 8192 + b"\0"
    records = bytearray()
    for index in range(4096):
        here = verneed + 16 * index
        records += struct.pack("<HHIII", 1, 4096, 1, aux_at - here, 16)
    chain = bytearray()
    for index in range(4096):
        chain += struct.pack("<IHHII", 0, 0, 2, 1 + index, 16)
    image = bytearray(crafted_elf([(DT_STRTAB, strtab), (DT_VERNEED, verneed),
                                   (DT_VERNEEDNUM, 4096)], b"", 0, aux_at + len(chain)))
    image[strtab:strtab + len(strings)] = strings
    image[verneed:verneed + len(records)] = records
    image[aux_at:aux_at + len(chain)] = chain
    return bytes(image)


@pytest.mark.parametrize("value", [1 << 63, (1 << 64) - 1, 1 << 62])
def test_offsets_past_any_file_are_not_elf(value: int) -> None:
    # A string-table address far past the file: seek() raised OverflowError.
    image = crafted_elf([(DT_STRTAB, 0), (DT_NEEDED, value)], b"", 0, 1024)
    with pytest.raises(NotElf):
        read_elf(io.BytesIO(image))


def test_a_header_offset_past_any_file_is_not_elf() -> None:
    image = bytearray(crafted_elf([], b"", 0, 512))
    struct.pack_into("<Q", image, 32, (1 << 64) - 1)  # e_phoff
    with pytest.raises(NotElf):
        read_elf(io.BytesIO(bytes(image)))


def test_a_version_table_bomb_stops_within_memory_and_cpu_limits(tmp_path: Path) -> None:
    (tmp_path / "bomb.so").write_bytes(version_bomb())
    script = textwrap.dedent(f"""
        from slugbuild.stack_compat import NotElf, read_elf
        try:
            read_elf(open({str(tmp_path / 'bomb.so')!r}, 'rb'))
        except NotElf as exc:
            print('refused:', exc)
    """)
    result = limited([sys.executable, "-c", script], memory=400 << 20, cpu=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused: more "), result.stdout


def test_a_slug_with_crafted_libraries_is_checked_without_them(tmp_path: Path) -> None:
    # The stack check of a build skips what is not a readable ELF file; the real ones count.
    lib = tmp_path / ".heroku" / "python" / "lib"
    lib.mkdir(parents=True)
    (lib / "bomb.so").write_bytes(version_bomb())
    (lib / "far.so").write_bytes(crafted_elf([(DT_STRTAB, 0), (DT_NEEDED, 1 << 63)], b"", 0,
                                             1024))
    (lib / "real.so").write_bytes(crafted_elf([(DT_STRTAB, 1024), (DT_NEEDED, 1)],
                                              b"\0libz.so.1\0", 1024, 2048))
    requirements = slug_requirements(tmp_path)
    assert requirements.needed == ["libz.so.1"]


def test_a_run_image_of_many_whiteouts_is_read_in_bounded_time(tmp_path: Path) -> None:
    # A layer of 20,000 whiteouts over 20,000 files: each whiteout scanned every path
    # (4 x 10^8 steps). Applied in one pass per layer, it takes well under the CPU limit,
    # and the tree is the same: the whited-out paths are gone, the rest kept.
    script = textwrap.dedent("""
        import io, tarfile
        from slugbuild.stack_compat import RunImageFiles

        def layer(names):
            raw = io.BytesIO()
            with tarfile.open(fileobj=raw, mode="w") as tar:
                for name in names:
                    info = tarfile.TarInfo(name)
                    info.size = 0
                    tar.addfile(info, io.BytesIO(b""))
            raw.seek(0)
            return raw

        count = 20000
        lower = layer([f"usr/share/d{i % 300}/f{i}" for i in range(count)]
                      + ["keep/a", "opaque/x", "opaque/sub/y"])
        upper = layer([f"usr/share/d{i % 300}/.wh.f{i}" for i in range(count - 1)]
                      + ["opaque/.wh..wh..opq", "opaque/new"])
        files = RunImageFiles.from_layers([lower, upper])
        print(sorted(k for k, e in files.entries.items() if e.kind == "file"))
    """)
    result = limited([sys.executable, "-c", script], memory=1 << 30, cpu=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sorted(["/usr/share/d199/f19999", "/keep/a",
                                                "/opaque/new"]))
