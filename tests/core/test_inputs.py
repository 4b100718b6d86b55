"""Image sources and decoding: formats, EXIF orientation, limits, broken data."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, features

from emulator.core.inputs import ImageSource, decode_image, decode_inline, parse_source
from emulator.errors import InputImageError, InvalidInput
from tests.conftest import bomb_png, small_photo


def encode(rgb: np.ndarray, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_decodes_accepted_formats(fmt: str) -> None:
    rgb = small_photo(64)
    out = decode_image(encode(rgb, fmt), max_pixels=10**7)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    if fmt == "PNG":
        assert np.array_equal(out, rgb)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF support")
def test_decodes_avif() -> None:
    rgb = small_photo(64)
    assert decode_image(encode(rgb, "AVIF"), max_pixels=10**7).shape == rgb.shape


def test_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue(), max_pixels=10**6)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 50


def test_exif_orientation_is_applied() -> None:
    rgb = np.zeros((10, 30, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    data = encode(rgb, "JPEG", exif=exif.tobytes())
    assert decode_image(data, max_pixels=10**6).shape == (30, 10, 3)


def test_rgba_input_drops_alpha() -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    out = decode_image(encode(rgba, "PNG"), max_pixels=10**6)
    assert out.shape == (8, 8, 3) and out[0, 0, 0] == 200


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty"),
    (b"hello world, not an image", "not an image"),
    (bomb_png(), "decompression"),
])
def test_bad_data_raises_with_the_cause(data: bytes, message: str) -> None:
    with pytest.raises(InputImageError, match=message):
        decode_image(data, max_pixels=50_000_000)


def test_other_formats_are_refused() -> None:
    with pytest.raises(InputImageError, match="TIFF"):
        decode_image(encode(small_photo(32), "TIFF"), max_pixels=10**6)


def test_truncated_data() -> None:
    data = encode(small_photo(64), "PNG")[:200]
    with pytest.raises(InputImageError, match="truncated"):
        decode_image(data, max_pixels=10**6)


@pytest.mark.parametrize(("value", "kind"), [
    ("https://example.com/a.jpg", "url"),
    ("http://127.0.0.1:8000/x", "url"),
    ("data:image/png;base64,iVBORw0KGgo=", "data"),
])
def test_parse_source_accepts(value: str, kind: str) -> None:
    assert parse_source(value, field="image_url").kind == kind


@pytest.mark.parametrize(("value", "message"), [
    (None, "must be a string"), (3, "must be a string"), ("", "empty"),
    ("ftp://h/a.png", "scheme 'ftp'"), ("file:///etc/passwd", "scheme 'file'"),
    ("data:image/png,abc", "data:"), ("http:///nohost", "no host"), ("just text", "http"),
])
def test_parse_source_refuses(value: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        parse_source(value, field="image_url")
    assert caught.value.field == "image_url"


def test_bare_base64_only_where_allowed() -> None:
    b64 = base64.b64encode(encode(small_photo(16), "PNG")).decode()
    assert parse_source(b64, field="image", allow_base64=True).kind == "base64"
    with pytest.raises(InvalidInput):
        parse_source(b64, field="image")


def test_decode_inline_limits_and_errors() -> None:
    data = encode(small_photo(16), "PNG")
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    assert decode_inline(ImageSource("data", uri), max_bytes=10**6) == data
    with pytest.raises(InputImageError, match="larger than"):
        decode_inline(ImageSource("data", uri), max_bytes=10)
    with pytest.raises(InputImageError, match="base64"):
        decode_inline(ImageSource("base64", "abc$%^&*"), max_bytes=10**6)


class _SizeRecorder:
    """A matte engine that records the shapes it is given (a centred ellipse as alpha)."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        self.seen.append(rgb.shape)
        h, w = rgb.shape[:2]
        yy, xx = np.ogrid[:h, :w]
        inside = ((yy - h / 2) / (h / 2.5)) ** 2 + ((xx - w / 2) / (w / 2.5)) ** 2 <= 1
        return np.where(inside, 255, 0).astype(np.uint8)


def _big_gif(width: int, height: int) -> bytes:
    from PIL import ImageDraw

    img = Image.new("P", (width, height), 0)
    img.putpalette([10, 20, 30, 200, 60, 40] + [0] * (256 * 3 - 6))
    ImageDraw.Draw(img).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4),
                                fill=1)
    buf = io.BytesIO()
    img.save(buf, format="GIF")
    return buf.getvalue()


@pytest.mark.parametrize("task", ["remove", "replace"])
def test_a_huge_image_is_matted_small_and_answered_at_its_own_size(task: str) -> None:
    """A 5,000 x 2,400 GIF (12 Mpx, a few KB): the engine sees at most MATTE_MAX_PIXELS, the
    output keeps the input's size, and the alpha follows the engine's matte."""
    from emulator.core.tasks import TASKS, TaskContext

    matte_max_pixels = 2048 * 2048  # emulator.matte.engine.MATTE_MAX_PIXELS
    data = _big_gif(5000, 2400)
    assert len(data) < 200_000
    engine = _SizeRecorder()
    ctx = TaskContext(engine=engine, max_pixels=50_000_000, compress_level=1)
    [out] = TASKS[task]([data], {"prompt": "x", "seed": 1}, ctx)
    [shape] = engine.seen
    assert shape[0] * shape[1] <= matte_max_pixels and shape[2] == 3
    assert abs(shape[1] / shape[0] - 5000 / 2400) < 0.01  # aspect kept
    img = Image.open(io.BytesIO(out.data))
    assert img.size == (5000, 2400) == (out.width, out.height)
    if task == "remove":
        alpha = np.asarray(img.getchannel("A"))
        assert alpha[1200, 2500] == 255 and alpha[10, 10] == 0


def test_an_unreadable_input_is_not_quoted_in_the_message() -> None:
    secret = b'{"jobs": [{"api_key": "sk-secret"}]}'
    with pytest.raises(InputImageError) as caught:
        decode_image(secret, max_pixels=10**6)
    message = caught.value.message
    assert "not an image" in message and f"{len(secret)} bytes" in message
    assert "jobs" not in message and "sk-" not in message and "{" not in message
