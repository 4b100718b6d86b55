"""Image work through Redis, done by separate ``rmbg-emulator worker`` processes
(``--matte-pool redis``, with ``--store redis://...``): the work scales to other machines.

The queue is `RQ <https://python-rq.org>`_ (``rq``), a well-kept Redis task queue, rather than
a hand-written one. Why RQ: the server side is synchronous, and it already runs in the matte
pool's dispatch threads (so a blocking ``Job.latest_result(timeout=...)``, a blocking ``XREAD``
on the job's result stream, costs no polling and no event-loop time), and its
``SimpleWorker`` runs jobs in its own process without forking per job, so the model is
loaded once per worker process (onnxruntime and ``fork`` do not mix). arq would need an
event loop in the dispatch threads and polls for results; Dramatiq needs a result backend
middleware and actors declared at import.

One task in Redis is :func:`render_task` with the server's :class:`EngineSpec`, the task's
kind, parameters and input bytes; it returns ``("ok", outputs)`` or ``("error", exc)`` for
the task's own :class:`~emulator.errors.EmulatorError` (bad input), which the server raises
as if the work had run locally. A job no worker takes within ``Settings.worker_wait_s`` (no
worker running, or one that died mid-task) ends as the vendor's failure with a message that
says so (:class:`NoWorker`); it is taken off the queue, so a worker started later does not
render it for nobody.
"""

from __future__ import annotations

import logging
import os
from typing import Any, cast

import redis
from rq import Queue, SimpleWorker
from rq.exceptions import InvalidJobOperation
from rq.job import Job as RqJob
from rq.results import Result

from emulator.core.jobs.pool import EngineSpec
from emulator.core.tasks import TASKS, Rendered, TaskContext
from emulator.errors import EmulatorError
from emulator.matte.engine import MatteEngine

log = logging.getLogger("emulator.worker")

#: The RQ queue every server enqueues image work on and every worker takes it from.
QUEUE_NAME = "rmbg-emulator-images"
#: Seconds a finished task's result is kept in Redis after the server read it (RQ result TTL).
RESULT_TTL_S = 60


class NoWorker(EmulatorError):
    """No ``rmbg-emulator worker`` finished a job's image work in time (none running, or the
    one that took it died): the job ends as the vendor's failure (status 500, code
    ``system_error``)."""

    status = 500
    code = "system_error"


# -- in the worker process -------------------------------------------------------------------
_engines: dict[EngineSpec, MatteEngine] = {}


def render_task(spec: EngineSpec, kind: str, params: dict[str, Any], payloads: list[bytes],
                max_pixels: int, compress_level: int) -> tuple[str, Any]:
    """One image task in a worker: ``TASKS[kind](payloads, params, ...)`` with the engine
    ``spec`` names (built on first use, then kept for the worker's life).

    Returns:
        ``("ok", list[Rendered])``, or ``("error", EmulatorError)`` for the task's own error
        (the input could not be decoded, too many pixels, ...), raised again by the server.
    """
    engine = _engines.get(spec)
    if engine is None:
        engine = _engines[spec] = spec.build()
    ctx = TaskContext(engine=engine, max_pixels=max_pixels, compress_level=compress_level)
    try:
        return "ok", TASKS[kind](payloads, params, ctx)
    except EmulatorError as exc:
        return "error", exc


def run_worker(url: str, *, burst: bool = False, name: str | None = None) -> bool:
    """Take image work from the Redis at ``url`` until stopped (SIGINT/SIGTERM), or until the
    queue is empty when ``burst``. One task at a time, in this process (RQ's
    ``SimpleWorker``); run more workers for more at once. onnxruntime's telemetry is off.

    Returns:
        Whether any task was run (RQ's ``Worker.work``).

    Raises:
        redis.RedisError: the Redis cannot be reached at start.
    """
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    connection = redis.Redis.from_url(url)
    connection.ping()
    worker = SimpleWorker([Queue(QUEUE_NAME, connection=connection)], connection=connection,
                          name=name, default_result_ttl=RESULT_TTL_S)
    return bool(worker.work(burst=burst, logging_level="WARNING"))


# -- in the server process (the matte pool's dispatch threads) -------------------------------
class QueueDispatch:
    """Hands image tasks to workers through Redis and waits for their outputs.

    Args:
        url: the Redis URL (``Settings.store``).
        engine: how a worker builds the engine (the server's ``--engine`` flags).
        wait_s: seconds a task may take from enqueue to result (``Settings.worker_wait_s``).
    """

    def __init__(self, url: str, engine: EngineSpec, wait_s: float) -> None:
        self.engine = engine
        self.wait_s = wait_s
        # A result is awaited by a blocking XREAD of up to wait_s: the socket must outlast it
        # (redis-py's default read timeout is 5 s).
        self._connection = redis.Redis.from_url(url, socket_timeout=wait_s + 10)
        self._queue = Queue(QUEUE_NAME, connection=self._connection)

    def render(self, kind: str, params: dict[str, Any], payloads: list[bytes],
               ctx: TaskContext) -> list[Rendered]:
        """Task ``kind`` on ``payloads`` in some worker. Blocking (a dispatch thread).

        Raises:
            EmulatorError: the task's own (bad input, ...).
            NoWorker: no worker finished it within :attr:`wait_s`.
            redis.RedisError: Redis cannot be reached.
        """
        wait = max(1, round(self.wait_s))
        job = self._queue.enqueue_call(
            render_task, args=(self.engine, kind, params, payloads, ctx.max_pixels,
                               ctx.compress_level),
            timeout=wait, ttl=wait, result_ttl=RESULT_TTL_S, failure_ttl=RESULT_TTL_S)
        result = job.latest_result(timeout=wait)
        if result is None or result.type != Result.Type.SUCCESSFUL:
            self._discard(job)
            detail = ("no `rmbg-emulator worker` took it" if result is None
                      else f"the worker failed: {(result.exc_string or '').strip()[-300:]}")
            raise NoWorker(f"the image work was not done within {wait} s ({detail}); start "
                           f"one with `rmbg-emulator worker --store <the same redis:// URL>`")
        outcome, value = cast("tuple[str, Any]", result.return_value)
        if outcome == "error":
            raise value
        rendered: list[Rendered] = value
        return rendered

    def _discard(self, job: RqJob) -> None:
        """Take a task nobody finished off the queue (a later worker must not render it)."""
        try:
            self._queue.remove(job.id)
            if job.exists(job.id, connection=self._connection):
                job.delete()
        except (redis.RedisError, InvalidJobOperation) as exc:  # Redis away: ttl drops it
            log.debug("could not discard image task %s: %s", job.id, exc)

    def close(self) -> None:
        """Close the Redis connections."""
        self._connection.close()


__all__ = ["QUEUE_NAME", "NoWorker", "QueueDispatch", "render_task", "run_worker"]
