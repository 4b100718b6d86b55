"""The job record: the canonical status, what a job does, and the job itself.

Vendor-neutral: each adapter maps :class:`JobStatus` to its vendor's words and renders a
:class:`Job` in its vendor's shape. The engine (:mod:`emulator.core.jobs.engine`) creates jobs,
the runner (:mod:`emulator.core.jobs.runner`) does their work and the progression
(:mod:`emulator.core.jobs.progression`) decides the status they show.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from emulator.core.billing import ZERO, usd_text
from emulator.core.files import StoredFile
from emulator.core.inputs import ImageSource
from emulator.core.tasks import Rendered

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


#: Visible stages (:mod:`emulator.core.jobs.progression`): queued, processing, final.
QUEUED_STAGE, PROCESSING_STAGE, FINAL_STAGE = 0, 1, 2


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
    without one, which pays nothing); ``word`` is a status word of the vendor's contract the
    job shows when it means what the job is at (``VendorAdapter.status_word``);
    ``extra_polls`` delays its final status by that many more status reads (``polls``
    progression) or seconds (``time`` progression).
    """

    id: str
    vendor: str
    operation: str
    api_key: str
    task: Task
    created_at: float
    price_usd: Decimal
    origin: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status: JobStatus = JobStatus.QUEUED
    updated_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    status_reads: int = 0
    floor_stage: int = QUEUED_STAGE
    stuck: bool = False
    work_started_at: float | None = None
    work_ended_at: float | None = None
    outcome: JobStatus | None = None
    outputs: list[StoredFile] = field(default_factory=list)
    error: str | None = None
    error_code: str | None = None
    charged_usd: Decimal = ZERO
    generation: int = 0
    faults: dict[str, str] = field(default_factory=dict)
    planned: tuple[JobStatus, str, str] | None = None
    output_ttl_s: float | None = None
    word: str | None = None
    extra_polls: int = 0
    output_fault: OutputFault | None = field(default=None, repr=False)
    #: Goes up with every change the engine makes (``JobEngine._touch``) and when the job
    #: leaves the store (reset, eviction, a withdrawn submit): a rendered answer kept for one
    #: version is stale at the next (emulator/vendors/finalreads.py).
    version: int = 0
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
            "charged_usd": usd_text(self.charged_usd),
            "faults": dict(self.faults),
        }


FinalListener = Callable[[Job], Coroutine[Any, Any, None]]


class JobPlan(Protocol):
    """What :meth:`JobEngine.submit` needs of a request's fault plan
    (:class:`emulator.core.faults.Plan`): to act on the new job before its work starts."""

    def act_on_job(self, job: Job) -> None:
        """Give ``job`` its job-stage faults (may set ``planned``, ``stuck``,
        ``output_ttl_s``, ``output_fault``, ``faults``)."""


__all__ = [
    "FINAL_STAGE", "PROCESSING_STAGE", "QUEUED_STAGE", "FinalListener", "Job", "JobPlan",
    "JobStatus", "OutputFault", "Task",
]
