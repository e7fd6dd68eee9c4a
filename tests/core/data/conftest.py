"""Fixtures of the data-layer tests: an isolated environment and a loopback HTTP server.

No test reaches the internet: every test runs with the data variables cleared, the cache in
``tmp_path`` and ``socket.connect`` refusing any address but loopback.
"""

from __future__ import annotations

import functools
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from anyformer.core.data.locations import ENV_CACHE, ENV_DATA, ENV_MIRROR, ENV_OFFLINE

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No data variables, the cache in tmp_path, and no connection beyond loopback."""
    for var in (ENV_DATA, ENV_MIRROR, ENV_OFFLINE):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOOPBACK:
            raise OSError(f"test tried to reach {address}: tests must stay on loopback")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return tmp_path / "cache" / "data"


class _Handler(SimpleHTTPRequestHandler):
    """Serves files from the server's folder; ``/truncated/PATH`` sends half of PATH and hangs up."""

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.server.seen.append(self.path)
        if self.path.startswith("/truncated/"):
            body = (Path(self.directory) / self.path.removeprefix("/truncated/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


class Server:
    """A loopback HTTP server over ``www`` (a folder of tmp_path) and the paths it was asked for."""

    def __init__(self, www: Path) -> None:
        self.www = www
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(www)))
        self.httpd.seen = []
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def seen(self) -> list[str]:
        return self.httpd.seen

    def put(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path``; return its URL."""
        (self.www / path).parent.mkdir(parents=True, exist_ok=True)
        (self.www / path).write_bytes(data)
        return f"{self.base}/{path}"


@pytest.fixture
def server(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    srv = Server(www)
    thread = threading.Thread(target=srv.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    thread.join(5)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
