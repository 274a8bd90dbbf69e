"""SHA-256 of files, each read once per process (``DIGESTS``).

Apart from cache.py so that the slug readers (slug/, records.py) can hash files
without reaching the builder's cache code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (slugs and archives can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


StatKey = tuple[int, int, int, int, int]


def stat_key(st: os.stat_result) -> StatKey:
    """What identifies a file's content while it does not change: (st_dev, st_ino,
    size, mtime_ns, ctime_ns)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Digests:
    """SHA-256 of files this process already read, by their ``stat_key``, so a file
    is hashed once per build however many checks need its digest (the RECORD
    check after an install, files.json when the layer is published, a kept part).

    Any change to a file's bytes, through any of its links, moves its ctime to
    the file system's clock, and no system call sets a ctime. So a digest read
    while a file's key was K is its digest for as long as its key is K, provided
    K's ctime was already older than the file system's clock before the read
    began: a file changed in the clock tick the read began in could be changed
    again within that tick and keep its ctime (git's "racy" index entries). Such
    a file is not remembered. The clock is read as the ctime of a probe file
    created in a directory registered for the file's device (``watch``); files on
    other devices are not remembered. A clock step backwards would defeat the
    ctime, as it would for git; slugbuild's other checks rely on it the same way.
    """

    _PROBE_AGE = 0.25  # seconds a clock reading is reused: older only remembers less
    _LIMIT = 500_000  # entries; forgotten all at once beyond (a long-lived process)

    def __init__(self) -> None:
        self._known: dict[StatKey, str] = {}
        self._probes: dict[int, tuple[str, str]] = {}  # device -> (directory, name prefix)
        self._clocks: dict[int, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def watch(self, directory: Path | str, prefix: str = ".clock.") -> None:
        """Let files on ``directory``'s device be remembered: probes are made there,
        named ``prefix``... (a cache's scratch names them after its lease, so one left
        by a killed process is removed with its other scratch)."""
        with contextlib.suppress(OSError):
            self._probes[os.stat(directory).st_dev] = (str(directory), prefix)

    def clock(self, device: int) -> int | None:
        """A ctime no earlier than the file system's clock at some moment before
        this call (None: no probe directory on that device)."""
        now = time.monotonic()
        with self._lock:
            reading = self._clocks.get(device)
        if reading is not None and now - reading[0] < self._PROBE_AGE:
            return reading[1]
        probe = self._probes.get(device)
        if probe is None:
            return None
        try:
            fd, name = tempfile.mkstemp(prefix=probe[1], dir=probe[0])
        except OSError:
            return None
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name)
        if st.st_dev != device:
            return None
        with self._lock:
            self._clocks[device] = (now, st.st_ctime_ns)
        return st.st_ctime_ns

    def known(self, st: os.stat_result) -> str | None:
        """The digest of the file whose stat is ``st``, if read before."""
        return self._known.get(stat_key(st))

    def remember(self, st: os.stat_result, digest: str, clock: int | None) -> None:
        """Note ``digest`` for a file whose stat was ``st`` before and after it was
        read, the read having begun after ``clock`` was taken on its device."""
        if clock is None or st.st_ctime_ns >= clock:
            return
        with self._lock:
            if len(self._known) >= self._LIMIT:
                self._known.clear()
            self._known[stat_key(st)] = digest

    def sha256(self, path: str | Path) -> tuple[str, os.stat_result]:
        """The file's digest (remembered, or read now) and its stat after the read.
        A file whose stat changed while it was read (another build hard-linking
        the same file of uv's cache moves its ctime too) is not remembered."""
        before = os.lstat(path)
        known = self.known(before)
        if known is not None:
            return known, before
        clock = self.clock(before.st_dev)
        digest = file_sha256(path)
        after = os.lstat(path)
        if stat_key(after) == stat_key(before):
            self.remember(after, digest, clock)
        return digest, after


# The process's one memory of file digests (threads share it: builds in threads).
DIGESTS = Digests()
