"""The one JSON body parser of the app: size, nesting and structure limits, parsed off the loop.

Every JSON request body (vendor requests through :mod:`emulator.guard` and
``VendorAdapter.json_body``, every ``/_emulator`` endpoint) is parsed by :func:`parse_json` /
:func:`parse_json_async`, so a body that is not acceptable JSON is always an
:class:`~emulator.errors.InvalidInput` with a message, rendered as the vendor's own 400/422
(or the control plane's 400), never a 500.

The limits, and why:

- **size**: :func:`json_body_limit` of ``Settings.max_input_bytes``: the base64 text of the
  largest accepted file plus 1 MiB for the rest of the request. With the default 25 MiB that
  is 36,001,112 bytes (about 34.3 MiB). The middleware refuses a larger ``Content-Length``
  before reading anything, and stops reading a chunked body once past it (:class:`CappedReceive`),
  both as :class:`BodyTooLarge` (413).
- **nesting**: at most :data:`MAX_DEPTH` (64) levels of arrays and objects. Python's
  ``json.loads`` recurses once per level and raised ``RecursionError`` (a 500) near 1,000.
- **structure**: at most :data:`MAX_STRUCTURE_BYTES` (1 MiB) outside strings. A vendor request
  is an object of a few fields whose one large value is a string (a URL or base64 image), so
  this costs nothing real, and it bounds the Python objects a body can make: ``[{},{},...]``
  made about 24 bytes of memory per body byte (a 50 MB array cost 375 MB and stalled the loop
  for 1.3-2 s); strings cost about their own size.

Both shape checks are linear: a body with at most 64 brackets, braces and commas in all (a
vendor request with a base64 image) passes on three ``bytes.count``; any other runs on a copy
with string contents removed (one regex pass, about 20 ns a byte), depth by a numpy
cumulative sum.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import Message, Receive

from emulator.errors import InvalidInput

#: Deepest nesting of arrays and objects accepted.
MAX_DEPTH = 64
#: Most bytes of a body outside its strings (its structure, numbers and literals).
MAX_STRUCTURE_BYTES = 1024 * 1024
#: What the size limit allows beyond the base64 text of the largest accepted file (bytes).
BODY_MARGIN_BYTES = 1024 * 1024
#: Bodies larger than this are checked and parsed in a worker thread, off the event loop.
THREAD_PARSE_BYTES = 256 * 1024

# A complete JSON string (the unrolled-loop form: runs of plain characters match in C).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN = (ord("["), ord("{"))
_CLOSE = (ord("]"), ord("}"))


def json_body_limit(max_input_bytes: int) -> int:
    """The largest JSON request body accepted (bytes): base64 of a ``max_input_bytes`` file,
    ``4 * ceil(n / 3)``, plus :data:`BODY_MARGIN_BYTES`. 36,001,112 for the default 25 MiB."""
    return 4 * -(-max_input_bytes // 3) + BODY_MARGIN_BYTES


class BodyTooLarge(InvalidInput):
    """413: the request body is over :func:`json_body_limit` (announced or read)."""

    status = 413
    code = "payload_too_large"

    def __init__(self, limit: int, size: int | None = None) -> None:
        told = f" ({size} bytes)" if size is not None else ""
        super().__init__(f"request body{told} is over the limit of {limit} bytes (the base64 "
                         "of the largest accepted input file plus 1 MiB)")


def check_shape(raw: bytes, *, what: str = "request body") -> None:
    """Refuse a body nested deeper than :data:`MAX_DEPTH` or with more than
    :data:`MAX_STRUCTURE_BYTES` outside its strings. Linear; blocking for large bodies (see
    :func:`parse_json_async`). Works on JSON and on YAML flow style alike.

    Raises:
        InvalidInput: 400, naming the limit broken.
    """
    # Fast path (C-speed counts): with at most MAX_DEPTH brackets, braces and commas in all,
    # the depth and the number of values are bounded whatever the strings hold (a data URI
    # body has one comma and one brace).
    if raw.count(b"[") + raw.count(b"{") + raw.count(b",") <= MAX_DEPTH:
        return
    skeleton = _STRING.sub(b'""', raw)
    if len(skeleton) > MAX_STRUCTURE_BYTES:
        raise InvalidInput(
            f"{what} has {len(skeleton)} bytes outside strings, over the limit of "
            f"{MAX_STRUCTURE_BYTES} (a request is an object of a few fields)")
    codes = np.frombuffer(skeleton, dtype=np.uint8)
    step = (np.isin(codes, _OPEN).astype(np.int32) - np.isin(codes, _CLOSE).astype(np.int32))
    depth = int(np.cumsum(step).max(initial=0))
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{what} is nested {depth} levels deep, over the limit of "
                           f"{MAX_DEPTH} levels of arrays and objects")


def parse_json(raw: bytes, *, limit: int | None = None, what: str = "request body") -> Any:
    """``raw`` parsed as JSON after the size and shape checks (blocking for large bodies).

    Args:
        raw: the body bytes (UTF-8, or UTF-16/32 as ``json.loads`` detects them).
        limit: most bytes accepted; ``None`` when the caller already bounded the size.
        what: how messages name the body.

    Raises:
        BodyTooLarge: over ``limit``.
        InvalidInput: empty or only whitespace, nested too deep, too much structure, not
            UTF-8 or not JSON (400; the message says which).
    """
    if limit is not None and len(raw) > limit:
        raise BodyTooLarge(limit, len(raw))
    if not raw.strip():
        raise InvalidInput(f"{what} is {'empty' if not raw else 'only whitespace'}; "
                           "JSON is expected")
    check_shape(raw, what=what)
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # a UTF-16 body the byte scan misread; never a 500
        raise InvalidInput(f"{what} is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(raw) is not None:
        _check_unicode(parsed, what)
    return parsed


#: A ``\uD800``-``\uDFFF`` escape: ``json.loads`` turns one without its pair into a lone
#: surrogate, text that cannot be encoded as UTF-8 again (an answer echoing it was a 500).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _check_unicode(value: Any, what: str) -> None:
    """Refuse a parsed body holding a lone surrogate (RFC 8259 section 8.2: such a string is
    not Unicode text).

    Raises:
        InvalidInput: a string (a key or a value) with an unpaired surrogate.
    """
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} holds a \\u escape of an unpaired surrogate "
                           "(\\uD800-\\uDFFF), which is not Unicode text") from None


async def parse_json_async(raw: bytes, *, limit: int | None = None,
                           what: str = "request body") -> Any:
    """:func:`parse_json`, in a worker thread when ``raw`` is over :data:`THREAD_PARSE_BYTES`.

    Raises:
        BodyTooLarge, InvalidInput: as :func:`parse_json`.
    """
    if len(raw) > THREAD_PARSE_BYTES:
        return await run_in_threadpool(parse_json, raw, limit=limit, what=what)
    return parse_json(raw, limit=limit, what=what)


_REQUIRED: Any = object()


async def read_json(request: Request, *, default: Any = _REQUIRED) -> Any:
    """A control-plane request's body parsed by :func:`parse_json_async`.

    Args:
        default: returned when there is no body at all (0 bytes); without it a body is
            required. A body of only whitespace is never "no body": it is refused.

    Raises:
        BodyTooLarge: a chunked body read past the limit (:class:`CappedReceive`).
        InvalidInput: as :func:`parse_json`.
    """
    raw = await request.body()
    if not raw and default is not _REQUIRED:
        return default
    return await parse_json_async(raw, what="body")


def body_framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """``(Content-Length or None, chunked)`` of ASGI request ``headers``: the announced length
    (``None``: absent or not a number) and whether a ``Transfer-Encoding`` is given."""
    length: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


class CappedReceive:
    """An ASGI ``receive`` that raises :class:`BodyTooLarge` once the request body read so
    far is over ``limit`` bytes (for bodies without ``Content-Length``: chunked)."""

    __slots__ = ("limit", "receive", "size")

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.size = 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.limit:
                raise BodyTooLarge(self.limit)
        return message


__all__ = ["MAX_DEPTH", "MAX_STRUCTURE_BYTES", "BodyTooLarge", "CappedReceive", "body_framing",
           "check_shape", "json_body_limit", "parse_json", "parse_json_async", "read_json"]
