"""Downloads through a real local HTTP server: a body cut short never becomes the file."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mgr_agent import download
from mgr_agent.errors import DownloadFailed
from mgr_agent.layout import Layout

BODY = bytes(range(256)) * 4096          # 1 MiB


class _Server:
    """Serves BODY at /pkg.zip. The first ``busy`` answers are 503; the next ``short`` ones
    declare the full length but send only half of it and close the connection."""

    def __init__(self, busy: int, short: int) -> None:
        self.busy = busy
        self.short = short
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.hits += 1
                if outer.hits <= outer.busy:
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.send_header("Connection", "close")
                self.end_headers()
                if outer.hits <= outer.busy + outer.short:
                    self.wfile.write(BODY[: len(BODY) // 2])
                else:
                    self.wfile.write(BODY)
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/pkg.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


Serve = Callable[..., _Server]


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[_Server] = []

    def start(busy: int = 0, short: int = 0) -> _Server:
        started.append(_Server(busy, short))
        return started[-1]

    yield start
    for server in started:
        server.close()


def test_a_retried_download_leaves_one_complete_file(tmp_path: Path, serve: Serve) -> None:
    server = serve(busy=1)
    layout = Layout.at(tmp_path)
    said: list[str] = []
    policy = download.Policy(allow_http=True, backoff=0.0, retries=2)
    got = download.fetch(server.url, hashlib.sha256(BODY).hexdigest(), layout,
                         policy=policy, progress=said.append)
    try:
        assert got.read_bytes() == BODY
        assert got.stat().st_mode & 0o777 == 0o600
        assert [p.name for p in got.parent.iterdir()] == [got.name]   # no temp file beside it
        assert server.hits == 2
        assert any("HTTP 503" in line and "retrying" in line for line in said), said
    finally:
        download.discard(got)


def test_a_body_cut_short_leaves_no_partial_file(tmp_path: Path, serve: Serve) -> None:
    """The temp file of the failed write is gone too (else the folder could not be removed)."""
    server = serve(short=1)
    layout = Layout.at(tmp_path)
    policy = download.Policy(allow_http=True, backoff=0.0, retries=1)
    with pytest.raises(DownloadFailed, match="IncompleteRead"):
        download.fetch(server.url, hashlib.sha256(BODY).hexdigest(), layout, policy=policy)
    assert server.hits == 1
    assert not download.downloads_dir(layout).exists()
    assert not layout.state_dir.exists()
