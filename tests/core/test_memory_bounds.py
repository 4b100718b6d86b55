"""Structures that grow per job or per request stay bounded (store, secrets, engine)."""

from __future__ import annotations

import asyncio
import base64
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from emulator.core.clock import Clock
from emulator.core.files import FILE_OVERHEAD_BYTES, FileStore
from emulator.core.inputs import ImageSource
from emulator.core.jobs import JobEngine, Task
from emulator.core.jobs.engine import InMemoryJobStore
from emulator.core.webhooks import MAX_SECRETS_PER_KEY, Secrets
from emulator.matte.grabcut import GrabCutEngine
from emulator.settings import Settings
from tests.conftest import png_bytes


def _fake(job_id: str, finished: bool) -> Any:
    return SimpleNamespace(id=job_id, finished=finished)


def _store(cap: int) -> InMemoryJobStore:
    return InMemoryJobStore(cap, lambda j: bool(j.finished))  # type: ignore[attr-defined]


def test_store_evicts_oldest_finished_beyond_cap() -> None:
    store = _store(100)
    for i in range(1000):
        store.put(_fake(f"j{i}", finished=True))
    assert len(store) == 100
    assert store.get("j899") is None and store.get("j900") is not None
    store.put(_fake("next", finished=False))
    assert len(store) == 100
    assert store.get("j900") is None and store.get("j901") is not None


def test_store_put_stays_cheap_when_every_job_is_unfinished() -> None:
    """20,000 puts over a cap of 10 with every job unfinished must not scan the store each
    time (that took minutes); once they finish, the next put evicts down to the cap."""
    store = _store(10)
    started = time.perf_counter()
    live = [_fake(f"j{i}", finished=False) for i in range(20_000)]
    for job in live:
        store.put(job)
    assert time.perf_counter() - started < 5.0
    assert len(store) == 20_000  # unfinished jobs are never evicted
    for job in live:
        job.finished = True
        store.finished(job)
    assert len(store) == 20_000  # never evicted as they finish
    store.put(_fake("last", finished=True))
    assert len(store) == 10
    assert store.get("last") is not None and store.get("j19991") is not None
    assert store.get("j19990") is None


def test_store_evicts_in_the_order_jobs_finished_without_walking_unfinished_ones() -> None:
    """At the cap, a put evicts the job that finished first, in O(1): the unfinished jobs in
    front of it are not moved or scanned (the store keeps finished ids apart)."""
    store = _store(3)
    a, b, c = _fake("a", False), _fake("b", False), _fake("c", False)
    for job in (a, b, c):
        store.put(job)
    c.finished = True
    store.finished(c)
    store.put(_fake("d", finished=False))
    assert store.get("c") is None and store.get("a") is a and store.get("b") is b
    assert [j.id for j in store.jobs()] == ["a", "b", "d"]  # oldest first, order kept
    assert len(store._done) == 0


def test_secrets_per_key_are_capped_and_the_newest_signs() -> None:
    secrets = Secrets()
    made = [secrets.create("runflow", "k", f"s{i}", float(i)) for i in range(200)]
    assert secrets.current("runflow", "k") == made[-1]
    assert len(secrets._hmac[("runflow", "k")]) == MAX_SECRETS_PER_KEY
    assert secrets.current("runflow", "other") is None


def test_file_store_counts_per_file_overhead_so_tiny_files_stay_bounded() -> None:
    budget = 100 * (FILE_OVERHEAD_BYTES + 10)
    files = FileStore(budget)
    for _ in range(10_000):
        files.put(b"0123456789", content_type="image/png", width=1, height=1, now=0.0,
                  ttl_s=None)
    assert len(files) == 100
    assert files.total_bytes == 1000


def _data_uri() -> ImageSource:
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[6:18, 8:24] = 220
    return ImageSource("data", "data:image/png;base64," + base64.b64encode(
        png_bytes(rgb)).decode())


def test_engine_store_is_bounded_when_jobs_are_never_polled() -> None:
    async def scenario() -> int:
        engine = JobEngine(Settings(max_jobs=5, progression="immediate"), clock=Clock(),
                           matte=GrabCutEngine)
        await engine.start()
        source = _data_uri()
        for i in range(20):
            engine.submit(job_id=f"j{i}", vendor="v", operation="submit", api_key="k",
                          task=Task("remove", (source,)))
            while engine.busy:
                await asyncio.sleep(0.01)
        await engine.stop()
        return len(engine.store)

    assert asyncio.run(scenario()) <= 5


def test_evicted_jobs_take_their_files_with_them() -> None:
    async def scenario() -> tuple[int, int, bool]:
        engine = JobEngine(Settings(max_jobs=5, progression="immediate"), clock=Clock(),
                           matte=GrabCutEngine)
        await engine.start()
        source = _data_uri()
        first: list[str] = []
        for i in range(20):
            job = engine.submit(job_id=f"j{i}", vendor="v", operation="submit", api_key="k",
                                task=Task("remove", (source,)))
            while engine.busy:
                await asyncio.sleep(0.01)
            if i == 0:
                first = [f.id for f in job.outputs]
        await engine.stop()
        gone = bool(first) and all(engine.files.get(f) is None for f in first)
        return len(engine.store), len(engine.files), gone

    kept, files, gone = asyncio.run(scenario())
    assert kept == 5 and files == 5
    assert gone  # the first job's result file left with it
