"""Checking what came back: a background removal must give an RGBA PNG the size of its input."""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from PIL import Image, UnidentifiedImageError

from .errors import InvalidResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The last chunk of every complete PNG: length 0, type IEND, its CRC.
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@dataclass(frozen=True)
class Cutout:
    """A verified result.

    Attributes:
        png: the PNG file as downloaded (bytes).
        width, height: pixels, equal to the input's.
        foreground: fraction (0..1) of pixels that are not fully transparent.
        vendor: the vendor that made it; ``job_id``: its id there; ``url``: where it was.
    """

    png: bytes
    width: int
    height: int
    foreground: float
    vendor: str = ""
    job_id: str = ""
    url: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return (self.width, self.height)


def verify_cutout(data: bytes, expected_size: tuple[int, int] | None = None, *,
                  vendor: str = "", job_id: str = "", url: str = "") -> Cutout:
    """Check a result file and describe it.

    Checks: PNG signature; the file ends with the ``IEND`` chunk and decodes (a truncated file
    fails); mode ``RGBA``;
    ``(width, height) == expected_size`` when given; some pixel not fully transparent (an
    all-transparent cut-out is a failed one).

    Raises:
        InvalidResult: the first check that fails, saying which.
    """
    def fail(why: str) -> InvalidResult:
        return InvalidResult(f"{vendor or 'result'}: {why}", vendor=vendor, job_id=job_id)

    if not data.startswith(PNG_SIGNATURE):
        raise fail(f"not a PNG (starts with {data[:8]!r})")
    if not data.endswith(PNG_END):
        raise fail(f"the PNG does not decode (truncated: {len(data)} bytes, no IEND chunk)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode, size = image.mode, image.size
            histogram = image.getchannel("A").histogram() if mode == "RGBA" else [0]
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise fail(f"the PNG does not decode ({exc})") from exc
    if mode != "RGBA":
        raise fail(f"mode {mode}, expected RGBA (no alpha channel)")
    if expected_size is not None and size != tuple(expected_size):
        raise fail(f"size {size[0]}x{size[1]}, the input is "
                   f"{expected_size[0]}x{expected_size[1]}")
    kept = sum(histogram[1:])
    if kept == 0:
        raise fail("alpha is 0 everywhere (nothing kept)")
    return Cutout(png=data, width=size[0], height=size[1],
                  foreground=kept / float(size[0] * size[1]), vendor=vendor, job_id=job_id,
                  url=url)


def image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of an encoded image (JPEG, PNG, WebP, ...), read from its header.

    Raises:
        ValueError: not an image Pillow can identify.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            return (int(image.size[0]), int(image.size[1]))
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"not an image: {exc}") from exc


def data_uri_bytes(uri: str) -> bytes:
    """The bytes of a ``data:`` URI (base64 or percent-encoded).

    Raises:
        ValueError: not a ``data:`` URI, or bad base64.
    """
    if not uri.startswith("data:") or "," not in uri:
        raise ValueError("not a data: URI")
    header, payload = uri[5:].split(",", 1)
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"bad base64 in data: URI: {exc}") from exc
    return unquote_to_bytes(payload)


def data_uri(data: bytes, content_type: str = "image/png") -> str:
    """``data:<content_type>;base64,...`` of ``data``."""
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"
