"""The worker pool runs below the event loop's priority (Linux), so polls stay fast while
images are matted."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from emulator.core.clock import Clock
from emulator.core.jobs import JobEngine
from emulator.matte.grabcut import GrabCutEngine
from emulator.settings import Settings


def _nice_of_a_worker(settings: Settings) -> tuple[int, int]:
    async def scenario() -> tuple[int, int]:
        engine = JobEngine(settings, clock=Clock(), matte=GrabCutEngine)
        await engine.start()
        try:
            def nice() -> int:
                return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

            worker: int = await engine.run_blocking(nice)
            return worker, nice()
        finally:
            await engine.stop()

    return asyncio.run(scenario())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_workers_run_at_a_lower_priority_than_the_loop() -> None:
    worker, loop = _nice_of_a_worker(Settings(worker_nice=7))
    assert worker == min(19, loop + 7)
    worker, loop = _nice_of_a_worker(Settings(worker_nice=0))
    assert worker == loop


def test_worker_nice_is_checked() -> None:
    with pytest.raises(ValueError):
        Settings(worker_nice=20)
    assert Settings.from_env({"RMBG_EMULATOR_WORKER_NICE": "3"}).worker_nice == 3
