"""The clock and the progression policies, on the JobEngine directly (no HTTP)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import numpy as np
import pytest

from emulator.core.clock import Clock
from emulator.core.inputs import ImageSource
from emulator.core.jobs import JobEngine, JobStatus, Task
from emulator.errors import GatewayTimeout
from emulator.matte.grabcut import GrabCutEngine
from emulator.settings import Settings, parse_progression
from tests.conftest import png_bytes


def test_virtual_clock_moves_only_when_advanced() -> None:
    clock = Clock(frozen=True, start=1000.0)
    assert clock.now() == 1000.0
    assert clock.now() == 1000.0
    assert clock.advance(2.5) == 1002.5
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_real_clock_advance_adds_an_offset() -> None:
    clock = Clock()
    before = clock.now()
    clock.advance(3600)
    assert clock.now() - before >= 3600


def test_real_clock_keeps_its_offset_through_reset_and_load() -> None:
    clock = Clock()
    clock.advance(3600)
    saved = clock.dump()
    clock.reset()
    assert abs(clock.now() - time.time()) < 60  # back to the real time
    clock.advance(0)
    assert abs(clock.now() - time.time()) < 60
    clock.load(saved)  # a restarted emulator keeps the time it was moved to
    assert clock.now() - time.time() > 3500
    clock.advance(100)
    assert clock.now() - time.time() > 3600


@pytest.mark.parametrize(("text", "parsed"), [
    ("immediate", ("polls", 0)), ("polls:3", ("polls", 3)), ("time", ("time", 0)),
    (" POLLS:1 ", ("polls", 1)),
])
def test_parse_progression(text: str, parsed: tuple[str, int]) -> None:
    assert parse_progression(text) == parsed


@pytest.mark.parametrize("bad", ["polls:x", "polls:-1", "later", ""])
def test_parse_progression_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_progression(bad)


def _data_uri() -> ImageSource:
    import base64

    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[6:18, 8:24] = 220
    return ImageSource("data", "data:image/png;base64," + base64.b64encode(
        png_bytes(rgb)).decode())


def _engine(**changes: object) -> JobEngine:
    settings = Settings(**changes)  # type: ignore[arg-type]
    return JobEngine(settings, clock=Clock(frozen=settings.virtual_clock),
                     matte=GrabCutEngine)


async def _submit(engine: JobEngine, source: ImageSource | None = None):  # type: ignore[no-untyped-def]
    return engine.submit(job_id="j1", vendor="v", operation="submit", api_key="k",
                         task=Task("remove", (source or _data_uri(),)))


def test_polls_progression_steps_per_read() -> None:
    async def scenario() -> list[JobStatus]:
        engine = _engine(progression="polls:3")
        await engine.start()
        job = await _submit(engine)
        seen = [await engine.observe(job) for _ in range(5)]
        await engine.stop()
        return seen

    assert asyncio.run(scenario()) == [
        JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.PROCESSING,
        JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]


def test_time_progression_follows_the_virtual_clock() -> None:
    async def scenario() -> list[JobStatus]:
        engine = _engine(progression="time", latency="vendor", virtual_clock=True)
        await engine.start()
        job = await _submit(engine)
        await job.done.wait()
        seen = [await engine.observe(job)]
        engine.clock.advance(1.0)
        seen.append(await engine.observe(job))
        engine.clock.advance(2.1)
        seen.append(await engine.observe(job))
        await engine.stop()
        assert job.completed_at is not None and job.duration_ms is not None
        assert job.duration_ms >= 3000
        return seen

    assert asyncio.run(scenario()) == [JobStatus.QUEUED, JobStatus.PROCESSING,
                                       JobStatus.SUCCEEDED]


def test_time_progression_never_shows_final_before_the_work_ends() -> None:
    async def scenario() -> tuple[JobStatus, JobStatus]:
        engine = _engine(progression="time", latency="none", virtual_clock=True)
        await engine.start()
        gate = asyncio.Event()

        async def slow_resolver(url: str, origin: str | None) -> bytes | None:
            await gate.wait()
            return None

        engine.local_resolver = slow_resolver
        job = await _submit(engine, ImageSource("url", "http://127.0.0.1:9/x.png"))
        engine.clock.advance(10)
        early = await engine.observe(job)
        gate.set()
        await job.done.wait()
        late = await engine.observe(job)
        await engine.stop()
        return early, late

    early, late = asyncio.run(scenario())
    assert early is JobStatus.PROCESSING
    assert late is JobStatus.FAILED


def test_advance_stuck_complete_and_cancel() -> None:
    async def scenario() -> None:
        engine = _engine(progression="polls:100")
        await engine.start()
        job = await _submit(engine)
        engine.advance(job)
        assert await engine.observe(job, count=False) is JobStatus.PROCESSING
        job.stuck = True
        engine.clock.advance(100)
        assert await engine.observe(job) is JobStatus.PROCESSING
        engine.complete(job)
        assert await engine.observe(job) is JobStatus.SUCCEEDED
        assert job.outputs and job.outputs[0].data[:4] == b"\x89PNG"

        other = engine.submit(job_id="j2", vendor="v", operation="submit", api_key="k",
                              task=Task("remove", (_data_uri(),)))
        engine.cancel(other)
        assert other.status is JobStatus.CANCELLED
        account = engine.billing.account("k")
        await engine.stop()
        assert account.balance_usd == Decimal("999.982")

    asyncio.run(scenario())


def test_reset_forgets_jobs_and_balances() -> None:
    async def scenario() -> None:
        engine = _engine(progression="immediate")
        await engine.start()
        job = await _submit(engine)
        await engine.observe(job)
        engine.reset()
        assert engine.find("j1") is None
        assert engine.billing.account("k").balance_usd == 1000.0
        await engine.stop()

    asyncio.run(scenario())


def test_status_reads_and_finish_wait_at_most_max_wait() -> None:
    async def scenario() -> tuple[JobStatus, str, JobStatus]:
        engine = _engine(progression="immediate", max_wait_s=0.3)
        await engine.start()
        gate = asyncio.Event()

        async def slow_resolver(url: str, origin: str | None) -> bytes | None:
            await gate.wait()  # image work that does not end
            return None

        engine.local_resolver = slow_resolver
        job = await _submit(engine, ImageSource("url", "http://127.0.0.1:9/x.png"))
        # the read due to show the final status returns, in progress (bounded, not hung)
        seen = await asyncio.wait_for(engine.observe(job), 10)
        with pytest.raises(GatewayTimeout) as caught:
            await asyncio.wait_for(engine.finish(job), 10)
        gate.set()
        await job.done.wait()
        late = await engine.observe(job)
        await engine.stop()
        return seen, caught.value.message, late

    seen, message, late = asyncio.run(scenario())
    assert seen is JobStatus.PROCESSING
    assert "0.3 s" in message
    assert late is JobStatus.FAILED


def test_one_slow_job_does_not_hold_the_ticker() -> None:
    async def scenario() -> JobStatus:
        engine = _engine(progression="time", latency="none")
        await engine.start()
        gate = asyncio.Event()

        async def slow_resolver(url: str, origin: str | None) -> bytes | None:
            await gate.wait()
            return None

        engine.local_resolver = slow_resolver
        slow = await _submit(engine, ImageSource("url", "http://127.0.0.1:9/x.png"))
        engine.complete(slow)  # its final status is due (a sync call), its work hangs
        await asyncio.sleep(0.2)  # the ticker meets it first
        quick = engine.submit(job_id="j2", vendor="v", operation="submit", api_key="k",
                              task=Task("remove", (_data_uri(),)), watch=True)
        try:
            for _ in range(100):  # the ticker shows it final without a status read
                if quick.status.terminal:
                    break
                await asyncio.sleep(0.05)
            return quick.status
        finally:
            gate.set()
            await engine.stop()

    assert asyncio.run(scenario()) is JobStatus.SUCCEEDED
