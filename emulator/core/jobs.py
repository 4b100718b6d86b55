"""Jobs: the canonical status, the job record, and the engine that runs and reveals them.

Two things move separately, as in moto's managed state
(``moto/moto_api/_internal/managed_state_model.py``):

* the **work** (fetch, decode, matte, encode) starts at submit and runs in the worker pool;
* the **visible status** follows the progression policy: ``polls:N`` (``immediate`` is
  ``polls:0``) advances one step per status read, ``time`` follows a latency profile on the
  :class:`~emulator.core.clock.Clock`.

A job never shows its final status before its work has ended: under ``polls`` the read that
is due to show it waits for the work (off the event loop); under ``time`` the job shows
processing until the work ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from emulator.core.background import end_tasks
from emulator.core.billing import Billing
from emulator.core.clock import Clock
from emulator.core.fetchpolicy import FetchPolicy
from emulator.core.files import FileStore, StoredFile
from emulator.core.inputs import (
    ImageSource,
    LocalFetch,
    LocalResolver,
    decode_inline,
    fetch_url,
)
from emulator.core.results import ResultCache, result_key
from emulator.core.store import InMemoryJobStore, JobStore
from emulator.core.tasks import TASKS, Rendered, TaskContext
from emulator.errors import Conflict, EmulatorError, GatewayTimeout, InvalidInput, NotFound
from emulator.matte.engine import MatteEngine
from emulator.settings import Settings, parse_progression

log = logging.getLogger("emulator.jobs")

#: A job's output-stage faults: rendered outputs in, broken outputs out (worker pool).
OutputFault = Callable[[list[Rendered]], list[Rendered]]


class JobStatus(str, enum.Enum):
    """The canonical status; each adapter maps it to its vendor's words."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for succeeded, failed, error and cancelled."""
        return self not in (JobStatus.QUEUED, JobStatus.PROCESSING)


# Visible stages: 0 queued, 1 processing, 2 final.
_QUEUED, _PROCESSING, _FINAL = 0, 1, 2


@dataclass
class Task:
    """What a job does.

    Attributes:
        kind: a key of :data:`emulator.core.tasks.TASKS` (``"remove"``, ...).
        sources: input images, in the order the task function expects.
        params: task options (JSON values).
    """

    kind: str
    sources: tuple[ImageSource, ...]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Job:
    """One job, vendor-neutral. Times are unix seconds from the engine's clock.

    ``metadata`` holds what the adapter needs to render the vendor's shape again (callback
    URL, the client's own metadata, ...); the core does not read it.

    Fault injection (set at submit by the request's fault plan, see
    :mod:`emulator.core.faults`): ``faults`` names the faults given to the job (shown by the
    control plane); ``planned`` is an outcome decided in advance, ``(status, error message,
    error code)``, and the image work is then skipped; ``output_ttl_s`` overrides
    ``Settings.result_ttl_s`` for this job's files (0: expired at once); ``output_fault``
    breaks the rendered outputs in the worker pool (output-stage effects; ``None`` for a job
    without one, which pays nothing).
    """

    id: str
    vendor: str
    operation: str
    api_key: str
    task: Task
    created_at: float
    price_usd: float
    origin: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status: JobStatus = JobStatus.QUEUED
    updated_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    status_reads: int = 0
    floor_stage: int = _QUEUED
    stuck: bool = False
    work_started_at: float | None = None
    work_ended_at: float | None = None
    outcome: JobStatus | None = None
    outputs: list[StoredFile] = field(default_factory=list)
    error: str | None = None
    error_code: str | None = None
    charged_usd: float = 0.0
    generation: int = 0
    faults: dict[str, str] = field(default_factory=dict)
    planned: tuple[JobStatus, str, str] | None = None
    output_ttl_s: float | None = None
    output_fault: OutputFault | None = field(default=None, repr=False)
    _done: asyncio.Event | None = field(default=None, repr=False)

    @property
    def done(self) -> asyncio.Event:
        """Set once the image work has ended. Made on first use: a job nobody waits for
        costs no event (two fewer objects for the garbage collector per job kept)."""
        if self._done is None:
            self._done = asyncio.Event()
            if self.work_done:
                self._done.set()
        return self._done

    @property
    def work_done(self) -> bool:
        """True once the image work has ended (in success or not)."""
        return self.outcome is not None

    @property
    def duration_ms(self) -> int | None:
        """Milliseconds from creation to the visible final status, once there."""
        if self.completed_at is None:
            return None
        return max(0, round((self.completed_at - self.created_at) * 1000))

    def summary(self) -> dict[str, Any]:
        """A vendor-neutral JSON view for the control plane (``/_emulator/jobs``)."""
        return {
            "id": self.id,
            "vendor": self.vendor,
            "operation": self.operation,
            "api_key": self.api_key,
            "status": self.status.value,
            "work": "done" if self.work_done else (
                "running" if self.work_started_at else "pending"),
            "outcome": self.outcome.value if self.outcome else None,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "completed_at": self.completed_at,
            "status_reads": self.status_reads,
            "stuck": self.stuck,
            "outputs": [{"id": f.id, "bytes": f.size, "width": f.width, "height": f.height}
                        for f in self.outputs],
            "charged_usd": self.charged_usd,
            "faults": dict(self.faults),
        }


