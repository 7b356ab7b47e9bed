"""A local HTTP file server and a closed loopback port, for download tests that never leave 127.0.0.1."""

import dataclasses
import functools
import http.server
import socket
import threading
from pathlib import Path

import pytest


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serve files from a folder, note each requested path, and keep the test output quiet."""

    def __init__(self, *args, requests, **kwargs):
        self.requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format, *args):
        pass


@dataclasses.dataclass
class FileServer:
    folder: Path  # the served folder
    base_url: str  # http://127.0.0.1:PORT
    requests: list[str]  # the path of every GET request, in order

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


@pytest.fixture
def file_server(tmp_path):
    """Serve tmp_path/served over HTTP on 127.0.0.1 for one test."""
    folder = tmp_path / "served"
    folder.mkdir()
    requests: list[str] = []
    handler = functools.partial(RecordingHandler, directory=str(folder), requests=requests)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield FileServer(folder, f"http://127.0.0.1:{server.server_address[1]}", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url(path: str = "") -> str:
    """Return a loopback URL on a port that nothing listens on, so a download fails at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"
