"""The runner: a job's work (inputs, the task in the worker pool, the result cache, its files).

A job's work starts at submit (:meth:`Runner.work_now` or :meth:`Runner.work`) and runs apart
from the status it shows (:mod:`emulator.core.jobs.progression`): load the inputs (inline
base64, or a URL fetched under the fetch policy, or one of the emulator's own files with no
HTTP), render the task in the matte pool (:mod:`emulator.core.jobs.pool`: worker processes,
or threads at a lower priority than the event loop), keep the outputs as files, then hand
the outcome to ``finish`` (the engine: billing and the job's ``done`` event). The outputs of
an input already seen come from the result cache (:class:`ResultCache`), on the event loop
when nothing needs the pool.

**The result cache**: a task's outputs by the sha256 of what determines them. Test suites
submit the same fixture photographs over and over; the image work of a job (decode, matte,
encode: about 1,000 times its HTTP work, as the project's prototypes measured) depends only on
the input bytes, the task and its params, the engine and the encoder settings, and every engine
here is deterministic. So a job whose inputs were seen before gets the same output bytes
without redoing the work, as a client could not tell apart from a real run (the vendor's own
answer to the same request would be the same image). Bounded in bytes, least recently used
first out; ``Settings.result_cache_bytes = 0`` turns it off.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from emulator.core.clock import Clock
from emulator.core.fetchpolicy import FetchPolicy
from emulator.core.files import FileStore
from emulator.core.inputs import (
    ImageSource,
    LocalFetch,
    LocalResolver,
    decode_inline,
    fetch_url,
)
from emulator.core.jobs.model import Job, JobStatus
from emulator.core.jobs.pool import EngineSpec, MattePool
from emulator.core.tasks import Rendered, TaskContext
from emulator.errors import EmulatorError
from emulator.matte.engine import MatteEngine
from emulator.settings import Settings

log = logging.getLogger("emulator.jobs")

#: Inline sources (base64 text) up to this many characters are decoded on the event loop
#: when the job's outputs may come from the result cache (about 10 us; no pool hop).
INLINE_NOW_CHARS = 16 * 1024
#: Inline inputs up to this many characters stay on a finished job (100,000 jobs: 50 MB).
KEEP_INLINE_CHARS = 512

#: Ends a job's work with its outcome (the engine's; idempotent).
Finish = Callable[[Job, JobStatus], None]


def result_key(kind: str, params: dict[str, Any], payloads: Sequence[bytes], *,
               engine: str, compress_level: int, max_pixels: int) -> str:
    """Hex sha256 of everything a task's outputs depend on (blocking for large payloads:
    about 1.5 ms per MB)."""
    digest = hashlib.sha256()
    sizes = ",".join(str(len(p)) for p in payloads)
    options = json.dumps(params, sort_keys=True, default=str) if params else "{}"
    digest.update(f"{kind}\0{engine}\0{compress_level}\0{max_pixels}\0{sizes}\0{options}\0"
                  .encode())
    for payload in payloads:
        digest.update(payload)
    return digest.hexdigest()


class ResultCache:
    """Thread-safe LRU of task outputs, holding at most ``max_bytes`` bytes of output data
    (0: keeps nothing). Called from the event loop and the worker pool."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Rendered, ...]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> list[Rendered] | None:
        """The outputs kept under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return list(found)

    def put(self, key: str, outputs: Sequence[Rendered]) -> None:
        """Keep ``outputs`` under ``key``, evicting the least recently used past the bound;
        outputs larger than the whole bound are not kept."""
        size = sum(len(r.data) for r in outputs)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= sum(len(r.data) for r in old)
            self._items[key] = tuple(outputs)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= sum(len(r.data) for r in evicted)

    def clear(self) -> None:
        """Forget every entry (the hit and miss counts too)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    @property
    def total_bytes(self) -> int:
        """Bytes of output data held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


class Runner:
    """Runs jobs' work: the worker pool, the HTTP client for inputs, the result cache.

    Use :meth:`start` and :meth:`close` from the event loop that serves requests.

    Attributes:
        results: outputs by input; kept across resets since no client can see it.
        local_resolver: bytes of the emulator's own URLs, without HTTP (the app sets it).
        fetch_policy: which addresses input fetches may reach (``Settings.allow_fetch``; the
            emulator's own loopback address is allowed, its own port refused).
    """

    def __init__(self, settings: Settings, *, clock: Clock, matte: Callable[[], MatteEngine],
                 files: FileStore, finish: Finish, engine_spec: EngineSpec | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self._matte = matte
        self.files = files
        self.finish = finish
        self.results = ResultCache(settings.result_cache_bytes)
        self._engine_seen: MatteEngine | None = None
        self.local_resolver: LocalResolver | None = None
        self.fetch_policy = FetchPolicy(settings.allow_fetch, own_host=settings.host,
                                        own_port=settings.port)
        self._engine_spec = engine_spec
        self._pool: MattePool | None = None
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Create the matte pool (``Settings.matte_pool``; worker processes start on first
        use) and the HTTP client for inputs."""
        if self._pool is None:
            s = self.settings
            self._pool = MattePool(s.matte_pool, s.matte_workers, s.worker_nice,
                                   self._engine_spec, queue_url=s.store,
                                   queue_wait_s=s.worker_wait_s)
            self._pool.start()
        if self._client is None:
            # An explicit transport: no proxy from the environment, so the address the
            # fetch policy checked is the address connected to (inputs.fetch_url).
            self._client = httpx.AsyncClient(
                headers={"User-Agent": "rmbg-emulator (input fetch)"},
                transport=httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=32)),
            )

    async def close(self) -> None:
        """Close the client and the pool (work still queued in the pool is cancelled, worker
        processes are stopped)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @property
    def matte_pool(self) -> MattePool:
        """The matte pool (threads, and worker processes when ``matte_pool`` is processes).

        Raises:
            RuntimeError: before :meth:`start`.
        """
        if self._pool is None:
            raise RuntimeError("JobEngine.start() has not been called")
        return self._pool

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The threads for blocking work (in ``processes`` mode they dispatch image work).

        Raises:
            RuntimeError: before :meth:`start`.
        """
        threads = self.matte_pool.threads
        assert threads is not None
        return threads

    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the worker pool and await its result."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def load(self, source: ImageSource, origin: str | None) -> bytes:
        """The bytes of one input: inline ones decoded in the pool, URLs fetched under
        :attr:`fetch_policy` (the emulator's own through :attr:`local_resolver`), both at most
        ``Settings.max_input_bytes``.

        Raises:
            InputImageError: (an :class:`~emulator.errors.EmulatorError`) bad inline data or
                a fetch that failed or was refused.
        """
        max_bytes = self.settings.max_input_bytes
        if source.kind != "url":
            data: bytes = await self.run_blocking(decode_inline, source, max_bytes)
            return data
        resolver = self.local_resolver
        local: LocalFetch | None = None
        if resolver is not None:
            def local(url: str) -> Awaitable[bytes | None]:
                return resolver(url, origin)
        assert self._client is not None
        return await fetch_url(source.value, self._client, policy=self.fetch_policy,
                               max_bytes=max_bytes, timeout_s=self.settings.fetch_timeout_s,
                               deadline_s=self.settings.fetch_deadline_s, local=local)

    def result_key(self, job: Job, payloads: list[bytes], engine: MatteEngine) -> str:
        """The result cache's key of ``job``'s task on ``payloads`` with ``engine``."""
        s = self.settings
        return result_key(job.task.kind, job.task.params, payloads,
                          engine=f"{engine.name}@{id(engine):x}",
                          compress_level=s.png_compress_level, max_pixels=s.max_input_pixels)

    def render(self, job: Job, payloads: list[bytes], ctx: TaskContext) -> list[Rendered]:
        """The task (or its cached outputs), then the output faults of a job that carries
        some (``Job.output_fault``), in one worker-pool call (the task itself in a worker
        process when the pool has them).

        Raises:
            WorkerCrashed: the worker process died during the task (only this job fails).
        """
        pool = self.matte_pool
        self._engine_seen = ctx.engine
        key = self.result_key(job, payloads, ctx.engine) if self.results.max_bytes else None
        rendered = self.results.get(key) if key is not None else None
        if rendered is None:
            rendered = pool.render(job.task.kind, job.task.params, payloads, ctx)
            if key is not None:
                self.results.put(key, rendered)
        if job.output_fault is not None:
            rendered = job.output_fault(rendered)
        return rendered

    def keep(self, job: Job, rendered: list[Rendered]) -> None:
        """Store ``rendered`` as ``job``'s output files (with the job's result TTL)."""
        now = self.clock.now()
        ttl = self.settings.result_ttl_s if job.output_ttl_s is None else job.output_ttl_s
        job.outputs = [
            self.files.put(r.data, content_type=r.content_type, width=r.width,
                           height=r.height, now=now, ttl_s=ttl, suffix=r.suffix)
            for r in rendered
        ]

    def work_now(self, job: Job) -> tuple[bool, list[bytes] | None]:
        """End ``job``'s work at once, on the event loop, when its outputs are in the result
        cache and nothing about it needs the pool: small inline inputs only, no faults, an
        engine already in use (the one the last render used: the factory ``matte`` is not
        asked again, it gives the same engine for the life of the app,
        :meth:`emulator.app.Emulator.matte`).

        Returns:
            Whether it did (else the work runs as a task), and the inputs it decoded on the
            way, if any, so that the task does not decode them again.
        """
        engine = self._engine_seen
        sources = job.task.sources
        if (engine is None or job.planned is not None or job.faults
                or any(s.kind == "url" or len(s.value) > INLINE_NOW_CHARS for s in sources)):
            return False, None
        try:
            payloads = [decode_inline(s, self.settings.max_input_bytes) for s in sources]
        except EmulatorError:
            return False, None  # the task reports it, in the usual way
        rendered = self.results.get(self.result_key(job, payloads, engine))
        if rendered is None:
            return False, payloads
        job.work_started_at = self.clock.now()
        forget_inline(job)
        self.keep(job, rendered)
        self.finish(job, JobStatus.SUCCEEDED)
        return True, None

    async def work(self, job: Job, payloads: list[bytes] | None = None) -> None:
        """The job's work as a task: load its inputs (unless ``payloads`` has them already),
        render them in the pool, store the outputs, then end the work."""
        job.work_started_at = self.clock.now()
        outcome = JobStatus.SUCCEEDED
        if job.planned is not None:
            outcome, job.error, job.error_code = job.planned
            self.finish(job, outcome)
            return
        try:
            if payloads is None:
                payloads = [await self.load(src, job.origin) for src in job.task.sources]
            forget_inline(job)
            ctx = TaskContext(
                engine=self._matte(),
                max_pixels=self.settings.max_input_pixels,
                compress_level=self.settings.png_compress_level,
            )
            rendered: list[Rendered] = await self.run_blocking(self.render, job, payloads, ctx)
            self.keep(job, rendered)
        except EmulatorError as exc:
            outcome = JobStatus.FAILED
            job.error, job.error_code = exc.message, exc.code
        except asyncio.CancelledError:
            # Only stop() cancels the work: the job ends, visibly, instead of vanishing.
            job.error = "the emulator shut down before the job's work ended"
            job.error_code = "system_error"
            self.finish(job, JobStatus.ERROR)
            raise
        except Exception as exc:
            log.exception("job %s: internal error in the image pipeline", job.id)
            outcome = JobStatus.ERROR
            job.error = f"internal error in the emulator's image pipeline: {type(exc).__name__}"
            job.error_code = "system_error"
        self.finish(job, outcome)


def forget_inline(job: Job) -> None:
    """Drop a loaded job's inline inputs (base64 text, up to ~33 MB each), keeping a short
    description: a finished job stays in the store long after its work. Inputs of up to
    :data:`KEEP_INLINE_CHARS` characters are kept as they are (no new object per job)."""
    sources = job.task.sources
    if any(s.kind != "url" and len(s.value) > KEEP_INLINE_CHARS for s in sources):
        job.task.sources = tuple(
            s if s.kind == "url" or len(s.value) <= KEEP_INLINE_CHARS
            else ImageSource(s.kind, s.describe()) for s in sources)


def default_threads() -> int:
    """CPU count, for onnxruntime's intra-op threads."""
    return os.cpu_count() or 1


__all__ = [
    "INLINE_NOW_CHARS", "KEEP_INLINE_CHARS", "Finish", "ResultCache", "Runner", "default_threads",
    "forget_inline", "result_key",
]