FinalListener = Callable[[Job], Coroutine[Any, Any, None]]


class JobPlan(Protocol):
    """What :meth:`JobEngine.submit` needs of a request's fault plan
    (:class:`emulator.core.faults.Plan`): to act on the new job before its work starts."""

    def act_on_job(self, job: Job) -> None:
        """Give ``job`` its job-stage faults (may set ``planned``, ``stuck``,
        ``output_ttl_s``, ``output_fault``, ``faults``)."""

#: Inline sources (base64 text) up to this many characters are decoded on the event loop
#: when the job's outputs may come from the result cache (about 10 us; no pool hop).
INLINE_NOW_CHARS = 16 * 1024
#: Inline inputs up to this many characters stay on a finished job (100,000 jobs: 50 MB).
KEEP_INLINE_CHARS = 512


class JobEngine:
    """Creates jobs, runs their image work in a worker pool, and reveals their status.

    Use :meth:`start` and :meth:`stop` from the event loop that serves requests.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        matte: Callable[[], MatteEngine],
        store: JobStore | None = None,
        files: FileStore | None = None,
        billing: Billing | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._matte = matte
        # Past max_jobs the oldest jobs whose work has ended go, shown final or not (a job
        # never polled would otherwise stay "queued" and be kept for ever).
        self.files = files if files is not None else FileStore(settings.max_file_bytes)
        self.store: JobStore = store if store is not None else InMemoryJobStore(
            settings.max_jobs, lambda j: j.work_done, on_evict=self._drop_files
        )
        self.billing = billing if billing is not None else Billing(
            settings.default_balance_usd, ledger_size=settings.ledger_size)
        #: Outputs by input (see :mod:`emulator.core.results`); kept across :meth:`reset`
        #: since no client can see it.
        self.results = ResultCache(settings.result_cache_bytes)
        self._engine_seen: MatteEngine | None = None
        self.mode, self.polls = parse_progression(settings.progression)
        self.profile = settings.latency_profile
        self.local_resolver: LocalResolver | None = None
        #: Which addresses input fetches may reach (``Settings.allow_fetch``; the emulator's
        #: own loopback address is allowed, its own port refused).
        self.fetch_policy = FetchPolicy(settings.allow_fetch, own_host=settings.host,
                                        own_port=settings.port)
        self.final_listeners: list[FinalListener] = []
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._watched: dict[str, Job] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._generation = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the worker pool, the HTTP client for inputs and the final-status ticker."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="matte",
                                            initializer=lower_priority,
                                            initargs=(self.settings.worker_nice,))
        if self._client is None:
            # An explicit transport: no proxy from the environment, so the address the
            # fetch policy checked is the address connected to (inputs.fetch_url).
            self._client = httpx.AsyncClient(
                headers={"User-Agent": "rmbg-emulator (input fetch)"},
                transport=httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=32)),
            )
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_forever())

    async def stop(self, *, grace_s: float = 0.0) -> None:
        """Stop the ticker, end running work, close the client and the pool.

        Work still running after ``grace_s`` seconds (an input fetch from a host that never
        answers, a wait for the pool) is cancelled (:func:`emulator.core.background.end_tasks`):
        its job ends as ``error`` with code ``system_error``. Image work already running in a
        worker thread cannot be interrupted; its result is dropped.
        """
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._tasks:
            await end_tasks(list(self._tasks), grace_s=grace_s, what="job tasks")
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The worker pool for blocking image work.

        Raises:
            RuntimeError: before :meth:`start`.
        """
        if self._pool is None:
            raise RuntimeError("JobEngine.start() has not been called")
        return self._pool

    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the worker pool and await its result."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    @property
    def busy(self) -> int:
        """Background tasks not yet ended (image work of unfinished jobs, listeners)."""
        return len(self._tasks)

    def reset(self) -> None:
        """Forget jobs, files, balances and watches; running work finishes unseen."""
        self._generation += 1
        self.store.clear()
        self.files.clear()
        self.billing.reset()
        self._watched.clear()

    # -- submit ------------------------------------------------------------------------------
    def submit(
        self,
        *,
        job_id: str,
        vendor: str,
        operation: str,
        api_key: str,
        task: Task,
        origin: str | None = None,
        metadata: dict[str, Any] | None = None,
        watch: bool = False,
        price_usd: float | None = None,
        plan: JobPlan | None = None,
    ) -> Job:
        """Create a job and start its work.

        Args:
            job_id: the vendor-shaped id (the adapter makes it).
            watch: reveal the final status without polls (for webhooks); listeners in
                :attr:`final_listeners` are called when it shows.
            price_usd: defaults to ``settings.price_usd`` ($0.018).
            plan: the request's fault plan (``RequestContext.plan``), which acts on the new
                job (:meth:`JobPlan.act_on_job`) before its work starts.

        Raises:
            InvalidInput: unknown task kind.
            RateLimited: the key's rate limit or concurrency cap is reached.
            PaymentRequired: the key's available balance cannot cover the price.
        """
        if task.kind not in TASKS:
            raise InvalidInput(f"unknown task {task.kind!r}")
        now = self.clock.now()
        price = self.settings.price_usd if price_usd is None else price_usd
        self.billing.throttle(api_key, now)
        self.billing.open_job(api_key, price, now, job_id, vendor)
        job = Job(
            id=job_id, vendor=vendor, operation=operation, api_key=api_key, task=task,
            created_at=now, updated_at=now, price_usd=price, origin=origin,
            metadata=dict(metadata or {}), generation=self._generation,
        )
        self.store.put(job)
        if watch:
            self._watched[job.id] = job
        if plan is not None:
            plan.act_on_job(job)
        done, payloads = self._work_now(job)
        if not done:
            self._spawn(self._work(job, payloads))
        return job

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def find(self, job_id: str, *, vendor: str | None = None,
             api_key: str | None = None) -> Job | None:
        """The job, or ``None`` when there is none, it is another vendor's, or it was made
        with another key.

        Vendors scope every request to the account that makes it: a job of another account
        is, to a status read, a result read or a cancel, exactly an unknown id. An account is
        the API key as the adapter's ``api_key`` returns it (stripped; a ``fault.<rule>`` key
        is an account of its own, as it is for billing). Adapters pass the caller's key (see
        :meth:`emulator.vendors.base.VendorAdapter.caller_job`); the control plane passes
        none and sees every job. Costs one dict lookup and two comparisons.

        Args:
            job_id: the vendor-shaped id.
            vendor: only a job of this vendor (``None``: any).
            api_key: only a job submitted with this key (``None``: any key).
        """
        job = self.store.get(job_id)
        if job is None or (vendor is not None and job.vendor != vendor) or (
                api_key is not None and job.api_key != api_key):
            return None
        return job

    def get(self, job_id: str, *, vendor: str | None = None,
            api_key: str | None = None) -> Job:
        """:meth:`find`, raising when it finds nothing.

        Raises:
            NotFound: no such job (or another vendor's, or another key's).
        """
        job = self.find(job_id, vendor=vendor, api_key=api_key)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}")
        return job

    # -- the work --------------------------------------------------------------------------
    async def _load(self, source: ImageSource, origin: str | None) -> bytes:
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

    def _result_key(self, job: Job, payloads: list[bytes], engine: MatteEngine) -> str:
        s = self.settings
        return result_key(job.task.kind, job.task.params, payloads,
                          engine=f"{engine.name}@{id(engine):x}",
                          compress_level=s.png_compress_level, max_pixels=s.max_input_pixels)

    def _render(self, job: Job, payloads: list[bytes], ctx: TaskContext) -> list[Rendered]:
        """The task (or its cached outputs), then the output faults of a job that carries
        some (``Job.output_fault``), in one worker-pool call."""
        self._engine_seen = ctx.engine
        key = self._result_key(job, payloads, ctx.engine) if self.results.max_bytes else None
        rendered = self.results.get(key) if key is not None else None
        if rendered is None:
            rendered = TASKS[job.task.kind](payloads, job.task.params, ctx)
            if key is not None:
                self.results.put(key, rendered)
        if job.output_fault is not None:
            rendered = job.output_fault(rendered)
        return rendered

    def _drop_files(self, job: Job) -> None:
        """An evicted job's result files go with it (else they would outlive it until the
        file store's byte bound: about 450 bytes each, for ever)."""
        for f in job.outputs:
            self.files.discard(f.id)

    def _keep(self, job: Job, rendered: list[Rendered]) -> None:
        """Store ``rendered`` as ``job``'s output files (with the job's result TTL)."""
        now = self.clock.now()
        ttl = self.settings.result_ttl_s if job.output_ttl_s is None else job.output_ttl_s
        job.outputs = [
            self.files.put(r.data, content_type=r.content_type, width=r.width,
                           height=r.height, now=now, ttl_s=ttl, suffix=r.suffix)
            for r in rendered
        ]

    def _work_now(self, job: Job) -> tuple[bool, list[bytes] | None]:
        """End ``job``'s work at once, on the event loop, when its outputs are in the result
        cache and nothing about it needs the pool: small inline inputs only, no faults, an
        engine already in use.

        Returns:
            Whether it did (else the work runs as a task), and the inputs it decoded on the
            way, if any, so that the task does not decode them again.
        """
        engine = self._engine_seen
        sources = job.task.sources
        if (engine is None or job.planned is not None or job.faults
                or any(s.kind == "url" or len(s.value) > INLINE_NOW_CHARS for s in sources)
                or self._matte() is not engine):
            return False, None
        try:
            payloads = [decode_inline(s, self.settings.max_input_bytes) for s in sources]
        except EmulatorError:
            return False, None  # the task reports it, in the usual way
        rendered = self.results.get(self._result_key(job, payloads, engine))
        if rendered is None:
            return False, payloads
        job.work_started_at = self.clock.now()
        _forget_inline(job)
        self._keep(job, rendered)
        self._finish_work(job, JobStatus.SUCCEEDED)
        return True, None

    async def _work(self, job: Job, payloads: list[bytes] | None = None) -> None:
        """The job's work as a task: load its inputs (unless ``payloads`` has them already),
        render them in the pool, store the outputs, then end the work."""
        job.work_started_at = self.clock.now()
        outcome = JobStatus.SUCCEEDED
        if job.planned is not None:
            outcome, job.error, job.error_code = job.planned
            self._finish_work(job, outcome)
            return
        try:
            if payloads is None:
                payloads = [await self._load(src, job.origin) for src in job.task.sources]
            _forget_inline(job)
            ctx = TaskContext(
                engine=self._matte(),
                max_pixels=self.settings.max_input_pixels,
                compress_level=self.settings.png_compress_level,
            )
            rendered: list[Rendered] = await self.run_blocking(self._render, job, payloads, ctx)
            self._keep(job, rendered)
        except EmulatorError as exc:
            outcome = JobStatus.FAILED
            job.error, job.error_code = exc.message, exc.code
        except asyncio.CancelledError:
            # Only stop() cancels the work: the job ends, visibly, instead of vanishing.
            job.error = "the emulator shut down before the job's work ended"
            job.error_code = "system_error"
            self._finish_work(job, JobStatus.ERROR)
            raise
        except Exception as exc:
            log.exception("job %s: internal error in the image pipeline", job.id)
            outcome = JobStatus.ERROR
            job.error = f"internal error in the emulator's image pipeline: {type(exc).__name__}"
            job.error_code = "system_error"
        self._finish_work(job, outcome)

    def _finish_work(self, job: Job, outcome: JobStatus) -> None:
        if job.outcome is not None:
            return
        job.outcome = outcome
        job.work_ended_at = self.clock.now()
        if job.generation == self._generation:
            charge = outcome is JobStatus.SUCCEEDED
            self.billing.close_job(job.api_key, job.price_usd, job.work_ended_at, job.id,
                                   job.vendor, charge=charge)
            job.charged_usd = job.price_usd if charge else 0.0
        if job._done is not None:
            job._done.set()

    # -- what clients see -------------------------------------------------------------------
    def _due_stage(self, job: Job, *, ticker: bool) -> int:
        if self.mode == "polls":
            reads = job.status_reads
            if reads > self.polls or (ticker and job.work_done):
                stage = _FINAL
            elif reads <= 1:
                stage = _QUEUED
            else:
                stage = _PROCESSING
        else:
            elapsed = self.clock.now() - job.created_at
            if elapsed < self.profile.queued_s:
                stage = _QUEUED
            elif elapsed < self.profile.total_s:
                stage = _PROCESSING
            else:
                stage = _FINAL
        stage = max(stage, job.floor_stage)
        if job.stuck:
            stage = min(stage, _PROCESSING)
        return stage

    async def observe(self, job: Job, *, count: bool = True) -> JobStatus:
        """The status a client sees now; ``count`` marks a vendor status read (polls mode).

        May wait (without blocking the loop) for the job's work under ``polls``, at most
        ``Settings.max_wait_s`` seconds: past that the job shows processing (the read that
        is due to show the final status again is the next one).
        """
        if job.status.terminal:
            return job.status
        if count:
            job.status_reads += 1
        stage = self._due_stage(job, ticker=not count)
        if stage == _FINAL and not job.work_done:
            if self.mode == "polls" or job.floor_stage == _FINAL:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(job.done.wait(), self.settings.max_wait_s)
            if not job.work_done:
                stage = _PROCESSING
        self._show(job, stage)
        return job.status

    async def finish(self, job: Job) -> JobStatus:
        """Wait (without blocking the loop) until ``job`` shows its final status; return it.

        For synchronous endpoints (fal.run, Runflow ``sync_mode``): the final status is made
        due now (:meth:`complete`) and shows as soon as the image work has ended, whatever
        the progression. Not a status read.

        Raises:
            GatewayTimeout: (504) the image work did not end within ``Settings.max_wait_s``
                seconds; the job goes on and shows its final status once it ends.
        """
        if not job.status.terminal:
            self.complete(job)
            await self.observe(job, count=False)
        if not job.status.terminal:
            raise GatewayTimeout(
                f"Request timed out: the job's image work did not end within "
                f"{self.settings.max_wait_s:g} s (serve --max-wait)")
        return job.status

    async def refresh(self, job: Job) -> JobStatus:
        """The status ``job`` shows now, without counting a status read (for listings).

        Under ``time`` the status follows the clock; under ``polls`` it is the status the
        last read showed, since only status reads move it.
        """
        if self.mode == "time" and not job.status.terminal:
            return await self.observe(job, count=False)
        return job.status

    def _show(self, job: Job, stage: int) -> None:
        now = self.clock.now()
        if stage >= _PROCESSING and job.started_at is None:
            job.started_at = (min(now, job.created_at + self.profile.queued_s)
                              if self.mode == "time" else now)
        if stage == _FINAL and job.outcome is not None:
            job.status = job.outcome
            job.completed_at = now
            self._watched.pop(job.id, None)
            for listener in self.final_listeners:
                self._spawn(listener(job))
        elif stage == _PROCESSING:
            job.status = JobStatus.PROCESSING
        if job.status is not JobStatus.QUEUED or stage == _QUEUED:
            job.updated_at = now if job.updated_at < now else job.updated_at

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            for job in list(self._watched.values()):
                try:
                    # A job whose final status is due waits for its work in observe(); the
                    # ticker never does (one slow job would hold every other watched job).
                    if not job.work_done and (self.mode == "polls"
                                              or job.floor_stage == _FINAL):
                        continue
                    await self.observe(job, count=False)
                except Exception:  # never let the ticker die
                    log.exception("ticker: job %s", job.id)

    # -- control -----------------------------------------------------------------------------
    def watch(self, job: Job) -> None:
        """Reveal ``job``'s final status as soon as it is due, without polls."""
        if not job.status.terminal:
            self._watched[job.id] = job

    def advance(self, job: Job) -> None:
        """Move the visible status one step (queued -> processing -> final)."""
        job.stuck = False
        job.floor_stage = min(_FINAL, max(job.floor_stage, self._due_stage(job, ticker=False))
                              + 1)
        self.watch(job)

    def complete(self, job: Job) -> None:
        """Make the final status due now (it shows once the work has ended)."""
        job.stuck = False
        job.floor_stage = _FINAL
        self.watch(job)

    def fail(self, job: Job, message: str, *, status: JobStatus = JobStatus.FAILED) -> None:
        """End the job now in ``status`` (failed or error) with ``message``, not charged.

        Raises:
            Conflict: the job already shows a final status.
        """
        if job.status.terminal:
            raise Conflict(f"job {job.id} is already {job.status.value}")
        self._void(job, f"ended as {status.value} by the control plane")
        job.outputs = []
        job.error, job.error_code = message, "forced_failure"
        if job.outcome is None:
            self._finish_work(job, status)
        else:
            job.outcome = status
        job.stuck = False
        job.floor_stage = _FINAL
        self._show(job, _FINAL)

    def _void(self, job: Job, note: str) -> None:
        """Refund a job already charged whose success is being overridden."""
        if job.charged_usd and job.generation == self._generation:
            self.billing.refund(job.api_key, job.charged_usd, self.clock.now(), job.id,
                                job.vendor, note)
        job.charged_usd = 0.0

    def cancel(self, job: Job) -> None:
        """Cancel a job that still shows queued.

        Raises:
            Conflict: it already runs or has ended.
        """
        if job.status is not JobStatus.QUEUED or (
            self._due_stage(job, ticker=False) > _QUEUED
        ):
            raise Conflict(f"job {job.id} is {job.status.value}; only a queued job can be "
                           "cancelled")
        self._void(job, "cancelled")
        job.outputs = []
        if job.outcome is None:
            self._finish_work(job, JobStatus.CANCELLED)
        else:
            job.outcome = JobStatus.CANCELLED
        job.error = None
        job.floor_stage = _FINAL
        self._show(job, _FINAL)

    def jobs(self, **filters: str | None) -> list[Job]:
        """Jobs whose attributes equal every non-``None`` filter (vendor, api_key, status)."""
        out = []
        for job in self.store.jobs():
            ok = True
            for key, want in filters.items():
                if want is None:
                    continue
                have = getattr(job, key)
                have = have.value if isinstance(have, JobStatus) else have
                if str(have) != want:
                    ok = False
                    break
            if ok:
                out.append(job)
        return out


