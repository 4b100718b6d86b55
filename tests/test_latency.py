"""Injected latency is never shorter than asked, whatever the event loop's timer resolution."""

from __future__ import annotations

import asyncio
import time

from emulator.middleware import sleep_at_least


def test_sleep_at_least_never_wakes_early() -> None:
    async def shortest() -> float:
        waited = []
        for seconds in (0.0005, 0.003, 0.02, 0.05):
            started = time.perf_counter()
            await sleep_at_least(seconds)
            waited.append((time.perf_counter() - started) - seconds)
        return min(waited)

    assert asyncio.run(shortest()) >= 0
