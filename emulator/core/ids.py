"""Identifier and timestamp helpers shared by adapters (vendor-neutral formats)."""

from __future__ import annotations

import functools
import os
import uuid
from datetime import datetime, timezone


def uuid7(now_s: float) -> uuid.UUID:
    """A version-7 UUID (RFC 9562): 48-bit unix milliseconds, then random bits.

    Pixazo's request ids carry one (``bria-rmbg-2-0-682_019d...``, docs/vendors/pixazo.md).
    """
    ms = int(now_s * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 64) & 0xFFF) << 64
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


def iso_ms(ts: float | None) -> str | None:
    """``2026-03-31T10:00:00.000Z`` (UTC, milliseconds) from unix seconds; ``None`` stays.

    Memoised (a job's times are rendered again on every status poll; ``strftime`` was 8% of
    a poll's CPU).
    """
    if ts is None:
        return None
    return _iso_ms(ts)


@functools.lru_cache(maxsize=8192)
def _iso_ms(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
