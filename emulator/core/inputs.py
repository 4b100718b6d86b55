"""Input images: parse a source (http(s) URL, ``data:`` URI, raw base64), fetch it, decode it.

Limits guard the server: a byte limit while fetching, a time limit, and a pixel limit checked
from the header before any pixel is decoded (decompression bombs). Every failure raises
:class:`~emulator.errors.InputImageError` (or :class:`~emulator.errors.InvalidInput` at parse
time) with a message that names the cause.

Formats: JPEG, PNG, WebP, GIF (first frame) and AVIF where Pillow supports it, as
docs/vendors/fal.md lists ("JPEG, PNG, WebP, GIF, AVIF via URL"); EXIF orientation is applied.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import re
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urljoin, urlsplit

import httpx
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emulator.core.fetchpolicy import FETCH_FAILED as FETCH_FAILED
from emulator.core.fetchpolicy import FetchPolicy
from emulator.errors import InputImageError, InvalidInput

SourceKind = Literal["url", "data", "base64"]

#: Pillow format names accepted as input.
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "AVIF"})

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)"
                       r"(?P<b64>;base64)?,", re.IGNORECASE)
#: The base64 alphabet, standard and URL-safe (``+/`` and ``-_``).
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
#: Fewest base64 characters (line breaks not counted) a bare base64 image has.
BASE64_MIN_CHARS = 16
#: What a bare base64 image (GMI Cloud's ``payload.image``, docs/vendors/gmicloud.md "Base64
#: string") is: white space around it, then at least :data:`BASE64_MIN_CHARS` characters of the
#: alphabet with ``\n`` line breaks between or after them (not counted), then up to two ``=``. The
#: GMI Cloud contract's ``payload.image`` pattern is this string (a test keeps them equal);
#: :func:`_looks_base64` decides the same without a regex over megabytes.
BASE64_PATTERN = r"^\s*(?:[A-Za-z0-9+/_-]\n*){16,}={0,2}\s*$"

#: :attr:`InputImageError.code` values, so adapters can name the cause in their vendor's terms
#: (and :data:`FETCH_FAILED`: HTTP status >= 400, time-out, refused address, connection failure).
TOO_LARGE = "too_large"  # more bytes than the limit
TOO_MANY_PIXELS = "too_many_pixels"  # pixel limit, decompression bomb
UNSUPPORTED_FORMAT = "unsupported_format"  # an image, but not JPEG/PNG/WebP/GIF/AVIF
UNREADABLE = "unreadable"  # empty, not an image, truncated, corrupt, bad base64

#: Resolves a URL the emulator serves itself (samples, its own output files) without HTTP;
#: called with the URL and the origin (scheme://host:port) of the submitting request.
LocalResolver = Callable[[str, str | None], Awaitable[bytes | None]]


@dataclass(frozen=True)
class ImageSource:
    """Where an input image comes from.

    Attributes:
        kind: ``"url"`` (http or https), ``"data"`` (a ``data:`` URI) or ``"base64"`` (raw).
        value: the URL, the whole data URI, or the base64 text.
    """

    kind: SourceKind
    value: str

    def describe(self) -> str:
        """A short text for messages and journals (data is not echoed in full)."""
        if self.kind == "url":
            return self.value if len(self.value) <= 200 else self.value[:197] + "..."
        return f"<{self.kind}, {len(self.value)} chars>"


def parse_source(value: object, *, field: str, allow_base64: bool = False) -> ImageSource:
    """Check an image reference from a request body; cheap, so it runs at submit.

    Args:
        value: the JSON value the client sent.
        field: the field name, for the message (``"image_url"``).
        allow_base64: accept a bare base64 string (GMI Cloud's ``payload.image``,
        docs/vendors/gmicloud.md).

    Raises:
        InvalidInput: not a string, empty, an unsupported scheme, or a malformed data URI.
    """
    if not isinstance(value, str):
        raise InvalidInput(
            f"{field} must be a string (an http(s) URL or a data: URI), got {_json_type(value)}",
            field=field,
        )
    text = value.strip()
    if not text:
        raise InvalidInput(f"{field} is empty", field=field)
    if text[:5].lower() == "data:":
        m = _DATA_URI.match(text[:512])
        if m is None or not m.group("b64"):
            raise InvalidInput(
                f"{field} is a data: URI but not of the form data:<mime>;base64,<data>",
                field=field,
            )
        return ImageSource("data", text)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise InvalidInput(f"{field} {text[:100]!r} has no host", field=field)
        return ImageSource("url", text)
    if allow_base64 and _looks_base64(text):
        return ImageSource("base64", text)
    if scheme and "://" in text:
        raise InvalidInput(
            f"{field} uses the scheme {scheme!r}; only http, https and data: URIs are accepted",
            field=field,
        )
    raise InvalidInput(
        f"{field} must be an http(s) URL or a data: URI"
        + (" or base64 image data" if allow_base64 else ""),
        field=field,
    )


def _looks_base64(text: str) -> bool:
    """Whether ``text`` (already stripped of white space, as ``str.strip`` does, which is what
    ``\\s`` matches in Python's ``re``) matches :data:`BASE64_PATTERN`, checked whole in C
    speed: ``=`` only at the end (two at most), ``\\n`` the only other character besides
    the alphabet, and at least :data:`BASE64_MIN_CHARS` alphabet characters."""
    body = text.rstrip("=")
    if len(text) - len(body) > 2 or not body.isascii():
        return False
    rest = body.encode("ascii").translate(None, _BASE64_ALPHABET)
    return rest.count(b"\n") == len(rest) and len(body) - len(rest) >= BASE64_MIN_CHARS


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def decode_inline(source: ImageSource, max_bytes: int) -> bytes:
    """Bytes of a ``data`` or ``base64`` source (blocking: run it in the worker pool).

    Raises:
        InputImageError: invalid base64, or more than ``max_bytes`` bytes once decoded.
    """
    text = source.value.split(",", 1)[1] if source.kind == "data" else source.value
    if len(text) * 3 // 4 > max_bytes + 3:
        raise InputImageError(f"inline image is larger than the limit of {max_bytes} bytes",
                              code=TOO_LARGE)
    try:
        compact = "".join(text.split())
        compact += "=" * (-len(compact) % 4)
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact)
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputImageError(f"inline image is not valid base64: {exc}",
                              code=UNREADABLE) from None


#: Redirects an input fetch follows, each hop checked like the first URL; one more is refused.
MAX_REDIRECTS = 5

#: Bytes of a URL the emulator serves itself (read in-process), ``None`` for any other URL;
#: raises :class:`InputImageError` for its own URLs that are not an image it serves.
LocalFetch = Callable[[str], Awaitable[bytes | None]]


async def fetch_url(
    url: str, client: httpx.AsyncClient, *, policy: FetchPolicy, max_bytes: int,
    timeout_s: float, deadline_s: float, local: LocalFetch | None = None,
) -> bytes:
    """GET ``url`` under the address policy, a per-read time limit, an overall deadline and a
    byte limit, following at most :data:`MAX_REDIRECTS` redirects.

    Each hop (the URL, then every ``Location``) is first offered to ``local`` (the emulator's
    own samples and files, read in-process); otherwise its host is resolved and checked by
    ``policy`` (:meth:`FetchPolicy.pin`) and the request goes to the checked IP address, with
    the original ``Host`` header and TLS server name (httpx's ``sni_hostname`` extension), so
    the address connected to is the address checked (no DNS rebinding). Redirects are
    followed here, not by httpx, so that every hop is checked.

    Args:
        timeout_s: seconds allowed for each connect, read and write.
        deadline_s: seconds allowed for the whole fetch, redirects and body included (an
            origin that trickles one byte a second stops here).

    Raises:
        InputImageError: (code ``fetch_failed``) HTTP status >= 400, a refused address, too
            many redirects, a time-out or the deadline, a connection failure; (``too_large``)
            a body over ``max_bytes`` bytes. The message names the URL and the cause and never
            quotes the fetched bytes.
    """
    short = _short(url)
    try:
        return await asyncio.wait_for(
            _fetch(url, client, policy=policy, max_bytes=max_bytes, timeout_s=timeout_s,
                   local=local), deadline_s)
    except asyncio.TimeoutError:
        raise InputImageError(
            f"fetching the input image did not end within the deadline of {deadline_s:g} s: "
            f"{short}", code=FETCH_FAILED) from None


async def _fetch(url: str, client: httpx.AsyncClient, *, policy: FetchPolicy,
                 max_bytes: int, timeout_s: float, local: LocalFetch | None) -> bytes:
    short = _short(url)
    hop = url
    for redirects in range(MAX_REDIRECTS + 1):
        if local is not None:
            data = await local(hop)
            if data is not None:
                return data
        try:
            target = httpx.URL(hop)
        except httpx.InvalidURL as exc:
            raise InputImageError(f"fetching the input image failed: {short}: a redirect to "
                                  f"an invalid URL ({exc})", code=FETCH_FAILED) from None
        if target.scheme not in ("http", "https") or not target.raw_host:
            raise InputImageError(
                f"fetching the input image failed: {short}: a redirect to {_short(hop)!r}, "
                "which is not an http(s) URL", code=FETCH_FAILED)
        request = await policy.request(client, "GET", target, short=_short(hop),
                                       timeout=timeout_s)
        with _transport_errors(short, timeout_s):
            response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if response.has_redirect_location:
                if redirects == MAX_REDIRECTS:
                    raise InputImageError(
                        f"fetching the input image failed: {short}: more than {MAX_REDIRECTS} "
                        "redirects", code=FETCH_FAILED)
                hop = urljoin(hop, response.headers["location"])
                continue
            return await _read_body(response, short, max_bytes, timeout_s)
        finally:
            await response.aclose()
    raise AssertionError("unreachable")  # pragma: no cover


async def _read_body(response: httpx.Response, short: str, max_bytes: int,
                     timeout_s: float) -> bytes:
    if response.status_code >= 400:
        raise InputImageError(
            f"fetching the input image failed: {short} answered HTTP {response.status_code}",
            code=FETCH_FAILED)
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise InputImageError(
            f"the input image at {short} is {declared} bytes, over the limit of {max_bytes} "
            "bytes", code=TOO_LARGE)
    chunks: list[bytes] = []
    size = 0
    with _transport_errors(short, timeout_s):
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise InputImageError(
                    f"the input image at {short} is over the limit of {max_bytes} bytes",
                    code=TOO_LARGE)
            chunks.append(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def _transport_errors(short: str, timeout_s: float) -> Iterator[None]:
    """httpx's time-outs and transport errors while fetching, as :class:`InputImageError`
    (code ``fetch_failed``) naming the URL and the cause.

    Raises:
        InputImageError: in place of ``httpx.TimeoutException`` / ``httpx.HTTPError``.
    """
    try:
        yield
    except httpx.TimeoutException:
        raise InputImageError(
            f"fetching the input image timed out after {timeout_s:g} s: {short}",
            code=FETCH_FAILED) from None
    except httpx.HTTPError as exc:
        raise InputImageError(
            f"fetching the input image failed: {short}: {type(exc).__name__}: {exc}",
            code=FETCH_FAILED) from None


def _short(url: str) -> str:
    return url if len(url) <= 200 else url[:197] + "..."


def _rgb_array(img: Image.Image) -> np.ndarray:
    """An RGB image as a new ``H x W x 3 uint8`` array, copied in bands of about a megapixel.

    ``np.asarray(img)`` goes through ``img.tobytes()``, which builds the whole image twice
    more (its chunks, then their join) beside Pillow's own 4-bytes-a-pixel copy: 13 bytes a
    pixel at the peak instead of 7.
    """
    width, height = img.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    step = max(1, (1024 * 1024) // max(1, width))
    for y in range(0, height, step):
        band = img.crop((0, y, width, min(height, y + step)))
        out[y:y + band.size[1]] = np.asarray(band, dtype=np.uint8)
    return out


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode image bytes to RGB (blocking: run it in the worker pool).

    GIFs give their first frame; EXIF orientation is applied; an alpha channel is dropped.

    Returns:
        ``H x W x 3 uint8`` array, C-contiguous.

    Raises:
        InputImageError: empty data, not an image, a format outside :data:`ACCEPTED_FORMATS`,
            more than ``max_pixels`` pixels, or truncated/corrupt data.
    """
    return decode_image_alpha(data, max_pixels=max_pixels, keep_alpha=False)[0]


def decode_image_alpha(data: bytes, *, max_pixels: int, keep_alpha: bool = True
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`decode_image`, also returning the input's own alpha channel when it has one
    (RGBA, LA, PA, or a palette with transparency) and ``keep_alpha`` is set.

    Returns:
        ``(H x W x 3 uint8 RGB, H x W uint8 alpha or None)``, both C-contiguous.

    Raises:
        InputImageError: as :func:`decode_image`.
    """
    if not data:
        raise InputImageError("the input image is empty (0 bytes)", code=UNREADABLE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if fmt not in ACCEPTED_FORMATS:
                raise InputImageError(
                    f"the input is a {fmt} image; accepted formats are JPEG, PNG, WebP, GIF"
                    " and AVIF", code=UNSUPPORTED_FORMAT
                )
            width, height = img.size
            if width * height > max_pixels:
                raise InputImageError(
                    f"the input image is {width} x {height} = {width * height} pixels, over "
                    f"the limit of {max_pixels} pixels (decompression-bomb guard)",
                    code=TOO_MANY_PIXELS,
                )
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()
            # In place: without it Pillow returns a full copy even when nothing turns.
            ImageOps.exif_transpose(img, in_place=True)
            # One step at a time, each dropping the image before it, so at most two full-size
            # copies live at once (the chained form held three: 8 bytes a pixel for a GIF).
            alpha: np.ndarray | None = None
            if "A" in img.mode or img.mode == "P":
                img = img.convert("RGBA")
                if keep_alpha:
                    alpha = np.ascontiguousarray(np.asarray(img.getchannel("A"),
                                                            dtype=np.uint8))
            if img.mode != "RGB":
                img = img.convert("RGB")
            return _rgb_array(img), alpha
    except InputImageError:
        raise
    except UnidentifiedImageError:
        # The bytes are not quoted: they may be another server's answer (fetched bytes).
        raise InputImageError(
            f"the input is not an image that can be read ({len(data)} bytes in no format "
            "Pillow knows)", code=UNREADABLE
        ) from None
    except Image.DecompressionBombError as exc:
        raise InputImageError(f"the input image is a decompression bomb: {exc}",
                              code=TOO_MANY_PIXELS) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputImageError(f"the input image data is truncated or corrupt: {exc}",
                              code=UNREADABLE) from None
