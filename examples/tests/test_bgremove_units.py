"""The client's pure parts, without the emulator: Retry-After, backoff, PNG checks, JWKS."""

from __future__ import annotations

import base64
import io
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from PIL import Image

from bgremove import (
    Backoff,
    FailoverRemover,
    InvalidResult,
    PollPolicy,
    RetryPolicy,
    create_remover,
    data_uri,
    parse_retry_after,
    verify_cutout,
)
from bgremove.png import data_uri_bytes
from bgremove.timing import http_date
from bgremove.webhooks import ed25519_keys


@pytest.mark.parametrize(("header", "seconds"), [
    ("3", 3.0), (" 2.5 ", 2.5), ("0", 0.0), ("-4", 0.0), (None, None), ("", None),
    ("soon", None), ("nan", None),
])
def test_parse_retry_after_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_http_date() -> None:
    assert parse_retry_after(http_date(1_000_120.0), now=1_000_000.0) == 120.0
    assert parse_retry_after(http_date(999_000.0), now=1_000_000.0) == 0.0


def test_backoff_grows_caps_and_jitters_downwards_only() -> None:
    delays = Backoff(initial_s=1, factor=2, max_s=5).delays()
    assert [next(delays) for _ in range(5)] == [1, 2, 4, 5, 5]
    jittered = Backoff(initial_s=4, factor=1, jitter=0.5, rng=random.Random(7)).delays()
    drawn = [next(jittered) for _ in range(50)]
    assert all(2 <= d <= 4 for d in drawn) and len(set(drawn)) > 1
    with pytest.raises(ValueError):
        Backoff(factor=0.5)


def _png(mode: str, size: tuple[int, int] = (8, 6), alpha: int = 255) -> bytes:
    image = Image.new(mode, size, (10, 20, 30, alpha)[:len(mode)])
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_verify_cutout_accepts_an_rgba_png_of_the_right_size() -> None:
    cutout = verify_cutout(_png("RGBA"), (8, 6), vendor="v", job_id="j")
    assert (cutout.size, cutout.foreground, cutout.vendor) == ((8, 6), 1.0, "v")


@pytest.mark.parametrize(("data", "size", "why"), [
    (b"GIF89a....", None, "not a PNG"),
    (_png("RGBA")[:60], None, "does not decode"),
    (_png("RGB"), None, "mode RGB"),
    (_png("RGBA"), (9, 6), "size 8x6, the input is 9x6"),
    (_png("RGBA", alpha=0), None, "alpha is 0 everywhere"),
])
def test_verify_cutout_refuses(data: bytes, size: tuple[int, int] | None, why: str) -> None:
    with pytest.raises(InvalidResult, match=why):
        verify_cutout(data, size)


def test_data_uris() -> None:
    assert data_uri_bytes(data_uri(b"\x89PNG")) == b"\x89PNG"
    assert data_uri_bytes("data:text/plain,a%20b") == b"a b"
    with pytest.raises(ValueError):
        data_uri_bytes("data:image/png;base64,***")
    with pytest.raises(ValueError):
        data_uri_bytes("https://example.com/a.png")


def test_ed25519_keys_from_a_jwks() -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    keys = ed25519_keys({"keys": [{"kty": "RSA", "n": "..."}, {"kty": "OKP", "crv": "Ed25519",
                                                               "x": x}]})
    assert len(keys) == 1
    keys[0].verify(key.sign(b"m"), b"m")
    with pytest.raises(ValueError):
        ed25519_keys({})


def test_construction_errors() -> None:
    with pytest.raises(KeyError, match="unknown vendor 'acme'"):
        create_remover("acme", "k")
    with pytest.raises(ValueError, match="API key"):
        create_remover("pixazo", "")
    with pytest.raises(ValueError):
        FailoverRemover([])
    with pytest.raises(ValueError, match="attempts >= 1"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        PollPolicy(timeout_s=-1)
