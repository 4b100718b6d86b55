"""The matte pool: its threads run below the event loop's priority (Linux), so polls stay fast
while images are matted; with ``matte_pool=processes`` the image work runs in worker processes
(same output, a killed worker fails only its job)."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
import threading

import pytest

from emulator.core.clock import Clock
from emulator.core.inputs import ImageSource
from emulator.core.jobs import EngineSpec, Job, JobEngine, JobStatus, MattePool, Task
from emulator.matte.grabcut import GrabCutEngine
from emulator.settings import Settings
from tests.conftest import png_bytes, small_photo


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


# -- the matte pool's kinds: threads, or worker processes (emulator.core.jobs.pool) ----------
GRABCUT = EngineSpec("grabcut", None, None, 1)


def _job_engine(pool: str) -> JobEngine:
    settings = Settings(progression="immediate", matte_pool=pool, matte_workers=1,
                        result_cache_bytes=0)
    return JobEngine(settings, clock=Clock(), matte=GrabCutEngine, engine_spec=GRABCUT)


def _photo_source() -> ImageSource:
    return ImageSource("data", "data:image/png;base64,"
                       + base64.b64encode(png_bytes(small_photo(160))).decode())


async def _run(engine: JobEngine, source: ImageSource, n: int) -> Job:
    job = engine.submit(job_id=f"j{n}", vendor="v", operation="submit", api_key="k",
                        task=Task("remove", (source,)))
    await asyncio.wait_for(job.done.wait(), 60)
    return job


def test_processes_make_the_same_cutout_as_threads_in_a_worker_process() -> None:
    async def scenario(pool: str) -> tuple[bytes, list[int]]:
        engine = _job_engine(pool)
        await engine.start()
        try:
            assert engine.runner.matte_pool.worker_pids() == []  # started on first use only
            job = await _run(engine, _photo_source(), 1)
            assert job.outcome is JobStatus.SUCCEEDED, job.error
            return job.outputs[0].data, engine.runner.matte_pool.worker_pids()
        finally:
            await engine.stop()

    threads, no_pids = asyncio.run(scenario("threads"))
    processes, pids = asyncio.run(scenario("processes"))
    assert no_pids == [] and len(pids) == 1 and pids[0] != os.getpid()
    assert processes == threads


def test_bad_input_in_a_worker_process_fails_the_job_as_in_a_thread() -> None:
    async def scenario(pool: str) -> tuple[JobStatus | None, str | None, str | None]:
        engine = _job_engine(pool)
        await engine.start()
        try:
            job = await _run(engine, ImageSource("data", "data:image/png;base64,"
                                                 + base64.b64encode(b"not a png").decode()), 1)
            return job.outcome, job.error_code, job.error
        finally:
            await engine.stop()

    in_process = asyncio.run(scenario("processes"))
    assert in_process == asyncio.run(scenario("threads"))
    assert in_process[0] is JobStatus.FAILED and in_process[2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL of a worker")
def test_a_killed_worker_fails_its_job_only_and_the_next_job_succeeds() -> None:
    async def scenario() -> tuple[Job, Job, Job]:
        engine = _job_engine("processes")
        await engine.start()
        try:
            job = engine.submit(job_id="killed", vendor="v", operation="submit",
                                api_key="k", task=Task("remove", (_photo_source(),)))
            pool = engine.runner.matte_pool
            for _ in range(3000):  # the worker is spawned when the job is handed to it
                if pool.worker_pids():
                    break
                await asyncio.sleep(0.01)
            os.kill(pool.worker_pids()[0], signal.SIGKILL)
            await asyncio.wait_for(job.done.wait(), 60)
            after = await _run(engine, _photo_source(), 2)
            # a worker killed while idle is replaced before the next job, which succeeds
            os.kill(pool.worker_pids()[0], signal.SIGKILL)
            await asyncio.sleep(0.5)
            idle_killed = await _run(engine, _photo_source(), 3)
            return job, after, idle_killed
        finally:
            await engine.stop()

    killed, after, idle_killed = asyncio.run(scenario())
    assert killed.outcome is JobStatus.FAILED and killed.error_code == "system_error"
    assert killed.error is not None and "worker process ended" in killed.error
    assert after.outcome is JobStatus.SUCCEEDED, after.error
    assert idle_killed.outcome is JobStatus.SUCCEEDED, idle_killed.error


def test_matte_pool_and_workers_settings() -> None:
    assert Settings().matte_pool == "processes" and Settings().matte_workers == 2
    env = Settings.from_env({"RMBG_EMULATOR_MATTE_POOL": "threads",
                             "RMBG_EMULATOR_MATTE_WORKERS": "3"})
    assert env.matte_pool == "threads" and env.matte_workers == 3
    with pytest.raises(ValueError, match="matte_pool"):
        Settings(matte_pool="fibres")
    with pytest.raises(ValueError, match="matte_workers"):
        Settings(matte_workers=0)
    # an engine given as an object (no spec to rebuild it elsewhere) runs in threads
    assert MattePool("processes", 1, 0, None).kind == "threads"
    assert MattePool("processes", 1, 0, GRABCUT).kind == "processes"


def test_a_worker_process_loads_once_lowers_its_priority_and_keeps_telemetry_off() -> None:
    async def scenario() -> tuple[list[int], list[int], str | None, int]:
        engine = _job_engine("processes")
        await engine.start()
        try:
            pool = engine.runner.matte_pool
            await _run(engine, _photo_source(), 1)
            first = pool.worker_pids()
            await _run(engine, _photo_source(), 2)
            slot = pool._all[0]  # the slot's executor, to look inside its worker
            executor = slot.get()
            telemetry = executor.submit(os.getenv, "ORT_DISABLE_TELEMETRY").result()
            nice = executor.submit(os.getpriority, os.PRIO_PROCESS, 0).result()
            return first, pool.worker_pids(), telemetry, nice
        finally:
            await engine.stop()

    first, second, telemetry, nice = asyncio.run(scenario())
    assert first == second and len(first) == 1  # one process served both jobs
    assert telemetry == "1"
    if sys.platform.startswith("linux"):
        assert nice == min(19, os.getpriority(os.PRIO_PROCESS, 0) + Settings().worker_nice)
