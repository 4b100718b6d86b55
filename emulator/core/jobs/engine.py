"""The job engine: the facade adapters and the control plane use.

Two things move separately, as in moto's managed state
(``moto/moto_api/_internal/managed_state_model.py``):

* the **work** (fetch, decode, matte, encode) starts at submit and runs in the worker pool
  (:class:`~emulator.core.jobs.runner.Runner`);
* the **visible status** follows the progression policy
  (:class:`~emulator.core.jobs.progression.Progression`): ``polls:N`` (``immediate`` is
  ``polls:0``) advances one step per status read, ``time`` follows a latency profile on the
  :class:`~emulator.core.clock.Clock`.

A job never shows its final status before its work has ended: under ``polls`` the read that
is due to show it waits for the work (off the event loop); under ``time`` the job shows
processing until the work ends. The engine joins the two: submit, lookups, status reads, the
ticker that reveals watched jobs, billing at the end of the work, and the control plane's
actions. It keeps the jobs itself (:class:`InMemoryJobStore`, bounded; the project's prototypes
measured an in-memory dict on the event loop beating sqlite, aiosqlite and Redis for one
worker): a durable or shared state store (:mod:`emulator.core.state`) saves and shares them
from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from emulator.core.background import end_tasks
from emulator.core.billing import ZERO, Billing, usd
from emulator.core.clock import Clock
from emulator.core.fetchpolicy import FetchPolicy
from emulator.core.files import FileStore
from emulator.core.inputs import LocalResolver
from emulator.core.jobs.model import (
    FINAL_STAGE,
    PROCESSING_STAGE,
    FinalListener,
    Job,
    JobPlan,
    JobStatus,
    Task,
)
from emulator.core.jobs.pool import EngineSpec
from emulator.core.jobs.progression import Progression
from emulator.core.jobs.runner import ResultCache, Runner
from emulator.core.tasks import TASKS
from emulator.errors import Conflict, GatewayTimeout, InvalidInput, NotFound
from emulator.matte.engine import MatteEngine
from emulator.settings import Settings

if TYPE_CHECKING:
    from emulator.core.state.shared import SharedJobs

log = logging.getLogger("emulator.jobs")


class InMemoryJobStore:
    """A dict of jobs bounded to ``max_jobs``: past it, the oldest finished jobs are evicted.

    Unfinished jobs are never evicted (a job is never lost while it runs). Finished jobs wait
    in a queue of their own (ids, in the order their work ended: :meth:`finished`, or the
    put of a job ``is_finished`` already holds for), so a put past the cap evicts in O(1): it
    never walks past unfinished jobs. With every kept job unfinished the store holds more
    than ``max_jobs`` until enough of them finish.
    """

    def __init__(self, max_jobs: int, is_finished: Callable[[Job], bool],
                 on_evict: Callable[[Job], None] | None = None) -> None:
        self._max = max_jobs
        self._jobs: dict[str, Job] = {}
        #: Ids of kept finished jobs, the first to evict first.
        self._done: OrderedDict[str, None] = OrderedDict()
        self._is_finished = is_finished
        #: Called (under the store's lock) with each job evicted: the engine drops its files.
        self._on_evict = on_evict
        self._lock = threading.Lock()

    def put(self, job: Job) -> None:
        """Add or replace a job, evicting the oldest finished ones past ``max_jobs``."""
        with self._lock:
            self._jobs[job.id] = job
            if self._is_finished(job):
                self._done[job.id] = None
            if len(self._jobs) > self._max:
                self._evict()

    def finished(self, job: Job) -> None:
        """``job`` (kept) has ended its work: queue it for eviction (by the next put past
        ``max_jobs``; a job is never evicted as it finishes)."""
        with self._lock:
            if self._jobs.get(job.id) is job:
                self._done[job.id] = None

    def _evict(self) -> None:
        jobs, done = self._jobs, self._done
        while len(jobs) > self._max and done:
            job_id, _ = done.popitem(last=False)
            job = jobs.pop(job_id, None)
            if job is not None and self._on_evict is not None:
                self._on_evict(job)

    def get(self, job_id: str) -> Job | None:
        """The job with ``job_id``, or ``None``."""
        return self._jobs.get(job_id)

    def jobs(self) -> Iterator[Job]:
        """Every job, oldest first (a snapshot)."""
        with self._lock:
            snapshot = list(self._jobs.values())
        return iter(snapshot)

    def clear(self) -> None:
        """Forget every job."""
        with self._lock:
            self._jobs.clear()
            self._done.clear()

    def discard(self, job_id: str) -> None:
        """Forget one job (if kept): a submit a shared store refused afterwards."""
        with self._lock:
            self._jobs.pop(job_id, None)
            self._done.pop(job_id, None)

    def __len__(self) -> int:
        return len(self._jobs)


class JobEngine:
    """Creates jobs, runs their image work in the matte pool, and reveals their status.

    Use :meth:`start` and :meth:`stop` from the event loop that serves requests.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        matte: Callable[[], MatteEngine],
        files: FileStore | None = None,
        billing: Billing | None = None,
        engine_spec: EngineSpec | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        # Past max_jobs the oldest jobs whose work has ended go, shown final or not (a job
        # never polled would otherwise stay "queued" and be kept for ever). `outcome` is what
        # `Job.work_done` reads (a plain attribute: no call on every put).
        self.files = files if files is not None else FileStore(settings.max_file_bytes)
        self.store = InMemoryJobStore(settings.max_jobs, lambda j: j.outcome is not None,
                                      on_evict=self._drop_files)
        self.billing = billing if billing is not None else Billing(
            settings.default_balance_usd, ledger_size=settings.ledger_size)
        #: The work of jobs (pool, inputs, result cache).
        self.runner = Runner(settings, clock=clock, matte=matte, files=self.files,
                             finish=self._finish_work, engine_spec=engine_spec)
        #: The visible status of jobs.
        self.progression = Progression(settings, clock)
        self.final_listeners: list[FinalListener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._watched: dict[str, Job] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._generation = 0
        #: Ids of jobs changed and of jobs evicted since a state store last took them
        #: (:meth:`track_changes`, :meth:`take_changes`); ``None``: not tracked (memory).
        self._changed: set[str] | None = None
        self._dropped: set[str] = set()
        #: Jobs shared with other processes through Redis (``--store redis://``); ``None``:
        #: this process only (memory, SQLite), and no request waits on a store.
        self.shared: SharedJobs | None = None

    # -- the parts, as attributes ----------------------------------------------------------
    @property
    def results(self) -> ResultCache:
        """Outputs by input (:attr:`Runner.results`); kept across :meth:`reset`."""
        return self.runner.results

    @property
    def local_resolver(self) -> LocalResolver | None:
        """Bytes of the emulator's own URLs without HTTP (:attr:`Runner.local_resolver`)."""
        return self.runner.local_resolver

    @local_resolver.setter
    def local_resolver(self, resolver: LocalResolver | None) -> None:
        self.runner.local_resolver = resolver

    @property
    def fetch_policy(self) -> FetchPolicy:
        """Which addresses input fetches may reach (:attr:`Runner.fetch_policy`)."""
        return self.runner.fetch_policy

    @property
    def mode(self) -> str:
        """The progression mode: ``"polls"`` or ``"time"``."""
        return self.progression.mode

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Create the worker pool, the HTTP client for inputs and the final-status ticker."""
        await self.runner.start()
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_forever())

    async def stop(self, *, grace_s: float = 0.0) -> None:
        """Stop the ticker, end running work, close the client and the pool.

        Work still running after ``grace_s`` seconds (an input fetch from a host that never
        answers, a wait for the pool) is cancelled (:func:`emulator.core.background.end_tasks`):
        its job ends as ``error`` with code ``system_error``. Image work already running in a
        worker process is killed with it; in a worker thread (``matte_pool=threads``) it
        cannot be interrupted, and its result is dropped.
        """
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._tasks:
            await end_tasks(list(self._tasks), grace_s=grace_s, what="job tasks")
        await self.runner.close()

    @property
    def pool(self) -> ThreadPoolExecutor:
        """The threads for blocking work (:attr:`Runner.pool`; with worker processes they
        hand the image work on).

        Raises:
            RuntimeError: before :meth:`start`.
        """
        return self.runner.pool

    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the worker pool and await its result."""
        return await self.runner.run_blocking(fn, *args)

    @property
    def busy(self) -> int:
        """Background tasks not yet ended (image work of unfinished jobs, listeners)."""
        return len(self._tasks)

    def reset(self) -> None:
        """Forget jobs, files, balances and watches; running work finishes unseen."""
        self._generation += 1
        for job in self.store.jobs():
            job.version += 1  # gone: what was rendered from it is stale
        self.store.clear()
        self.files.clear()
        self.billing.reset()
        self._watched.clear()

    # -- state store ---------------------------------------------------------------------------
    def track_changes(self) -> None:
        """Note from now on which jobs and files change, for a durable state store
        (:class:`emulator.core.state.StateSaver`); the memory store never calls it."""
        self._changed = set()
        self.files.changes = {}

    def take_changes(self) -> tuple[list[Job], set[str]]:
        """The jobs changed (still kept) and the ids of jobs evicted since the last call
        (a job changed, then evicted, is only among the evicted); nothing when changes are
        not tracked."""
        if self._changed is None:
            return [], set()
        changed, self._changed = self._changed, set()
        dropped, self._dropped = self._dropped, set()
        get = self.store.get
        return [j for i in changed if (j := get(i)) is not None], dropped

    @property
    def generation(self) -> int:
        """Goes up with every :meth:`reset`; a job of an older generation is not billed."""
        return self._generation

    def _touch(self, job: Job) -> None:
        """Note that ``job`` changes now: its version goes up (what was rendered from it is
        stale) and a durable state store will save it."""
        job.version += 1
        if self._changed is not None:
            self._changed.add(job.id)
            if self.shared is not None:
                self.shared.changed()

    def retouch(self, jobs: list[Job], dropped: set[str]) -> None:
        """Mark again what :meth:`take_changes` gave and could not be written."""
        if self._changed is not None:
            self._changed.update(j.id for j in jobs)
            self._dropped |= dropped

    def withdraw(self, job: Job) -> None:
        """Forget a job the shared store refused to admit (its balance, rate limit or cap):
        never billed, never shown; work already started ends unseen."""
        job.generation = -1
        job.version += 1  # gone: what was rendered from it is stale
        self.store.discard(job.id)
        self._watched.pop(job.id, None)

    def end_orphan(self, job: Job) -> None:
        """End a job whose work ran in another process that stopped before it ended (its
        lease lapsed; :mod:`emulator.core.state.shared`): ``error``, not charged; its
        ``error`` and ``error_code`` are set by the caller."""
        self._finish_work(job, JobStatus.ERROR)

    def is_watched(self, job: Job) -> bool:
        """Whether ``job``'s final status is to show without polls (it has a webhook)."""
        return job.id in self._watched

    def restore(self, jobs: list[Job], watched: set[str]) -> int:
        """Keep ``jobs`` (a state store's, oldest first) as if they had been submitted here.

        A job whose image work had not ended when the last process stopped (it was queued or
        processing, and the process was killed before :meth:`stop` could end it) ends now as
        ``error`` with code ``system_error`` and a message saying the emulator restarted; its
        held price is released, not charged. Jobs in ``watched`` (ids) reveal their final
        status without polls again, so their webhooks still go out.

        Returns:
            How many jobs were ended that way.
        """
        ended = 0
        for job in jobs:
            self.store.put(job)
            if not job.work_done:
                job.error = ("the emulator restarted before the job's work ended; "
                             "submit it again")
                job.error_code = "system_error"
                self._finish_work(job, JobStatus.ERROR)
                ended += 1
            if job.id in watched and not job.status.terminal:
                self._watched[job.id] = job
        return ended

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
        price_usd: Decimal | None = None,
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
        price = usd(self.settings.price_usd if price_usd is None else price_usd)
        if self.shared is None:
            self.billing.throttle(api_key, now)
            self.billing.open_job(api_key, price, now, job_id, vendor)
        # else the shared store admits it atomically after the handler (SharedJobs.admit)
        job = Job(
            id=job_id, vendor=vendor, operation=operation, api_key=api_key, task=task,
            created_at=now, updated_at=now, price_usd=price, origin=origin,
            metadata=dict(metadata or {}), generation=self._generation,
        )
        self.store.put(job)
        self._touch(job)
        if self.shared is not None:
            self.shared.owned.add(job.id)
            self.shared.pending[job.id] = job
        if watch:
            self._watched[job.id] = job
        if plan is not None:
            plan.act_on_job(job)
        done, payloads = self.runner.work_now(job)
        if not done:
            self._spawn(self.runner.work(job, payloads))
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

    def _drop_files(self, job: Job) -> None:
        """An evicted job's result files go with it (else they would outlive it until the
        file store's byte bound: about 450 bytes each, for ever); what was rendered from it
        is stale (its version goes up: a kept status answer is not sent again)."""
        job.version += 1
        for f in job.outputs:
            self.files.discard(f.id)
        if self._changed is not None:
            self._dropped.add(job.id)

    def _finish_work(self, job: Job, outcome: JobStatus) -> None:
        """End ``job``'s work with ``outcome`` (once): bill it (charged on success), and wake
        whoever waits for it."""
        if job.outcome is not None:
            return
        self._touch(job)
        job.outcome = outcome
        job.work_ended_at = self.clock.now()
        self.store.finished(job)
        if job.generation == self._generation:
            charge = outcome is JobStatus.SUCCEEDED
            if self.shared is not None:
                self.shared.settle(job, charge=charge)
            else:
                self.billing.close_job(job.api_key, job.price_usd, job.work_ended_at, job.id,
                                       job.vendor, charge=charge)
            job.charged_usd = job.price_usd if charge else ZERO
        if job._done is not None:
            job._done.set()

    # -- what clients see -------------------------------------------------------------------
    async def observe(self, job: Job, *, count: bool = True) -> JobStatus:
        """The status a client sees now; ``count`` marks a vendor status read (polls mode).

        May wait (without blocking the loop) for the job's work under ``polls``, at most
        ``Settings.max_wait_s`` seconds: past that the job shows processing (the read that
        is due to show the final status again is the next one).
        """
        if job.status.terminal:
            return job.status
        self._touch(job)
        if count:
            if self.shared is not None:
                job.status_reads = await self.shared.count_read(job.id)
            else:
                job.status_reads += 1
        progression = self.progression
        stage = progression.due_stage(job, ticker=not count)
        if stage == FINAL_STAGE and not job.work_done:
            if progression.waits_for_work(job):
                if self.shared is not None and job.id not in self.shared.owned:
                    await self.shared.wait_work(job, self.settings.max_wait_s)
                else:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(job.done.wait(), self.settings.max_wait_s)
            if not job.work_done:
                stage = PROCESSING_STAGE
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
        if self.progression.mode == "time" and not job.status.terminal:
            return await self.observe(job, count=False)
        return job.status

    def _show(self, job: Job, stage: int) -> None:
        if self.progression.show(job, stage):
            self._watched.pop(job.id, None)
            if self.shared is not None and self.final_listeners:
                # several processes may reveal it: the webhook goes out from one only
                self._spawn(self.shared.announce_once(job, self.final_listeners))
                return
            for listener in self.final_listeners:
                self._spawn(listener(job))

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            for job in list(self._watched.values()):
                try:
                    # A job whose final status is due waits for its work in observe(); the
                    # ticker never does (one slow job would hold every other watched job).
                    if not job.work_done and self.progression.waits_for_work(job):
                        continue
                    await self.observe(job, count=False)
                except Exception:  # never let the ticker die
                    log.exception("ticker: job %s", job.id)

    # -- control -----------------------------------------------------------------------------
    def watch(self, job: Job) -> None:
        """Reveal ``job``'s final status as soon as it is due, without polls."""
        self._touch(job)
        if not job.status.terminal:
            self._watched[job.id] = job

    def advance(self, job: Job) -> None:
        """Move the visible status one step (queued -> processing -> final)."""
        self._touch(job)  # a state store writes the new floor, even before it shows
        self.progression.advance(job)
        self.watch(job)

    def complete(self, job: Job) -> None:
        """Make the final status due now (it shows once the work has ended)."""
        self._touch(job)  # a state store writes the new floor, even before it shows
        self.progression.complete(job)
        self.watch(job)

    def fail(self, job: Job, message: str, *, status: JobStatus = JobStatus.FAILED) -> None:
        """End the job now in ``status`` (failed or error) with ``message``, not charged.

        Raises:
            Conflict: the job already shows a final status.
        """
        if job.status.terminal:
            raise Conflict(f"job {job.id} is already {job.status.value}")
        self._touch(job)
        self._void(job, f"ended as {status.value} by the control plane")
        job.outputs = []
        job.error, job.error_code = message, "forced_failure"
        if job.outcome is None:
            self._finish_work(job, status)
        else:
            job.outcome = status
        self.progression.complete(job)
        self._show(job, FINAL_STAGE)

    def _void(self, job: Job, note: str) -> None:
        """Refund a job already charged whose success is being overridden."""
        if job.charged_usd and job.generation == self._generation and self.shared is not None:
            self.shared.refund(job, job.charged_usd, note)
        elif job.charged_usd and job.generation == self._generation:
            self.billing.refund(job.api_key, job.charged_usd, self.clock.now(), job.id,
                                job.vendor, note)
        job.charged_usd = ZERO

    def cancel(self, job: Job) -> None:
        """Cancel a job that still shows queued.

        Raises:
            Conflict: it already runs or has ended.
        """
        if not self.progression.still_queued(job):
            raise Conflict(f"job {job.id} is {job.status.value}; only a queued job can be "
                           "cancelled")
        self._touch(job)
        self._void(job, "cancelled")
        job.outputs = []
        if job.outcome is None:
            self._finish_work(job, JobStatus.CANCELLED)
        else:
            job.outcome = JobStatus.CANCELLED
        job.error = None
        job.floor_stage = FINAL_STAGE
        self._show(job, FINAL_STAGE)

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


__all__ = ["InMemoryJobStore", "JobEngine"]