def _forget_inline(job: Job) -> None:
    """Drop a loaded job's inline inputs (base64 text, up to ~33 MB each), keeping a short
    description: a finished job stays in the store long after its work. Inputs of up to
    :data:`KEEP_INLINE_CHARS` characters are kept as they are (no new object per job)."""
    sources = job.task.sources
    if any(s.kind != "url" and len(s.value) > KEEP_INLINE_CHARS for s in sources):
        job.task.sources = tuple(
            s if s.kind == "url" or len(s.value) <= KEEP_INLINE_CHARS
            else ImageSource(s.kind, s.describe()) for s in sources)


def lower_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux; elsewhere nothing).

    The worker threads run at a lower priority than the event loop's thread: on a machine
    with fewer cores than busy threads (the 2-core CI machine, a load generator, two matte
    workers and their onnxruntime threads), the scheduler then gives the loop the CPU it
    needs to answer polls while images are matted (docs/PERFORMANCE.md, "busy pool").
    Threads a worker starts (onnxruntime's intra-op pool, built in the pool) inherit it.
    """
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        # On Linux, PRIO_PROCESS with a thread id sets that thread's nice value only.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                       os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + nice)


def default_threads() -> int:
    """CPU count, for onnxruntime's intra-op threads."""
    return os.cpu_count() or 1
