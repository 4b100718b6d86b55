"""Run the emulator in a background thread on a free port (for tests and the pytest plugin)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from emulator.app import Emulator, create_app
from emulator.settings import Settings


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmulatorServer:
    """A real uvicorn server in a daemon thread.

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``url`` is
    ``http://127.0.0.1:PORT``.

    Raises:
        RuntimeError: from :meth:`start` when the server does not come up in ``timeout_s``.
    """

    def __init__(self, settings: Settings | None = None, *, timeout_s: float = 30.0) -> None:
        base = settings or Settings.from_env()
        port = base.port if base.port not in (0, 8000) else free_port(base.host)
        self.settings = base.replace(port=port)
        self.app = create_app(self.settings)
        self.emulator: Emulator = self.app.state.emulator
        config = uvicorn.Config(self.app, host=self.settings.host, port=port,
                                log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._timeout_s = timeout_s

    @property
    def url(self) -> str:
        """Base URL, no trailing slash."""
        return f"http://{self.settings.host}:{self.settings.port}"

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
