"""The result cache: same inputs, same output bytes, without redoing the image work."""

from __future__ import annotations

import asyncio
import base64

import numpy as np

from emulator.core.clock import Clock
from emulator.core.faults import FaultRules
from emulator.core.inputs import ImageSource
from emulator.core.jobs import Job, JobEngine, JobPlan, JobStatus, Task
from emulator.core.jobs.runner import ResultCache, result_key
from emulator.core.tasks import Rendered
from emulator.matte.engine import MatteEngine
from emulator.matte.grabcut import GrabCutEngine
from emulator.settings import Settings
from tests.conftest import decode_png, png_bytes


class CountingEngine(MatteEngine):
    """GrabCut, counting its calls."""

    name = "counting"

    def __init__(self) -> None:
        self.inner = GrabCutEngine()
        self.calls = 0

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.inner.alpha(rgb)


def _source(value: int = 220, size: tuple[int, int] = (24, 32)) -> ImageSource:
    rgb = np.zeros((*size, 3), np.uint8)
    rgb[size[0] // 4: 3 * size[0] // 4, size[1] // 4: 3 * size[1] // 4] = value
    return ImageSource("data", "data:image/png;base64," + base64.b64encode(
        png_bytes(rgb)).decode())


def _rendered(n: int) -> list[Rendered]:
    return [Rendered(b"x" * n, "image/png", 1, 1)]


def test_cache_is_an_lru_bounded_in_bytes() -> None:
    cache = ResultCache(100)
    cache.put("a", _rendered(40))
    cache.put("b", _rendered(40))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", _rendered(40))  # over 100 bytes: b goes
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.total_bytes == 80 and len(cache) == 2
    cache.put("big", _rendered(101))  # larger than the whole bound: not kept
    assert cache.get("big") is None
    assert (cache.hits, cache.misses) == (3, 2)
    off = ResultCache(0)
    off.put("a", _rendered(1))
    assert off.get("a") is None and len(off) == 0


def test_key_depends_on_everything_the_outputs_depend_on() -> None:
    key = result_key("remove", {}, [b"abc"], engine="u2netp", compress_level=1, max_pixels=100)
    variants = [
        result_key("replace", {}, [b"abc"], engine="u2netp", compress_level=1, max_pixels=100),
        result_key("remove", {"seed": 1}, [b"abc"], engine="u2netp", compress_level=1,
                   max_pixels=100),
        result_key("remove", {}, [b"abd"], engine="u2netp", compress_level=1, max_pixels=100),
        result_key("remove", {}, [b"ab", b"c"], engine="u2netp", compress_level=1,
                   max_pixels=100),
        result_key("remove", {}, [b"abc"], engine="isnet", compress_level=1, max_pixels=100),
        result_key("remove", {}, [b"abc"], engine="u2netp", compress_level=6, max_pixels=100),
        result_key("remove", {}, [b"abc"], engine="u2netp", compress_level=1, max_pixels=99),
    ]
    assert key not in variants and len(set(variants)) == len(variants)
    assert key == result_key("remove", {}, [b"abc"], engine="u2netp", compress_level=1,
                             max_pixels=100)


async def _run(engine: JobEngine, source: ImageSource, plan: JobPlan | None = None,
               **fields: object) -> Job:
    job = engine.submit(job_id=f"j{len(engine.store)}", vendor="v", operation="submit",
                        api_key="k", task=Task("remove", (source,)), plan=plan)
    for name, value in fields.items():
        setattr(job, name, value)
    await asyncio.wait_for(job.done.wait(), 30)
    assert await engine.observe(job) is JobStatus.SUCCEEDED
    return job


def _engine(matte: CountingEngine, **changes: object) -> JobEngine:
    settings = Settings(progression="immediate").replace(**changes)
    return JobEngine(settings, clock=Clock(), matte=lambda: matte)


def test_same_input_is_matted_once_and_gets_the_same_bytes() -> None:
    async def scenario() -> None:
        matte = CountingEngine()
        engine = _engine(matte)
        await engine.start()
        try:
            first = await _run(engine, _source())
            second = await _run(engine, _source())  # a small inline input: served at submit
            third = await _run(engine, _source(value=150))  # other pixels: matted again
        finally:
            await engine.stop()
        assert matte.calls == 2
        assert first.outputs[0].data == second.outputs[0].data
        assert first.outputs[0].id != second.outputs[0].id  # each job its own file and URL
        assert third.outputs[0].data != first.outputs[0].data
        assert engine.results.hits == 1
        # a tiny inline input stays as it is (no new object per job)
        assert second.task.sources[0].value == _source().value

    asyncio.run(scenario())


def test_large_inputs_hit_the_cache_in_the_pool() -> None:
    async def scenario() -> None:
        matte = CountingEngine()
        engine = _engine(matte)
        await engine.start()
        try:
            noisy = np.random.default_rng(1).integers(0, 255, (160, 160, 3), dtype=np.uint8)
            uri = "data:image/png;base64," + base64.b64encode(png_bytes(noisy)).decode()
            assert len(uri) > 16 * 1024
            a = await _run(engine, ImageSource("data", uri))
            b = await _run(engine, ImageSource("data", uri))
        finally:
            await engine.stop()
        assert matte.calls == 1 and a.outputs[0].data == b.outputs[0].data
        # the jobs keep no copy of their inline input once loaded
        assert a.task.sources[0].value == f"<data, {len(uri)} chars>"
        assert b.task.sources[0].value == f"<data, {len(uri)} chars>"

    asyncio.run(scenario())


def test_cache_off_mattes_every_job() -> None:
    async def scenario() -> None:
        matte = CountingEngine()
        engine = _engine(matte, result_cache_bytes=0)
        await engine.start()
        try:
            for _ in range(3):
                await _run(engine, _source())
        finally:
            await engine.stop()
        assert matte.calls == 3 and len(engine.results) == 0

    asyncio.run(scenario())


def test_a_job_with_an_image_fault_is_corrupted_even_from_the_cache() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        matte = CountingEngine()
        engine = _engine(matte)
        rules = FaultRules({"v": ["submit"]})
        rules.add({"image": "empty-alpha"})
        await engine.start()
        try:
            clean = await _run(engine, _source())
            broken = await _run(engine, _source(), rules.plan("v", "submit", "k"))
        finally:
            await engine.stop()
        assert matte.calls == 1
        return clean.outputs[0].data, broken.outputs[0].data

    clean, broken = asyncio.run(scenario())
    assert np.asarray(decode_png(clean))[:, :, 3].max() == 255
    assert np.asarray(decode_png(broken))[:, :, 3].max() == 0
