"""When the server process collects its garbage: young generations as usual, full passes
while no request is in flight.

Every job keeps about ten container objects until it is evicted (100,000 jobs: about a
million), and CPython's collector walks all of them in each full pass: 0.2-0.5 s with the event
loop stopped, which is the p99 of a run of submits (``benchmarks/http_load.py``). So
``rmbg-emulator serve`` (:func:`install`) freezes what start-up built, collects the young
generations less often, switches off the automatic full passes and runs them itself from
:meth:`IdleCollector.run`: once the server has been idle for :attr:`IdleCollector.idle_s`
(no request in flight, none for that long) and something was allocated since the last pass,
and in any case after :attr:`IdleCollector.max_interval_s`, so cyclic garbage never piles
up for long. Only the server does this: the pytest plugin's in-process emulator leaves the
test process's collector alone.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("emulator.gc")

#: ``gc.set_threshold`` under :func:`install`: young collections every 50,000 net
#: allocations (not 700), and a third threshold no run reaches (full passes are
#: :class:`IdleCollector`'s).
THRESHOLDS = (50_000, 20, 1_000_000_000)


class Traffic:
    """Requests in flight and when the last one ended (``time.monotonic`` seconds); kept by
    the fault middleware for every HTTP request."""

    __slots__ = ("in_flight", "last_end", "served")

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_end = 0.0
        self.served = 0


class IdleCollector:
    """Runs full garbage collections while the server is idle (see the module docstring).

    Attributes:
        idle_s: seconds without a request before a pass (0.5).
        max_interval_s: a pass at the latest this many seconds after the last one, busy or
            not (300).
        check_s: how often the collector looks (0.25 s).
        passes: full passes run so far; ``last_pause_s``: how long the last one took.
    """

    def __init__(self, traffic: Traffic, *, idle_s: float = 0.5, max_interval_s: float = 300.0,
                 check_s: float = 0.25) -> None:
        self.traffic = traffic
        self.idle_s = idle_s
        self.max_interval_s = max_interval_s
        self.check_s = check_s
        self.passes = 0
        self.last_pause_s = 0.0
        self._last_pass = time.monotonic()
        self._served_at_pass = 0

    def due(self, now: float) -> bool:
        """Whether a full pass should run at ``now`` (``time.monotonic`` seconds)."""
        t = self.traffic
        if now - self._last_pass >= self.max_interval_s:
            return True
        idle = t.in_flight == 0 and now - t.last_end >= self.idle_s
        return idle and t.served != self._served_at_pass

    def collect(self) -> int:
        """One full pass now; returns the objects it found unreachable."""
        started = time.perf_counter()
        found = gc.collect()
        self.last_pause_s = time.perf_counter() - started
        self.passes += 1
        self._last_pass = time.monotonic()
        self._served_at_pass = self.traffic.served
        log.debug("full gc pass: %d unreachable, %.1f ms", found, self.last_pause_s * 1000)
        return found

    async def run(self) -> None:
        """Look every :attr:`check_s` seconds and collect when :meth:`due`; until cancelled."""
        while True:
            await asyncio.sleep(self.check_s)
            if self.due(time.monotonic()):
                self.collect()


def install() -> None:
    """For the server process: collect now, freeze what start-up built (contracts, compiled
    schemas, adapters: ~50,000 objects that live as long as the process), and set
    :data:`THRESHOLDS`. An :class:`IdleCollector` must then run (the app's lifespan starts
    one when ``Emulator.idle_gc`` is set)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


__all__ = ["THRESHOLDS", "IdleCollector", "Traffic", "install"]
