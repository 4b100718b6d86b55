"""Requests made straight on an ASGI app, in process (no socket), for the benchmarks that
measure the emulator's own CPU: :func:`scope` builds an HTTP scope, :func:`call` runs it.

The benchmarks folder is not a package: scripts import this module as a sibling
(``from inproc import call, scope``), which works when run as ``python benchmarks/X.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def scope(method: str, path: str, headers: Iterable[tuple[bytes, bytes]] = (),
          body: bytes = b"") -> dict[str, Any]:
    """An HTTP/1.1 scope for ``method`` ``path`` on host ``127.0.0.1:8000`` with ``headers``
    (lower-case names) and, when ``body`` is given, its JSON content type and length."""
    sent = [(b"host", b"127.0.0.1:8000"), *headers]
    if body:
        sent += [(b"content-type", b"application/json"),
                 (b"content-length", str(len(body)).encode())]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": sent,
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}


async def call(app: Any, request: dict[str, Any], body: bytes = b"") -> tuple[int, bytes]:
    """Run one request (a copy of the scope ``request``) on ``app``; its status and body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(dict(request), receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])
