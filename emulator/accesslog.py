"""``serve --access-log``: one line per HTTP request, ``GET /path 200 12.3 ms``.

A pure ASGI middleware outside the whole app (so it times and sees every answer: vendor
routes, the control plane, result files, fault answers; a dropped connection shows status
``-``). Lines go through the standard library's :class:`logging.handlers.QueueHandler` to a
:class:`~logging.handlers.QueueListener` thread that writes them, so a slow terminal or a
full pipe never blocks the event loop. Off by default (like WireMock without ``--verbose``):
a ``serve`` whose stdout is a pipe nobody reads must not fill it.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import time
from typing import IO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The logger the lines go to (``propagate`` off: uvicorn's ``--log-level`` does not hide them).
LOGGER_NAME = "rmbg_emulator.access"


class AccessLog:
    """Wrap ``app``; log ``METHOD PATH STATUS MS ms`` (milliseconds from the request's start to
    the end of its answer, one decimal) for each ``http`` request to ``logger`` at INFO.

    Other scopes (the lifespan) pass through unlogged.
    """

    def __init__(self, app: ASGIApp, logger: logging.Logger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        watch = _StatusSend(send)
        try:
            await self.app(scope, receive, watch.send)
        finally:
            ms = (time.perf_counter() - started) * 1000.0
            status = "-" if watch.status is None else watch.status
            self.logger.info("%s %s %s %.1f ms", scope.get("method", "-"),
                             scope.get("path", "-"), status, ms)


class _StatusSend:
    """``send`` wrapper noting the answer's status. Its ``send`` is a bound method whose owner
    carries the server's ``transport`` (uvicorn's ``send.__self__.transport``), so the
    connection fault effects can still drop the connection through it
    (:func:`emulator.core.faults.asgi.transport_of`)."""

    __slots__ = ("_send", "status", "transport")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status: int | None = None
        self.transport = getattr(getattr(send, "__self__", None), "transport", None)

    async def send(self, message: Message) -> None:
        """Note the status of ``http.response.start``; pass every message on."""
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self._send(message)


def start_logger(stream: IO[str] | None = None) -> tuple[logging.Logger,
                                                         logging.handlers.QueueListener]:
    """The access logger, its lines written to ``stream`` (default stdout) by a listener
    thread, which is started; call ``listener.stop()`` to flush and end it."""
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(logging.handlers.QueueHandler(lines))
    writer = logging.StreamHandler(stream or sys.stdout)
    writer.setFormatter(logging.Formatter("%(message)s"))
    listener = logging.handlers.QueueListener(lines, writer)
    listener.start()
    return logger, listener
