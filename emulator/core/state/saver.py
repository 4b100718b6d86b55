"""The saver: keeps a durable state store up to date, off the event loop.

Write-behind, one writer thread: requests never wait for the store. Every
:data:`FLUSH_INTERVAL_S` seconds, on the loop, the saver collects what changed (jobs the
engine marked, files the file store marked, documents whose ``dump()`` differs from the last
one written, or whose version moved) into one :class:`~emulator.core.state.base.Batch`; the
writer thread encodes and commits it. Stopping (SIGTERM, the lifespan's end) writes a last
batch after the engine has ended its jobs, so a clean stop loses nothing; a crash loses at
most the last interval. Measured against the alternatives in ``benchmarks/stores.py``
(docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from emulator.core.background import end_tasks
from emulator.core.jobs.engine import JobEngine
from emulator.core.jobs.model import Job
from emulator.core.state.base import Batch, StateStore
from emulator.core.state.records import job_from_record, job_record

log = logging.getLogger("emulator.state")

#: Seconds between two batches (the most a crash, not a clean stop, can lose).
FLUSH_INTERVAL_S = 0.25


@dataclass
class Doc:
    """A named document: ``dump()`` gives its JSON value on the loop, ``load(value)`` puts it
    back at start-up; ``version()`` (optional) is a counter that moves with every change, so
    an unchanged large document (billing's ledgers) is not dumped at all."""

    dump: Callable[[], Any]
    load: Callable[[Any], None]
    version: Callable[[], int] | None = None
    #: Loaded after the jobs (a document whose records refer to jobs: webhook deliveries).
    after_jobs: bool = False
    #: Saved only by the last batch, at :meth:`StateSaver.stop` (a document that changes
    #: with every request: the journal), so a crash loses it.
    at_stop_only: bool = False


class StateSaver:
    """Restores the engine and documents from ``store`` at start-up, then saves changes.

    Use :meth:`restore` once before serving, :meth:`start` / :meth:`stop` on the serving
    loop, :meth:`clear` on reset.
    """

    def __init__(self, store: StateStore, engine: JobEngine) -> None:
        self.store = store
        self.engine = engine
        self.docs: dict[str, Doc] = {}
        self._last: dict[str, Any] = {}
        self._versions: dict[str, int] = {}
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="state-writer")
        self._task: asyncio.Task[None] | None = None
        #: A batch whose write failed (a full disk): merged into the next one.
        self._failed: Batch | None = None
        engine.track_changes()

    def add_doc(self, name: str, doc: Doc) -> None:
        """Save ``doc`` under ``name`` (restored by :meth:`restore` when saved before)."""
        self.docs[name] = doc

    def restore(self) -> dict[str, int]:
        """Load what the store holds (blocking; once, before serving): files, documents,
        then jobs (see :meth:`JobEngine.restore` for those whose work had not ended).

        Returns:
            ``{"jobs", "files", "ended"}`` counts.
        """
        saved = self.store.load()
        engine = self.engine
        if engine.shared is not None:
            # Jobs and files are read from the shared store when a request names them
            # (another process may be running their work now).
            saved.jobs, saved.files = [], []
        engine.files.restore(saved.files)
        self._load_docs(saved.docs, after_jobs=False)
        generation = engine.generation
        jobs = [job_from_record(r, engine.files, generation) for r in saved.jobs]
        watched = {r["id"] for r in saved.jobs if r.get("watched")}
        ended = engine.restore(jobs, watched)
        self._load_docs(saved.docs, after_jobs=True)
        engine.files.take_changes()
        return {"jobs": len(jobs), "files": len(saved.files), "ended": ended}

    def _load_docs(self, saved: dict[str, Any], *, after_jobs: bool) -> None:
        for name, doc in self.docs.items():
            if doc.after_jobs is not after_jobs or name not in saved:
                continue
            doc.load(saved[name])
            self._last[name] = saved[name]
            if doc.version is not None:
                self._versions[name] = doc.version()

    def collect(self, *, stopping: bool = False) -> Batch:
        """What changed since the last batch (on the loop); ``stopping``: the last batch,
        with the documents saved only then."""
        batch = Batch()
        engine = self.engine
        if engine.shared is not None:  # it writes jobs and files itself, as they change
            jobs: list[Job] = []
        else:
            jobs, batch.dropped_jobs = engine.take_changes()
            batch.files, batch.dropped_files = engine.files.take_changes()
        for job in jobs:
            record = job_record(job)
            record["watched"] = engine.is_watched(job)
            batch.jobs[job.id] = record
        for name, doc in self.docs.items():
            if doc.at_stop_only and not stopping:
                continue
            if doc.version is not None:
                version = doc.version()
                if self._versions.get(name) != version:
                    self._versions[name] = version
                    batch.docs[name] = doc.dump()
                continue
            value = doc.dump()
            if self._last.get(name) != value:
                self._last[name] = value
                batch.docs[name] = value
        return batch

    async def flush(self, *, stopping: bool = False) -> None:
        """Write what changed now (in the writer thread).

        Raises:
            Exception: the backend's error; the batch is kept and written with the next.
        """
        batch = self.collect(stopping=stopping)
        if self._failed is not None:
            batch, self._failed = self._failed.merge(batch), None
        if batch:
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._writer, self.store.write, batch)
            except BaseException:
                self._failed = batch
                raise

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                await self.flush()
            except Exception:  # a full disk must not stop the emulator serving
                log.exception("state store %s: saving failed", self.store.url)

    async def start(self) -> None:
        """Save changes every :data:`FLUSH_INTERVAL_S` seconds from now on."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Write a last batch and close the store (after the engine has stopped)."""
        if self._task is not None:
            await end_tasks([self._task], what="state saver")
            self._task = None
        try:
            await self.flush(stopping=True)
        finally:
            await asyncio.get_running_loop().run_in_executor(self._writer, self.store.close)
            self._writer.shutdown(wait=True)

    async def drain(self) -> None:
        """Wait until the writer thread has done everything handed to it so far (a
        :meth:`clear`)."""
        await asyncio.get_running_loop().run_in_executor(self._writer, lambda: None)

    def clear(self) -> None:
        """Forget everything saved (reset): queued after any batch already handed over, and
        every document is written again at the next batch."""
        self.engine.take_changes()
        self.engine.files.take_changes()
        self._failed = None
        self._last.clear()
        self._versions.clear()
        self._writer.submit(self.store.clear)


__all__ = ["FLUSH_INTERVAL_S", "Doc", "StateSaver"]
