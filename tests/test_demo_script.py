"""`make demo` survives a slow first request (a loaded machine): a new user's first command."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"


def _load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("slugbuild_demo_script", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Running:
    """Stands in for the web process: still running."""

    def poll(self) -> None:
        return None


@pytest.fixture
def slow_first_answer() -> Iterator[str]:
    """A loopback server whose first answer takes longer than the client's read timeout."""
    calls: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            calls.append(1)
            if len(calls) == 1:
                time.sleep(1.5)
            body = b"<html>up</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_read_timeout_is_retried_not_a_traceback(slow_first_answer: str) -> None:
    demo = _load_demo()
    page = demo._get_when_up(slow_first_answer, _Running(), timeout=20, read_timeout=0.5)
    assert page.status_code == 200 and page.text == "<html>up</html>"


def test_no_answer_ends_in_one_message() -> None:
    demo = _load_demo()
    with pytest.raises(SystemExit, match="no answer from"):
        demo._get_when_up("http://127.0.0.1:9/", _Running(), timeout=0.5, read_timeout=0.2)


def test_the_summary_gives_the_size_in_the_build_logs_units() -> None:
    """The log's "Done: 25.1 MB" and the summary's size agree for the same slug."""
    from slugbuild.slug_size import human

    assert _load_demo().size_text(26267026) == f"26267026 bytes ({human(26267026)})"
    assert human(26267026) == "25.1 MB"
