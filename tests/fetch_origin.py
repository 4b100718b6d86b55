"""A plain HTTP server on 127.0.0.1 for input-fetch tests: an image, a trickle, redirects."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import png_bytes, small_photo

PNG = png_bytes(small_photo(16))


class _Handler(BaseHTTPRequestHandler):
    """``/image.png`` an image; ``/trickle`` one byte every 0.2 s (for about 5 hours: each
    read is quick, so only an overall deadline stops it); ``/redirect?to=URL`` a 302 to URL.
    Every request's ``Host`` header is recorded in ``hosts``."""

    hosts: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).hosts.append(self.headers.get("Host", ""))
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(100000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:  # the client went away
                pass
        else:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)


class FetchOrigin:
    """The server, in a daemon thread; ``url`` is ``http://127.0.0.1:PORT``."""

    hosts = _Handler.hosts

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FetchOrigin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
