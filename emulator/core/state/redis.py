"""The Redis backend (``--store redis://HOST:PORT/DB``): the state of one emulator that
several ``serve`` processes (``--workers N``, or processes on several machines) share.

Keys (all under :data:`PREFIX`, so ``clear`` never touches another program's keys):

* ``rmbg:job:<id>``: a hash, ``rec`` (the job's JSON record, :mod:`.records`), ``v`` (its
  version, moved by every write of ``rec``) and ``reads`` (its status-read counter, moved by
  ``HINCRBY`` only, so two processes never lose a read);
* ``rmbg:jobs``: a sorted set of job ids, scored by submit order (``INCR rmbg:seq``);
* ``rmbg:file:<id>``: a hash, ``meta`` (JSON) and ``data`` (the PNG bytes); ``rmbg:files``
  their order, as for jobs; a file with an expiry gets the key's own expiry (``PEXPIREAT``)
  an hour after it, so Redis drops it without a sweeper;
* ``rmbg:doc:<name>``: a named document (JSON), ``rmbg:docs`` the set of names;
* ``rmbg:gen``: the reset generation (``INCR`` on ``clear``), published on ``rmbg:reset``.

Blocking calls (``load``, ``write``, ``clear``, ``close``) run in the saver's writer thread,
as the SQLite backend's do; what requests need at once goes through
:class:`emulator.core.state.shared.SharedJobs` (``redis.asyncio``).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from emulator.core.files import StoredFile
from emulator.core.state.base import Batch, Saved
from emulator.core.state.records import file_from_meta, file_meta

#: Every key this backend writes starts with it.
PREFIX = "rmbg:"
#: The channel a reset's new generation is published on.
RESET_CHANNEL = PREFIX + "reset"
#: Seconds a result file's key outlives the file's own expiry (then Redis drops it).
FILE_KEY_GRACE_S = 3600


def job_key(job_id: str) -> str:
    """The hash of job ``job_id``."""
    return f"{PREFIX}job:{job_id}"


def file_key(file_id: str) -> str:
    """The hash of result file ``file_id``."""
    return f"{PREFIX}file:{file_id}"


def dumps(value: Any) -> str:
    """Compact JSON."""
    return json.dumps(value, separators=(",", ":"))


def file_mapping(record: StoredFile) -> dict[str, str | bytes]:
    """The hash fields of a result file."""
    return {"meta": dumps(file_meta(record)), "data": record.data}


def file_expiry_ms(record: StoredFile) -> int | None:
    """Unix milliseconds at which Redis may drop ``record``'s key (``None``: never)."""
    if record.expires_at is None:
        return None
    return int((record.expires_at + FILE_KEY_GRACE_S) * 1000)


class RedisStore:
    """A :class:`~emulator.core.state.base.StateStore` in one Redis database.

    ``url`` is a redis-py URL (``redis://HOST:PORT/DB``, ``rediss://`` for TLS). Opening
    does not connect; the first call does.

    Raises:
        redis.RedisError: (from each method) Redis cannot be reached or answers an error.
    """

    durable = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: redis.Redis = redis.Redis.from_url(url, socket_timeout=5,
                                                       socket_connect_timeout=5)

    def load(self) -> Saved:
        """Every job, file and document saved, oldest first."""
        r: Any = self.client  # redis-py 8 types its replies as unions of every shape
        job_ids = [i.decode() for i in r.zrange(PREFIX + "jobs", 0, -1)]
        jobs = []
        for job_id in job_ids:
            rec, reads = r.hmget(job_key(job_id), ["rec", "reads"])
            if rec is None:
                continue
            record = json.loads(rec)
            record["status_reads"] = int(reads or 0)
            jobs.append(record)
        files = []
        for file_id in r.zrange(PREFIX + "files", 0, -1):
            meta, data = r.hmget(file_key(file_id.decode()), ["meta", "data"])
            if meta is not None and data is not None:
                files.append(file_from_meta(json.loads(meta), bytes(data)))
        docs = {}
        for name in r.smembers(PREFIX + "docs"):
            value = r.get(f"{PREFIX}doc:{name.decode()}")
            if value is not None:
                docs[name.decode()] = json.loads(value)
        return Saved(jobs=jobs, files=files, docs=docs)

    def write(self, batch: Batch) -> None:
        """One ``MULTI``/``EXEC`` transaction: jobs (their read counters are not written:
        only ``HINCRBY`` moves them), files, documents, and the dropped ones deleted."""
        r: Any = self.client  # redis-py 8 types its replies as unions of every shape
        seq = r.incrby(PREFIX + "seq", len(batch.jobs) + len(batch.files)) if (
            batch.jobs or batch.files) else 0
        pipe = r.pipeline(transaction=True)
        n = seq - len(batch.jobs) - len(batch.files)
        for job_id, record in batch.jobs.items():
            n += 1
            rec = {k: v for k, v in record.items() if k != "status_reads"}
            pipe.hset(job_key(job_id), "rec", dumps(rec))
            pipe.hincrby(job_key(job_id), "v", 1)  # the version SharedJobs compares
            pipe.zadd(PREFIX + "jobs", {job_id: n}, nx=True)
        for job_id in batch.dropped_jobs:
            pipe.delete(job_key(job_id))
            pipe.zrem(PREFIX + "jobs", job_id)
        for f in batch.files:
            n += 1
            pipe.hset(file_key(f.id), mapping=file_mapping(f))
            expiry = file_expiry_ms(f)
            if expiry is not None:
                pipe.pexpireat(file_key(f.id), expiry)
            pipe.zadd(PREFIX + "files", {f.id: n}, nx=True)
        for file_id in batch.dropped_files:
            pipe.delete(file_key(file_id))
            pipe.zrem(PREFIX + "files", file_id)
        for name, value in batch.docs.items():
            pipe.set(f"{PREFIX}doc:{name}", dumps(value))
            pipe.sadd(PREFIX + "docs", name)
        pipe.execute()

    def clear(self) -> None:
        """Delete every key under :data:`PREFIX` but the generation, move the generation
        and publish it on :data:`RESET_CHANNEL` (every process resets its own part)."""
        r: Any = self.client  # redis-py 8 types its replies as unions of every shape
        keys = [k for k in r.scan_iter(match=PREFIX + "*", count=1000)
                if k != (PREFIX + "gen").encode()]
        for i in range(0, len(keys), 500):
            r.unlink(*keys[i:i + 500])
        r.publish(RESET_CHANNEL, r.incr(PREFIX + "gen"))

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()


__all__ = ["PREFIX", "RESET_CHANNEL", "RedisStore", "file_key", "job_key"]
