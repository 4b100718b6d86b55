"""The request journal shared by every ``serve`` process on one Redis (``--store redis://``).

Each process records its requests in its own :class:`~emulator.core.journal.Journal` as
always (no round trip on the request's path); :class:`SharedJournal` also queues each entry,
and a background loop appends the queued ones to the Redis stream ``rmbg:journal`` every
:data:`FLUSH_S` seconds, in one Lua call per batch (``XADD ... MAXLEN ~ size``; each entry gets
a number from ``rmbg:journal:seq``, so numbers are unique across processes).

The control plane reads it with :meth:`SharedJournal.pull` (this process's queued entries
first, then ``XRANGE``): the listing, its filters (``job_id`` too) and ``verify`` then see
every process's requests, oldest first. ``Retry-After`` tracking (``early_retry``) stays per
process: it is decided when the entry is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from emulator.core.background import end_tasks
from emulator.core.journal import Entry, Journal
from emulator.core.state.redis import PREFIX
from emulator.core.state.shared import StoreUnavailable

log = logging.getLogger("emulator.state")

#: The stream of every process's entries (field ``e``: the entry's JSON).
STREAM_KEY = PREFIX + "journal"
#: The entries' numbers (``INCR``).
SEQ_KEY = PREFIX + "journal:seq"
#: Seconds between two writes of the queued entries.
FLUSH_S = 0.1
#: Seconds the last write and the closing of the connection may take at shutdown.
STOP_S = 2.0

#: KEYS: stream, counter. ARGV[1]: the stream's size; then one entry's JSON (without its
#: number) each. Every entry gets the next number and is appended.
APPEND = """
for i = 2, #ARGV do
  local seq = redis.call('INCR', KEYS[2])
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 's', seq, 'e', ARGV[i])
end
return #ARGV - 1
"""


class SharedJournal(Journal):
    """A :class:`Journal` whose entries also go to Redis at ``url`` (see the module).

    Use :meth:`start` / :meth:`stop` on the serving loop; :meth:`pull` before reading.
    """

    def __init__(self, size: int, url: str) -> None:
        super().__init__(size)
        self.url = url
        self.client: Any = aioredis.Redis.from_url(url, socket_timeout=5,
                                                   socket_connect_timeout=2)
        #: Entries recorded here and not written yet.
        self.outgoing: list[Entry] = []
        self._append = self.client.register_script(APPEND)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(self, **kwargs: Any) -> Entry:
        """:meth:`Journal.record`, and the entry queued for the stream."""
        entry = super().record(**kwargs)
        self.outgoing.append(entry)
        return entry

    def clear(self) -> None:
        """Forget this process's entries (and those not written yet); see :meth:`wipe`."""
        super().clear()
        self.outgoing.clear()

    async def wipe(self) -> None:
        """Forget every process's entries (``DELETE /_emulator/journal``).

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        self.clear()
        try:
            await self.client.delete(STREAM_KEY)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer (on the serving loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._write_forever())

    async def stop(self) -> None:
        """Write what is queued (at most :data:`STOP_S` s) and close the connection."""
        if self._task is not None:
            await end_tasks([self._task], what="journal writer")
            self._task = None
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self.write(), timeout=STOP_S)
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self.client.aclose(), timeout=STOP_S)

    async def _write_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                await self.write()
            except (RedisError, OSError):
                log.warning("state store %s unreachable: journal entries wait", self.url)
                await asyncio.sleep(0.5)

    async def write(self) -> None:
        """Append the queued entries to the stream (one call).

        Raises:
            RedisError, OSError: Redis cannot be reached (the entries stay queued).
        """
        async with self._lock:
            if not self.outgoing:
                return
            batch, self.outgoing = self.outgoing, []
            try:
                texts = []
                for entry in batch:
                    entry.resolve()
                    value = entry.to_json()
                    del value["seq"]
                    texts.append(json.dumps(value, separators=(",", ":")))
                await self._append(keys=[STREAM_KEY, SEQ_KEY], args=[self.size, *texts])
            except BaseException:
                self.outgoing[:0] = batch
                raise

    # -- reading ---------------------------------------------------------------------------
    async def pull(self) -> None:
        """Make this journal's entries every process's, as the stream holds them (the last
        ``size``, oldest first), after writing this process's queued ones.

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        try:
            await self.write()
            found = await self.client.xrevrange(STREAM_KEY, count=self.size)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        entries = []
        for _, fields in reversed(found):
            value = json.loads(fields[b"e"])
            entries.append(Entry(seq=int(fields[b"s"]), **value))
        self._entries.clear()
        self._entries.extend(entries)


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"Service temporarily unavailable: the emulator's state store "
                            f"cannot be reached ({type(exc).__name__}); retry shortly")


__all__ = ["SharedJournal"]
