"""Plain-ASGI tools of the request-stage effects: drop the connection, break the body.

No web framework here: ``scope``/``receive``/``send`` are the ASGI callables, typed below with
the same shapes as Starlette's (``starlette.types``), so the middleware passes its own.

Dropping a connection needs the server's transport: under uvicorn (h11 or httptools) it is
``send.__self__.transport``. ``reset`` aborts it with ``SO_LINGER`` 0 (the client reads a TCP
RST: ``httpx.ReadError``); ``close`` closes it (``httpx.RemoteProtocolError``: "Server
disconnected without sending a response"). Where there is no transport (in-process ASGI),
:func:`drop_connection` raises ``ConnectionResetError`` / ``ConnectionAbortedError`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Seconds to wait for the server to notice a connection we dropped.
DISCONNECT_WAIT_S = 5.0


def transport_of(send: Send) -> Any:
    """The server's transport behind ``send`` (uvicorn), or ``None``."""
    owner = getattr(send, "__self__", None)
    transport = getattr(owner, "transport", None)
    if transport is not None and hasattr(transport, "abort") and hasattr(transport, "close"):
        return transport
    return None


async def drop_connection(send: Send, receive: Receive, *, reset: bool,
                          read_body: bool = True) -> None:
    """Close (FIN) or reset (RST) the client's connection without an HTTP answer.

    With ``read_body``, the request body is read first (at most :data:`DISCONNECT_WAIT_S`
    seconds), so the client has finished writing and sees the drop when it reads its answer
    (else a client still writing would see a write error first, and httpx reports that as a
    plain disconnect).

    Raises:
        ConnectionResetError, ConnectionAbortedError: no transport to drop (in-process ASGI).
    """
    transport = transport_of(send)
    if read_body:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_until_body_read(receive), DISCONNECT_WAIT_S)
    if transport is None:
        if reset:
            raise ConnectionResetError("connection reset by the emulator (fault rule)")
        raise ConnectionAbortedError("connection closed by the emulator (fault rule)")
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError, ValueError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
    # Let the server see the disconnect, so it does not try to answer 500 itself.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(_until_disconnect(receive), DISCONNECT_WAIT_S)


async def _until_body_read(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def with_content_length(headers: Any, length: int) -> list[tuple[bytes, bytes]]:
    """``headers`` (ASGI ``[(name, value)]``) with ``content-length`` set to ``length``: in
    the place of the first one (later ones removed), else appended, as Starlette's
    ``MutableHeaders`` does."""
    value = str(length).encode("latin-1")
    out: list[tuple[bytes, bytes]] = []
    seen = False
    for name, old in headers:
        if name.lower() == b"content-length":
            if not seen:
                out.append((name, value))
                seen = True
            continue
        out.append((name, old))
    if not seen:
        out.append((b"content-length", value))
    return out


class BodyFault:
    """``send`` wrapper that holds the answer and sends it broken: ``truncated`` (half the
    body under the whole body's ``Content-Length``, then the connection closed), ``malformed``
    (:func:`malformed`) or ``empty``."""

    def __init__(self, kind: str, send: Send, raw_send: Send, receive: Receive) -> None:
        self.kind = kind
        self.send = send
        self.raw_send = raw_send
        self.receive = receive
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = dict(message)
            return
        if message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        await self._emit(b"".join(self.chunks))

    async def _emit(self, body: bytes) -> None:
        assert self.start is not None
        start = dict(self.start)
        headers = start.get("headers", [])
        if self.kind == "truncated":
            start["headers"] = with_content_length(headers, len(body))
            await self.send(start)
            cut = body[:len(body) // 2]
            if transport_of(self.raw_send) is None:
                await self.send({"type": "http.response.body", "body": cut})
                return
            await self.send({"type": "http.response.body", "body": cut, "more_body": True})
            await drop_connection(self.raw_send, self.receive, reset=False, read_body=False)
            return
        new = b"" if self.kind == "empty" else malformed(body)
        start["headers"] = with_content_length(headers, len(new))
        await self.send(start)
        await self.send({"type": "http.response.body", "body": new})


def malformed(body: bytes) -> bytes:
    """Invalid JSON that still looks like ``body``: quotes turned to single quotes, and a
    stray brace at the end (so even ``{}`` or a number does not parse)."""
    return body.replace(b'"', b"'") + b"}"
