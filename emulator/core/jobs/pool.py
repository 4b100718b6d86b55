"""The matte pool: where a job's blocking image work (decode, matte, encode) runs.

Two kinds (``Settings.matte_pool``):

* ``threads``: ``matte_workers`` threads in the server process, at a lower priority than the
  event loop (:func:`lower_priority`). Cheap to start; the image work shares the server's GIL,
  so status reads slow down while images are matted (docs/PERFORMANCE.md, "busy pool").
* ``processes`` (the default): the same threads only dispatch; each owns one worker process
  (a ``ProcessPoolExecutor`` of one, ``spawn`` context: onnxruntime and ``fork`` do not mix)
  that decodes, mattes and encodes. Input bytes go to the worker, output PNG bytes come back.
  A worker starts when its first job needs it (tests create many emulators) and loads the
  engine once (:func:`_init_worker`), with onnxruntime's telemetry off. One process per
  dispatch thread means a worker that dies (killed, out of memory, a crashing decoder) takes
  only its own job with it (:class:`WorkerCrashed`); the slot gets a fresh worker.
* ``redis`` (with ``--store redis://``): the threads hand each task through Redis to separate
  ``rmbg-emulator worker`` processes, on this machine or others (:mod:`emulator.core.jobs.queue`).

An engine handed to the job engine as an object (tests' stubs) cannot be rebuilt in another
process: without an :class:`EngineSpec` the work runs in the threads whatever the kind.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emulator.core.tasks import TASKS, Rendered, TaskContext
from emulator.errors import EmulatorError
from emulator.matte.engine import MatteEngine, create_engine
from emulator.settings import MATTE_POOLS

if TYPE_CHECKING:
    from emulator.core.jobs.queue import QueueDispatch


@dataclass(frozen=True)
class EngineSpec:
    """How to build the matte engine in a worker process (picklable; the ``--engine`` flags).

    Attributes:
        spec: ``auto``, ``u2netp``, ``grabcut`` or a path to an ``.onnx`` file.
        preset: the ONNX preset, or ``None``.
        models_dir: the weights directory searched first, or ``None``.
        threads: onnxruntime intra-op threads per call (0: onnxruntime decides).
    """

    spec: str
    preset: str | None
    models_dir: str | None
    threads: int

    def build(self) -> MatteEngine:
        """The engine (:func:`emulator.matte.engine.create_engine`).

        Raises:
            EngineUnavailable: it cannot be built.
        """
        return create_engine(self.spec, preset=self.preset, models_dir=self.models_dir,
                             threads=self.threads)


class WorkerCrashed(EmulatorError):
    """A matte worker process ended while rendering a job (killed, out of memory, a crash).

    Only that job fails (status 500, code ``system_error``); its slot gets a new worker.
    """

    status = 500
    code = "system_error"


# -- in the worker process -------------------------------------------------------------------
_worker_engine: MatteEngine | None = None

#: Seconds between a worker's checks that the server process that started it still runs.
PARENT_CHECK_S = 1.0


def _end_with_parent(parent: int) -> None:
    """Exit this worker process once its server (pid ``parent``, passed in by the server:
    one killed while the worker was still starting is no longer the parent when the worker
    looks) is gone. A server killed with SIGKILL cannot stop its pool, and an idle worker of
    a ``spawn`` pool holds both ends of its task queue, so it would otherwise wait for work
    forever (an orphan holding the model's memory). Runs in a daemon thread; checks every
    :data:`PARENT_CHECK_S` seconds."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def _init_worker(engine: EngineSpec, nice: int, server: int) -> None:
    """A worker process's start: telemetry off, an end with the server's
    (:func:`_end_with_parent`), nice value ``nice`` (at least), the engine loaded once."""
    global _worker_engine
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before onnxruntime loads (emulator/__init__)
    threading.Thread(target=_end_with_parent, args=(server,), daemon=True,
                     name="end-with-parent").start()
    if sys.platform.startswith("linux"):
        # Started from a dispatch thread, the process inherits that thread's value already.
        with contextlib.suppress(OSError):
            if os.getpriority(os.PRIO_PROCESS, 0) < nice:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
    _worker_engine = engine.build()


def _render_in_worker(kind: str, params: dict[str, Any], payloads: list[bytes],
                      max_pixels: int, compress_level: int) -> list[Rendered]:
    """One task in a worker process, with the engine :func:`_init_worker` loaded."""
    assert _worker_engine is not None
    ctx = TaskContext(engine=_worker_engine, max_pixels=max_pixels,
                      compress_level=compress_level)
    return TASKS[kind](payloads, params, ctx)


# -- in the server process -------------------------------------------------------------------
class _Slot:
    """One worker process (a ``ProcessPoolExecutor`` of one), started on first use."""

    def __init__(self, engine: EngineSpec, nice: int) -> None:
        self._engine = engine
        self._nice = nice  # the worker's nice value (absolute)
        self.executor: ProcessPoolExecutor | None = None

    def get(self) -> ProcessPoolExecutor:
        if self.executor is None:
            self.executor = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(self._engine, self._nice, os.getpid()))
        return self.executor

    def pids(self) -> list[int]:
        procs = getattr(self.executor, "_processes", None) or {}
        return [p.pid for p in procs.values() if p.pid is not None]

    def close(self) -> None:
        """Stop the worker now: queued work is cancelled, a running task is killed."""
        executor, self.executor = self.executor, None
        if executor is None:
            return
        # ProcessPoolExecutor has no public kill before Python 3.14 (terminate_workers):
        # its process table is read so that no worker outlives the server.
        procs = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()


