"""Fakes the adversarial tests share (a test module never imports another one,
tests/test_suite_rules.py): a registry answering what a test scripts, and layer
entries whose index matches their part exactly."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import socketserver
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slugbuild.layer_artifact import ARTIFACT_FORMAT, Fetched
from slugbuild.oci.registry import RegistryClient

HUGE = 64 << 20  # what a hostile registry streams at an answer slugbuild parses


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    answer: Callable[[http.server.BaseHTTPRequestHandler], None]
    seen_authorization: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.seen_authorization.append(self.headers.get("Authorization", ""))
        self.server.answer(self)


def endless(status: int, content_type: str = "application/json") -> Callable[..., None]:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(HUGE))
        handler.end_headers()
        chunk = b"[" * (1 << 20)
        try:
            for _ in range(HUGE // len(chunk)):
                handler.wfile.write(chunk)
        except OSError:
            pass
    return answer


def fixed(status: int, body: bytes, headers: dict[str, str] | None = None
          ) -> Callable[..., None]:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return answer


def server(answer: Callable[..., None]) -> _Server:
    made = _Server(("127.0.0.1", 0), _Handler)
    made.answer, made.seen_authorization = answer, []
    return made


def client(made: _Server, **options: object) -> RegistryClient:
    options.setdefault("timeout", 20)
    return RegistryClient(f"127.0.0.1:{made.server_address[1]}", "app", attempts=1,
                          **options)  # type: ignore[arg-type]


KEY = "ab" * 32
NAME = f"python-3.12.0-{KEY[:12]}"
SPACE = "sb1-test"


def part_of(entries: list[tuple[str, str | None, bytes]]) -> bytes:
    """A gzipped tar of (name below ./, link target or None, content), without the
    end-of-archive blocks, as a layer's slug part is (the slug's tar goes on after it)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, target, content in entries:
            info = tarfile.TarInfo(f"./{name}")
            if target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
        members_end = tar.offset
    return gzip.compress(raw.getvalue()[:members_end])


def fetched(entries: list[tuple[str, str | None, bytes]], dirs: list[str],
            **index_extra: Any) -> Fetched:
    """An entry whose index matches its part exactly: only its intent is hostile."""
    files = {name: [len(content), 0o100644, hashlib.sha256(content).hexdigest()]
             for name, target, content in entries if target is None}
    symlinks = {name: target for name, target, _ in entries if target is not None}
    config = {"format": ARTIFACT_FORMAT, "namespace": SPACE, "kind": "runtimes",
              "name": NAME, "key": KEY, "inputs": {}, "part": {"name": "p", "prefix": "./"}}
    index = {"files": files, "symlinks": symlinks, "dirs": dirs, "host_paths": None,
             **index_extra}
    return Fetched(config, index, part_of(entries))


def layer_names(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in (cache_dir / "runtimes").iterdir()) \
        if (cache_dir / "runtimes").is_dir() else []


def trickle(content_type: str = "application/json", seconds: float = 30.0,
            every: float = 0.2) -> Callable[..., None]:
    """An answer declaring 1 MiB that sends one byte every ``every`` seconds (well
    within any read timeout) for ``seconds``, or until the client hangs up: a slowloris
    registry."""
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(1 << 20))
        handler.end_headers()
        try:
            for _ in range(int(seconds / every)):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(every)
        except OSError:
            pass
    return answer
