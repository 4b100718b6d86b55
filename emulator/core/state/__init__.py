"""State stores: where jobs, result files, balances, fault rules and the rest live, so that
they can outlive the process (``--store``).

* ``memory`` (default): in the process only, today's speed; a restart forgets everything.
* ``sqlite:PATH`` (``--state PATH``): one SQLite file; survives restarts.
* ``redis://HOST:PORT/DB``: one Redis database that several ``serve`` processes share
  (:mod:`.redis`, :mod:`.shared`).

The protocol (:class:`StateStore`), the records it keeps (:mod:`.records`) and the saver
that keeps a durable one up to date (:class:`StateSaver`) are described in ARCHITECTURE.md,
"Where to add a store".
"""

from __future__ import annotations

from emulator.core.state.base import Batch, MemoryStore, Saved, StateStore, check_store_url
from emulator.core.state.saver import FLUSH_INTERVAL_S, Doc, StateSaver


def open_store(url: str) -> StateStore:
    """The backend named by ``url`` (see :func:`check_store_url`).

    Raises:
        ValueError: an unknown or unavailable backend.
        redis.RedisError: (later, at the first call) Redis cannot be reached.
        OSError, sqlite3.Error: the SQLite file cannot be opened.
    """
    check_store_url(url)
    if url == "memory":
        return MemoryStore()
    if url.startswith(("redis://", "rediss://")):
        from emulator.core.state.redis import RedisStore

        return RedisStore(url)
    from emulator.core.state.sqlite import SqliteStore

    return SqliteStore(url[len("sqlite:"):])


__all__ = ["FLUSH_INTERVAL_S", "Batch", "Doc", "MemoryStore", "Saved", "StateSaver",
           "StateStore", "check_store_url", "open_store"]