class MattePool:
    """Runs tasks in threads, or dispatches them from threads to worker processes.

    Args:
        kind: ``threads`` or ``processes``.
        size: threads (and, for ``processes``, worker processes): ``Settings.matte_workers``.
        nice: how much lower the workers' priority is (``Settings.worker_nice``; Linux).
        engine: how a worker process builds the engine; ``None``: threads only.
        queue_url: for ``redis``, the Redis the workers take tasks from.
        queue_wait_s: for ``redis``, seconds a task may take before its job fails.

    Use :meth:`start` before, :meth:`close` after (once); :meth:`render` runs in a pool
    thread.
    """

    def __init__(self, kind: str, size: int, nice: int, engine: EngineSpec | None, *,
                 queue_url: str | None = None, queue_wait_s: float = 60.0) -> None:
        if kind not in MATTE_POOLS:
            raise ValueError(f"matte pool {kind!r}: expected one of {', '.join(MATTE_POOLS)}")
        if kind == "redis" and queue_url is None:
            raise ValueError("matte pool 'redis' needs the Redis URL of the store")
        self.kind = kind if engine is not None else "threads"
        self._queue_url = queue_url
        self._queue_wait_s = queue_wait_s
        self.queue: QueueDispatch | None = None
        self.size = size
        self.nice = nice
        self.engine = engine
        self.threads: ThreadPoolExecutor | None = None
        self._slots: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        self._all: list[_Slot] = []
        self._lock = threading.Lock()  # no worker starts once close() has begun
        self._closed = False

    def start(self) -> None:
        """Create the threads (and the slots; their processes start on first use)."""
        if self.threads is None:
            self.threads = ThreadPoolExecutor(self.size, thread_name_prefix="matte",
                                              initializer=lower_priority,
                                              initargs=(self.nice,))
        if self.kind == "redis" and self.queue is None:
            from emulator.core.jobs.queue import QueueDispatch

            assert self.engine is not None and self._queue_url is not None
            self.queue = QueueDispatch(self._queue_url, self.engine, self._queue_wait_s)
        if self.kind == "processes" and not self._all:
            assert self.engine is not None
            nice = self.nice
            if sys.platform.startswith("linux"):  # the value the dispatch threads have
                nice = min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
                           + self.nice)
            self._all = [_Slot(self.engine, nice) for _ in range(self.size)]
            for slot in self._all:
                self._slots.put(slot)

    def render(self, kind: str, params: dict[str, Any], payloads: list[bytes],
               ctx: TaskContext) -> list[Rendered]:
        """Task ``kind`` on ``payloads``: here (threads) or in a worker process. Blocking.

        Raises:
            EmulatorError: the task's own (bad input, ...).
            WorkerCrashed: the worker process died during the task.
            NoWorker: (``redis``) no worker finished the task in time.
        """
        if self.kind == "threads":
            return TASKS[kind](payloads, params, ctx)
        if self.queue is not None:
            return self.queue.render(kind, params, payloads, ctx)
        slot = self._slots.get()  # as many slots as threads: never waits long
        try:
            future = self._submit(slot, kind, params, payloads, ctx)
            try:
                rendered: list[Rendered] = future.result()
            except BrokenProcessPool:
                slot.close()  # a fresh worker for the next job
                raise WorkerCrashed(
                    "the emulator's image worker process ended while rendering this job "
                    "(killed or crashed); the worker was replaced, submit the job again"
                ) from None
            return rendered
        finally:
            self._slots.put(slot)

    def _submit(self, slot: _Slot, kind: str, params: dict[str, Any], payloads: list[bytes],
                ctx: TaskContext) -> Future[list[Rendered]]:
        """Hand the task to ``slot``'s worker; a worker that died while idle is replaced
        first (that job did not kill it)."""
        for attempt in (1, 2):
            with self._lock:
                if self._closed:
                    raise WorkerCrashed("the emulator shut down before the job's work ended")
                try:
                    return slot.get().submit(_render_in_worker, kind, params, payloads,
                                             ctx.max_pixels, ctx.compress_level)
                except BrokenProcessPool:
                    slot.close()
                    if attempt == 2:
                        raise WorkerCrashed("the emulator's image worker process could not "
                                            "be started") from None
        raise AssertionError("unreachable")

    def worker_pids(self) -> list[int]:
        """Process ids of the worker processes running now (none for ``threads``)."""
        return [pid for slot in self._all for pid in slot.pids()]

    def close(self) -> None:
        """Cancel queued work, stop the threads and kill the worker processes."""
        if self.threads is not None:
            self.threads.shutdown(wait=False, cancel_futures=True)
            self.threads = None
        with self._lock:
            self._closed = True
        if self.queue is not None:
            self.queue.close()
            self.queue = None
        for slot in self._all:
            slot.close()


def lower_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux; elsewhere nothing).

    The worker threads run at a lower priority than the event loop's thread: on a machine
    with fewer cores than busy threads (the 2-core CI machine, a load generator, two matte
    workers and their onnxruntime threads), the scheduler then gives the loop the CPU it
    needs to answer polls while images are matted (docs/PERFORMANCE.md, "busy pool").
    Threads a worker starts (onnxruntime's intra-op pool, built in the pool) inherit it; so
    do a worker process's threads (it is called first in the process).
    """
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        # On Linux, PRIO_PROCESS with a thread id sets that thread's nice value only.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                       os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + nice)


__all__ = ["EngineSpec", "MattePool", "WorkerCrashed", "lower_priority"]
