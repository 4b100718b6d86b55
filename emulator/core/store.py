"""Job stores. The in-memory one is the default (the project's prototypes
measured it: an in-memory dict on the event loop beat sqlite, aiosqlite and Redis for one
worker)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from emulator.core.jobs import Job

class JobStore(Protocol):
    """Where jobs live. Implementations must be safe to call from the event loop."""

    def put(self, job: Job) -> None:
        """Add or replace a job."""

    def finished(self, job: Job) -> None:
        """``job``'s work has ended (the engine says so once): it may now be evicted."""

    def get(self, job_id: str) -> Job | None:
        """The job with ``job_id``, or ``None``."""

    def jobs(self) -> Iterator[Job]:
        """Every job, oldest first."""

    def clear(self) -> None:
        """Forget every job."""

    def discard(self, job_id: str) -> None:
        """Forget one job (if kept)."""

    def __len__(self) -> int:
        """How many jobs are kept."""


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
