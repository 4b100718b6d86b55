"""Failover: try vendors in order; rest one that keeps failing.

A vendor whose call fails with an error another vendor might not have (5xx after retries,
429 beyond patience, 402, a failed or stuck job, a broken result) counts a failure; after
``trip_after`` failures in a row it rests for ``rest_s`` seconds (a circuit breaker): calls go
straight to the next vendor, and after the rest one call tries it again. Errors that would
happen anywhere (a malformed request, an unreadable input) are raised at once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import AllVendorsFailed, BackgroundRemovalError
from .png import Cutout
from .timing import Clock, SystemClock
from .vendors import BackgroundRemover


@dataclass
class Health:
    """A vendor's record: failures in a row, and until when it rests (clock seconds)."""

    failures: int = 0
    resting_until: float | None = None


class FailoverRemover:
    """Removes backgrounds through the first healthy vendor of ``removers``.

    Args:
        removers: clients, in order of preference.
        trip_after: failures in a row after which a vendor rests.
        rest_s: seconds a tripped vendor rests before it is tried again.
        clock: for the rests (default: the real clock).

    Raises:
        ValueError: no removers.
    """

    def __init__(self, removers: Sequence[BackgroundRemover], *, trip_after: int = 3,
                 rest_s: float = 60.0, clock: Clock | None = None) -> None:
        if not removers:
            raise ValueError("failover needs at least one remover")
        self.removers = list(removers)
        self.trip_after = max(1, trip_after)
        self.rest_s = rest_s
        self.clock: Clock = clock or SystemClock()
        self.health = {r.vendor: Health() for r in self.removers}
        self._lock = threading.Lock()

    def available(self) -> list[BackgroundRemover]:
        """The removers not resting now, in order."""
        now = self.clock.monotonic()
        with self._lock:
            return [r for r in self.removers
                    if (until := self.health[r.vendor].resting_until) is None or now >= until]

    def remove(self, image_url: str, *, expected_size: tuple[int, int] | None = None,
               timeout_s: float | None = None) -> Cutout:
        """:meth:`BackgroundRemover.remove` through the first vendor that succeeds.

        Raises:
            AllVendorsFailed: every available vendor failed (``errors`` has each one's).
            BackgroundRemovalError: an error that is not worth another vendor
                (``fail_over`` false), at once.
        """
        errors: list[BackgroundRemovalError] = []
        candidates = self.available()
        for remover in candidates:
            if expected_size is None:
                expected_size = remover.input_size(image_url)
            try:
                cutout = remover.remove(image_url, expected_size=expected_size,
                                        timeout_s=timeout_s)
            except BackgroundRemovalError as exc:
                if not exc.fail_over:
                    raise
                self._failed(remover.vendor)
                errors.append(exc)
                continue
            self._succeeded(remover.vendor)
            return cutout
        raise AllVendorsFailed(errors)

    def _failed(self, vendor: str) -> None:
        with self._lock:
            health = self.health[vendor]
            health.failures += 1
            if health.failures >= self.trip_after:
                health.resting_until = self.clock.monotonic() + self.rest_s

    def _succeeded(self, vendor: str) -> None:
        with self._lock:
            self.health[vendor] = Health()


__all__ = ["FailoverRemover", "Health"]
