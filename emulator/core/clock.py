"""Clocks: the real one (with an offset tests can push forward) and a frozen virtual one.

Every time the core reads comes from a :class:`Clock`, so tests never sleep to see a status
change: they call :meth:`Clock.advance`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Clock:
    """Unix time in seconds (float), real or virtual.

    A real clock follows ``time.time()`` plus an offset; a virtual clock (``frozen=True``)
    starts at the real time of its creation and moves only when :meth:`advance` is called.
    Both accept :meth:`advance`, so ``POST /_emulator/clock/advance`` works on either.

    Attributes:
        now: the current time, unix seconds (a callable taking no argument). A real clock
            never advanced reads ``time.time`` itself: no lock and no Python frame on the
            request paths, which read the clock two (a status poll) to seven times (a submit
            done at once); once advanced, or for a virtual clock, it adds the offset.
    """

    now: Callable[[], float]

    def __init__(self, *, frozen: bool = False, start: float | None = None) -> None:
        self._frozen = frozen
        self._lock = threading.Lock()
        self._base = time.time() if start is None else start
        self._offset = 0.0
        self._rebind()

    def _rebind(self) -> None:
        """Choose :attr:`now` for the clock's state (after every change)."""
        self.now = time.time if not self._frozen and self._offset == 0.0 else self._read

    @property
    def frozen(self) -> bool:
        """True for a virtual clock that moves only when advanced."""
        return self._frozen

    def _read(self) -> float:
        """Current time, unix seconds, with the offset (:attr:`now` of an advanced or
        virtual clock)."""
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
            self._rebind()
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
            self._rebind()

    def reset(self) -> None:
        """Drop the offset (a virtual clock goes back to the real time now)."""
        with self._lock:
            self._offset = 0.0
            self._base = time.time()
            self._rebind()
