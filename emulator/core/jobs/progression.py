"""The visible status of a job: a small state machine, as moto's managed state
(``moto/moto_api/_internal/managed_state_model.py``).

A job shows one of three stages: queued, processing, final (its outcome). Which one is due
follows the progression policy (``Settings.progression``): ``polls:N`` (``immediate`` is
``polls:0``) advances one step per status read, ``time`` follows the latency profile
(``Settings.latency_profile``) on the :class:`~emulator.core.clock.Clock`. The control plane
moves a job on by raising its floor (:meth:`Progression.advance`, :meth:`Progression.complete`);
a ``stuck`` job (a fault) never passes processing until it does.

Only the transitions live here; waiting for a job's work before its final status shows, and
telling listeners, is the engine's (:mod:`emulator.core.jobs.engine`).
"""

from __future__ import annotations

from emulator.core.clock import Clock
from emulator.core.jobs.model import (
    FINAL_STAGE,
    PROCESSING_STAGE,
    QUEUED_STAGE,
    Job,
    JobStatus,
)
from emulator.settings import Settings, parse_progression


class Progression:
    """Which stage a job is due to show, and showing it.

    Attributes:
        mode: ``"polls"`` or ``"time"``.
        polls: status reads before the final status (``polls`` mode).
        profile: queued and total seconds (``time`` mode).
    """

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.clock = clock
        self.mode, self.polls = parse_progression(settings.progression)
        self.profile = settings.latency_profile

    def due_stage(self, job: Job, *, ticker: bool) -> int:
        """The stage ``job`` is due to show now (its floor included, a stuck job held at
        processing). ``ticker``: asked by the final-status ticker (``polls`` mode then shows
        the final status of a job whose work has ended)."""
        if self.mode == "polls":
            reads = job.status_reads
            if reads > self.polls + job.extra_polls or (ticker and job.work_done):
                stage = FINAL_STAGE
            elif reads <= 1:
                stage = QUEUED_STAGE
            else:
                stage = PROCESSING_STAGE
        else:
            elapsed = self.clock.now() - job.created_at
            if elapsed < self.profile.queued_s:
                stage = QUEUED_STAGE
            elif elapsed < self.profile.total_s + job.extra_polls:
                stage = PROCESSING_STAGE
            else:
                stage = FINAL_STAGE
        stage = max(stage, job.floor_stage)
        if job.stuck:
            stage = min(stage, PROCESSING_STAGE)
        return stage

    def waits_for_work(self, job: Job) -> bool:
        """Whether a read due to show the final status waits for the job's work (``polls``
        mode, or a final status made due by the control plane); else it shows processing
        until the work ends."""
        return self.mode == "polls" or job.floor_stage == FINAL_STAGE

    def show(self, job: Job, stage: int) -> bool:
        """Set the status ``job`` shows to ``stage`` (final: its outcome, once its work has
        ended), with its times.

        Returns:
            ``True`` when the final status was shown now (the engine then tells listeners).
        """
        now = self.clock.now()
        final = False
        if stage >= PROCESSING_STAGE and job.started_at is None:
            job.started_at = (min(now, job.created_at + self.profile.queued_s)
                              if self.mode == "time" else now)
        if stage == FINAL_STAGE and job.outcome is not None:
            job.status = job.outcome
            job.completed_at = now
            final = True
        elif stage == PROCESSING_STAGE:
            job.status = JobStatus.PROCESSING
        if job.status is not JobStatus.QUEUED or stage == QUEUED_STAGE:
            job.updated_at = now if job.updated_at < now else job.updated_at
        return final

    def advance(self, job: Job) -> None:
        """Raise ``job``'s floor one stage above what is due (queued -> processing ->
        final); unsticks it."""
        job.stuck = False
        job.floor_stage = min(FINAL_STAGE,
                              max(job.floor_stage, self.due_stage(job, ticker=False)) + 1)

    def complete(self, job: Job) -> None:
        """Make the final status due now (it shows once the work has ended); unsticks it."""
        job.stuck = False
        job.floor_stage = FINAL_STAGE

    def still_queued(self, job: Job) -> bool:
        """Whether ``job`` shows queued and is not due to move on (so it may be cancelled)."""
        return (job.status is JobStatus.QUEUED
                and self.due_stage(job, ticker=False) <= QUEUED_STAGE)


__all__ = ["Progression"]
