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

#: Unfinished jobs one :meth:`InMemoryJobStore.put` moves past at most while looking for a
#: finished one to evict (keeps a put O(1) when the oldest jobs are all unfinished).
EVICT_SCAN = 64


class JobStore(Protocol):
    """Where jobs live. Implementations must be safe to call from the event loop."""

    def put(self, job: Job) -> None:
        """Add or replace a job."""

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
    """An ordered dict bounded to ``max_jobs``: past it, the oldest finished jobs are evicted.

    Unfinished jobs are never evicted (a job is never lost while it runs): one met at the front
    is moved to the back. A put moves at most :data:`EVICT_SCAN` of them, so it stays cheap when
    many jobs are unfinished; the store then holds more than ``max_jobs`` until later puts meet
    finished ones (every finished one they meet is evicted, however many).
    """

    def __init__(self, max_jobs: int, is_finished: Callable[[Job], bool],
                 on_evict: Callable[[Job], None] | None = None) -> None:
        self._max = max_jobs
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._is_finished = is_finished
        #: Called (under the store's lock) with each job evicted: the engine drops its files.
        self._on_evict = on_evict
        self._lock = threading.Lock()

    def put(self, job: Job) -> None:
        """Add or replace a job, evicting the oldest finished ones past ``max_jobs``."""
        with self._lock:
            self._jobs[job.id] = job
            if len(self._jobs) > self._max:
                self._evict()

    def _evict(self) -> None:
        moved = 0
        limit = min(EVICT_SCAN, len(self._jobs))
        while len(self._jobs) > self._max and moved < limit:
            job_id, job = next(iter(self._jobs.items()))
            if self._is_finished(job):
                del self._jobs[job_id]
                if self._on_evict is not None:
                    self._on_evict(job)
            else:
                self._jobs.move_to_end(job_id)
                moved += 1

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

    def discard(self, job_id: str) -> None:
        """Forget one job (if kept): a submit a shared store refused afterwards."""
        with self._lock:
            self._jobs.pop(job_id, None)

    def __len__(self) -> int:
        return len(self._jobs)
