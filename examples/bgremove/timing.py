"""Time: the clock the client waits on, backoff policies and ``Retry-After``.

The client never calls :func:`time.sleep` directly; it asks a :class:`Clock`. Production code
uses :class:`SystemClock`; tests pass a clock that moves the emulator's virtual clock instead
of sleeping, so a two-minute backoff takes milliseconds and the emulator still sees the
client wait (its journal flags a request that came back before ``Retry-After``).
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol


class Clock(Protocol):
    """Where the client reads time and waits. Seconds, as floats."""

    def monotonic(self) -> float:
        """A clock that never goes back (for deadlines)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (>= 0)."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic` and :func:`time.sleep`."""

    def monotonic(self) -> float:
        """:func:`time.monotonic`."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """:func:`time.sleep`."""
        time.sleep(max(0.0, seconds))


class VirtualClock:
    """A clock for tests: :meth:`sleep` returns at once, after calling ``advance(seconds)``
    (for instance ``rmbg_emulator.advance``, which moves the emulator's virtual clock), and
    records every sleep in :attr:`sleeps`. :meth:`monotonic` is the total slept.
    """

    def __init__(self, advance: Callable[[float], object] | None = None) -> None:
        self.advance = advance
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        """Seconds slept so far."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Record ``seconds``, move this clock and the other one (``advance``) forward."""
        self.sleeps.append(seconds)
        self.now += seconds
        if seconds > 0 and self.advance is not None:
            self.advance(seconds)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial_s``, then times ``factor`` per step, at most ``max_s``.

    ``jitter`` (0..1) takes a random fraction of up to that much off each delay, so many
    clients that failed together do not come back together ("equal jitter" at 0.5).
    ``rng`` draws it; pass ``random.Random(seed)`` for repeatable delays.
    """

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.factor < 1 or self.max_s < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("backoff needs initial_s >= 0, factor >= 1, max_s >= 0 and "
                             "0 <= jitter <= 1")

    def delays(self) -> Iterator[float]:
        """Endless delays in seconds: ``initial_s``, ``initial_s * factor``, ... capped."""
        delay = self.initial_s
        while True:
            capped = min(delay, self.max_s)
            yield capped * (1.0 - self.jitter * self.rng.random())
            delay *= self.factor


@dataclass(frozen=True)
class RetryPolicy:
    """How one HTTP call is retried.

    Attributes:
        attempts: tries in all (the first included) on 429, 5xx, dropped connections,
            time-outs and unreadable bodies. 401/402/403 and other 4xx are never retried.
        backoff: delays between tries when the vendor gives no ``Retry-After``.
        max_retry_after_s: a ``Retry-After`` longer than this is not waited for:
            :class:`~bgremove.errors.RateLimited` is raised at once (fail over instead).
        retry_submit_on_5xx: retry a submit (a POST) on 5xx and dropped connections too. The
            vendors document no idempotency key, so a submit whose answer was lost may have
            created a job; a duplicate costs one image (about $0.018). 429 is always retried:
            a refused request created nothing.
    """

    attempts: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    max_retry_after_s: float = 120.0
    retry_submit_on_5xx: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.max_retry_after_s < 0:
            raise ValueError("a retry policy needs attempts >= 1 and max_retry_after_s >= 0")


@dataclass(frozen=True)
class PollPolicy:
    """How a job is polled: status reads spaced by ``backoff``, for at most ``timeout_s``.

    The defaults follow the vendors' advice: Pixazo says poll every 5-10 s, Apiframe's example
    every 2 s, GMI clients every 5 s; a job takes about 3 s (docs/vendors/apiframe.md).
    """

    backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=1.0, factor=1.5,
                                                             max_s=10.0))
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.timeout_s < 0:
            raise ValueError("timeout_s must be >= 0")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110: delay-seconds or an HTTP-date).

    Args:
        now: unix time to count an HTTP-date from (default: ``time.time()``).

    Returns:
        Seconds (>= 0), or ``None`` when the header is absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        reference = time.time() if now is None else now
        return max(0.0, when.timestamp() - reference)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def http_date(unix_s: float) -> str:
    """``unix_s`` as an HTTP-date (``Sun, 06 Nov 1994 08:49:37 GMT``)."""
    return email.utils.format_datetime(datetime.fromtimestamp(unix_s, tz=timezone.utc),
                                       usegmt=True)
