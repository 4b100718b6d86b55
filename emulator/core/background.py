"""Background asyncio tasks at shut-down: the one rule for ending them.

The job engine (image work, input fetches, final-status listeners) and the webhook outbox
(attempts in flight) both keep sets of tasks nobody awaits. At shut-down the server has
already given requests their grace (``Settings.graceful_shutdown_s``, uvicorn's
``timeout_graceful_shutdown``); background work gets ``grace_s`` more, then is cancelled, so
an input URL or a webhook receiver that never answers cannot hold the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("emulator")

#: Seconds to wait for cancelled tasks to run their ``except``/``finally`` blocks.
CANCEL_WAIT_S = 5.0


async def end_tasks(tasks: Iterable[asyncio.Task[Any]], *, grace_s: float = 0.0,
                    what: str = "background tasks") -> int:
    """Wait up to ``grace_s`` seconds for ``tasks`` to end, then cancel those still running.

    Cancelled tasks are then awaited for at most :data:`CANCEL_WAIT_S` seconds (a task
    blocked in a worker thread is not waited for: its thread ends on its own).

    Returns:
        How many tasks were cancelled.
    """
    pending = {t for t in tasks if not t.done()}
    if pending and grace_s > 0:
        _, pending = await asyncio.wait(pending, timeout=grace_s)
    for task in pending:
        task.cancel()
    if pending:
        log.info("shut-down: cancelled %d %s", len(pending), what)
        await asyncio.wait(pending, timeout=CANCEL_WAIT_S)
    return len(pending)


__all__ = ["CANCEL_WAIT_S", "end_tasks"]
