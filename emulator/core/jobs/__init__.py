"""Jobs: the record (:mod:`.model`), the visible-status state machine (:mod:`.progression`),
the runner of their work (:mod:`.runner`), the matte pool it renders in (:mod:`.pool`) and the
engine facade (:mod:`.engine`).

Every name importers use is re-exported here.
"""

from __future__ import annotations

from emulator.core.jobs.engine import JobEngine
from emulator.core.jobs.model import (
    FINAL_STAGE,
    PROCESSING_STAGE,
    QUEUED_STAGE,
    FinalListener,
    Job,
    JobPlan,
    JobStatus,
    OutputFault,
    Task,
)
from emulator.core.jobs.pool import EngineSpec, MattePool, WorkerCrashed, lower_priority
from emulator.core.jobs.progression import Progression
from emulator.core.jobs.runner import (
    INLINE_NOW_CHARS,
    KEEP_INLINE_CHARS,
    Runner,
    default_threads,
)

__all__ = [
    "FINAL_STAGE", "INLINE_NOW_CHARS", "KEEP_INLINE_CHARS", "PROCESSING_STAGE", "QUEUED_STAGE",
    "EngineSpec", "FinalListener", "Job", "JobEngine", "JobPlan", "JobStatus", "MattePool",
    "OutputFault", "Progression", "Runner", "Task", "WorkerCrashed", "default_threads",
    "lower_priority",
]
