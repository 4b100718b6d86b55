"""A webhook receiver on a free port that records what it is sent (for tests and the plugin)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator.testing.server import free_port


@dataclass(frozen=True)
class Received:
    """One request the sink got: path, raw body, headers (lower-case names), unix time."""

    path: str
    body: bytes
    headers: dict[str, str]
    at: float
    answered: int

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            ValueError: the body is not JSON.
        """
        return json.loads(self.body)


class WebhookSink:
    """Records every POST; answers 500 to the first ``fail_first`` of them, then 200.

    ``url`` is ``http://127.0.0.1:PORT``; any path is accepted (``url + "/hook"``).
    """

    def __init__(self, *, fail_first: int = 0, status_when_failing: int = 500) -> None:
        self.fail_first = fail_first
        self.status_when_failing = status_when_failing
        self.received: list[Received] = []
        self._lock = threading.Condition()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/{path:path}", self._receive, methods=["POST", "PUT"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            failing = self.fail_first > 0
            if failing:
                self.fail_first -= 1
            status = self.status_when_failing if failing else 200
            self.received.append(Received("/" + request.path_params["path"], body,
                                          {k.lower(): v for k, v in request.headers.items()},
                                          time.time(), status))
            self._lock.notify_all()
        return JSONResponse({"ok": not failing}, status_code=status)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Block until ``count`` requests arrived (or ``timeout_s``); return all received."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return list(self.received)

    def clear(self) -> None:
        """Forget what was received."""
        with self._lock:
            self.received.clear()

    def start(self) -> WebhookSink:
        """Start serving; returns once it accepts connections.

        Raises:
            RuntimeError: it did not start in 20 s.
        """
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("webhook sink did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> WebhookSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
