"""Clocks: the real one (with an offset tests can push forward) and a frozen virtual one.

Every time the core reads comes from a :class:`Clock`, so tests never sleep to see a status
change: they call :meth:`Clock.advance`.
"""

from __future__ import annotations

import threading
import time


class Clock:
    """Unix time in seconds (float), real or virtual.

    A real clock follows ``time.time()`` plus an offset; a virtual clock (``frozen=True``)
    starts at the real time of its creation and moves only when :meth:`advance` is called.
    Both accept :meth:`advance`, so ``POST /_emulator/clock/advance`` works on either.
    """

    def __init__(self, *, frozen: bool = False, start: float | None = None) -> None:
        self._frozen = frozen
        self._lock = threading.Lock()
        self._base = time.time() if start is None else start
        self._offset = 0.0

    @property
    def frozen(self) -> bool:
        """True for a virtual clock that moves only when advanced."""
        return self._frozen

    def now(self) -> float:
        """Current time, unix seconds."""
        with self._lock:
            if self._frozen:
                return self._base + self._offset
            return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (>= 0) and return the new time.

        Raises:
            ValueError: ``seconds`` is negative or not finite.
        """
        if not seconds >= 0 or seconds == float("inf"):
            raise ValueError("seconds must be a finite number >= 0")
        with self._lock:
            self._offset += seconds
        return self.now()

    def dump(self) -> dict[str, float]:
        """``{"offset": seconds, "base": unix seconds}`` for a state store."""
        with self._lock:
            return {"offset": self._offset, "base": self._base}

    def load(self, doc: dict[str, float]) -> None:
        """Take the offset (and a virtual clock's base) of :meth:`dump`'s ``doc``: a
        restarted emulator keeps the time ``/_emulator/clock/advance`` moved it to."""
        with self._lock:
            self._offset = float(doc["offset"])
            if self._frozen:
                self._base = float(doc["base"])

    def reset(self) -> None:
        """Drop the offset (a virtual clock goes back to the real time now)."""
        with self._lock:
            self._offset = 0.0
            self._base = time.time()
