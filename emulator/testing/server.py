"""Run the emulator in a background thread on a free port (for tests and the pytest plugin)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from emulator.app import Emulator, create_app
from emulator.settings import Settings
from emulator.tls import TLSFiles, create_tls_files


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmulatorServer:
    """A real uvicorn server in a daemon thread.

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``url`` is
    ``http://127.0.0.1:PORT``, or ``https://...`` with ``settings.tls``: then the server
    certificate comes from a local CA (:mod:`emulator.tls`) whose bundle is :attr:`ca_bundle`
    (set ``SSL_CERT_FILE`` to it in clients).

    Raises:
        RuntimeError: from :meth:`start` when the server does not come up in ``timeout_s``.
    """

    def __init__(self, settings: Settings | None = None, *, timeout_s: float = 30.0) -> None:
        base = settings or Settings.from_env()
        port = base.port if base.port not in (0, 8000) else free_port(base.host)
        self.settings = base.replace(port=port)
        self.app = create_app(self.settings)
        self.emulator: Emulator = self.app.state.emulator
        self.tls: TLSFiles | None = None
        if self.settings.tls:
            self.tls = create_tls_files([*self.emulator.host_names(), self.settings.host],
                                        self.settings.tls_dir)
        config = uvicorn.Config(
            self.app, host=self.settings.host, port=port, log_level="warning", lifespan="on",
            ssl_certfile=str(self.tls.cert_chain) if self.tls else None,
            ssl_keyfile=str(self.tls.private_key) if self.tls else None,
            timeout_graceful_shutdown=self.settings.graceful_shutdown_s,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._timeout_s = timeout_s

    @property
    def url(self) -> str:
        """Base URL, no trailing slash."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.settings.host}:{self.settings.port}"

    @property
    def ca_bundle(self) -> Path | None:
        """The CA certificate (PEM) that signs the server's certificate; ``None`` without TLS."""
        return self.tls.ca_bundle if self.tls is not None else None

    def start(self) -> EmulatorServer:
        """Start serving; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self._server.run, name="rmbg-emulator",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self._timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Ask the server to exit and wait for its thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
