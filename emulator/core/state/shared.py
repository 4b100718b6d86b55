"""Jobs and result files shared by every ``serve`` process on one Redis (``--store
redis://``): the read-through and write-through layer of the job engine.

One mechanism for every vendor, at the two ends of a request (see
:meth:`emulator.vendors.base.VendorAdapter.route` and the control plane's file route):

* **before** the handler, :meth:`SharedJobs.prefetch` reads from Redis the job and the result
  file named by each path parameter (one pipelined round trip), so the synchronous lookups
  (:meth:`JobEngine.find`, ``FileStore.get``) find a job submitted on another process;
* **after** it, :meth:`SharedJobs.flush` writes every job the request changed (and its
  result files) before the response leaves, so the next request, on any process, sees it.

Jobs changed in the background (image work ending) are written by a loop within
:data:`FLUSH_DELAY_S`. A write merges with what Redis holds (``WATCH``/``MULTI``,
:func:`merge_records`): the work's outcome comes from whoever knows it, a cancel sticks, and
the visible status never goes back. A job's status-read counter moves by ``HINCRBY`` only.

Image work runs on the process that took the submit, which holds a **lease** on each job it
runs (``SET PX``, renewed every :data:`LEASE_RENEW_S`). A process that reads a job whose work
has not ended and whose lease has lapsed (its process died) ends it as ``error`` with code
``system_error`` and a message saying so: the job never stays processing for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError

from emulator.core.jobs.model import FINAL_STAGE, FinalListener, Job, JobStatus
from emulator.core.state.accounts import SharedAccounts
from emulator.core.state.records import file_from_meta, job_from_record, job_record
from emulator.core.state.redis import (
    PREFIX,
    dumps,
    file_expiry_ms,
    file_key,
    file_mapping,
    job_key,
)
from emulator.errors import EmulatorError

if TYPE_CHECKING:
    from emulator.core.faults.rules import FaultRule, FaultRules
    from emulator.core.jobs.engine import JobEngine

log = logging.getLogger("emulator.state")

#: Seconds within which a job changed in the background is written to Redis.
FLUSH_DELAY_S = 0.05
#: Milliseconds a lease on running work lasts without renewal.
LEASE_MS = 5000
#: Seconds between two renewals of the leases this process holds.
LEASE_RENEW_S = 1.0
#: Milliseconds the mark "this job's final status was announced" is kept (one day).
ANNOUNCED_MS = 24 * 3600 * 1000
#: The reset generation (``INCR`` by :meth:`RedisStore.clear`).
GEN_KEY = PREFIX + "gen"
#: Fault rules' hits, by rule id (a hash; ``HINCRBY`` in :data:`TAKE_HIT` only).
HITS_KEY = PREFIX + "hits"
#: The fault rules' document (``FaultRules.dump``) and its version (``INCR`` per change).
RULES_KEY = PREFIX + "rules"
RULES_VERSION_KEY = PREFIX + "rules:version"
#: KEYS[1] the hits hash; ARGV: rule id, times ('' for none). The hits now, or -1 when the
#: rule's ``times`` are used up (nothing taken).
TAKE_HIT = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if ARGV[2] ~= '' and n > tonumber(ARGV[2]) then
  redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
  return -1
end
return n
"""
#: Fields a job's image work decides (kept from whichever record has an outcome).
WORK_FIELDS = ("outcome", "outputs", "error", "error_code", "work_started_at",
               "work_ended_at", "charged_usd", "planned")
#: Fields of the visible status (kept from whichever record shows the later stage).
VIEW_FIELDS = ("status", "floor_stage", "started_at", "completed_at", "updated_at", "stuck")
_RANK = {"queued": 0, "processing": 1}


class StoreUnavailable(EmulatorError):
    """The shared state store (Redis) cannot be reached: the vendor's 503, in its own error
    shape (the one error boundary renders it), never a 500."""

    status = 503
    code = "service_unavailable"


def lease_key(job_id: str) -> str:
    """The lease on job ``job_id``'s running work."""
    return f"{PREFIX}lease:{job_id}"


def merge_records(held: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The record to keep when ``new`` is written over ``held`` (what Redis holds).

    * the work: ``held``'s when it has an outcome and ``new`` has none (a process that read
      the job before its work ended), or when ``held`` is cancelled (a cancel sticks);
    * the visible status: ``held``'s when it shows a later stage (queued < processing <
      final), so a status never goes back.
    """
    if held is None:
        return new
    out = dict(new)
    if held.get("outcome") is not None and (
            new.get("outcome") is None or held["outcome"] == JobStatus.CANCELLED.value):
        for name in WORK_FIELDS:
            out[name] = held.get(name)
    if _RANK.get(held["status"], 2) > _RANK.get(new["status"], 2) or (
            held["status"] == JobStatus.CANCELLED.value):
        for name in VIEW_FIELDS:
            out[name] = held.get(name)
    return out


def _without_hits(doc: Any) -> Any:
    """A rules document without the rules' hits (they are counted apart, in Redis)."""
    return {**doc, "rules": [{k: v for k, v in r.items() if k != "hits"}
                             for r in doc["rules"]]}


def _raise_unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"Service temporarily unavailable: the emulator's state store "
                            f"cannot be reached ({type(exc).__name__}); retry shortly")


class SharedJobs:
    """The engine's jobs and result files, shared through Redis at ``url``.

    Use :meth:`start` / :meth:`stop` on the serving loop. Every method that talks to Redis
    raises :class:`StoreUnavailable` when it cannot be reached.
    """

    def __init__(self, url: str, engine: JobEngine) -> None:
        self.url = url
        self.engine = engine
        self.client: Any = aioredis.Redis.from_url(url, socket_timeout=5,
                                                   socket_connect_timeout=2)
        #: Ids of jobs whose image work runs in this process (their leases are renewed).
        self.owned: set[str] = set()
        #: Ids of result files already written to Redis by this process.
        self._written_files: set[str] = set()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        #: The reset generation this process has applied (``None``: not read yet).
        self.generation: int | None = None
        #: Resets this process's own state (jobs, files, rules, ...) when another process
        #: reset the emulator (set by the app: ``Emulator.reset`` without the store).
        self.on_reset: Callable[[], None] | None = None
        #: Balances, holds and tokens (one Lua script per decision).
        self.accounts = SharedAccounts(self.client, engine.billing.default_balance_usd)
        #: Jobs submitted here whose admission (:meth:`admit`) has not run yet.
        self.pending: dict[str, Job] = {}
        #: Settlements not yet written: ``(job, charge, refund_usd)``.
        self._settle: list[tuple[Job, bool, Decimal | None]] = []
        #: The fault rules shared (``Emulator`` sets them; ``None``: rules stay local).
        self.faults: FaultRules | None = None
        self._rules_seen: int | None = None
        self._rules_published: Any = None
        self._take_hit = self.client.register_script(TAKE_HIT)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the background writer and the lease renewal."""
        if self._task is None:
            with contextlib.suppress(RedisError, OSError):
                self.generation = int(await self.client.get(GEN_KEY) or 0)
            self._task = asyncio.create_task(self._write_forever())
            self._lease_task = asyncio.create_task(self._renew_forever())

    async def stop(self) -> None:
        """Write what is left, stop the loops and close the connection."""
        for task in (self._task, self._lease_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._lease_task = None
        with contextlib.suppress(StoreUnavailable):
            await self.flush()
        with contextlib.suppress(RedisError, OSError):
            if self.owned:
                await self.client.delete(*[lease_key(i) for i in self.owned])
        await self.client.aclose()

    def changed(self) -> None:
        """A job changed (called by the engine): write it within :data:`FLUSH_DELAY_S`."""
        self._wake.set()

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_DELAY_S)
            self._wake.clear()
            try:
                await self.flush()
            except StoreUnavailable:
                log.warning("state store %s unreachable; retrying", self.url)
                self._wake.set()
                await asyncio.sleep(0.5)
            except Exception:  # never let the writer die
                log.exception("state store %s: writing jobs failed", self.url)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(LEASE_RENEW_S)
            try:
                pipe = self.client.pipeline(transaction=False)
                pipe.get(GEN_KEY)
                for job_id in list(self.owned):
                    pipe.set(lease_key(job_id), "1", px=LEASE_MS)
                replies = await pipe.execute()
                self._check_generation(replies[0])
            except (RedisError, OSError):
                log.warning("state store %s: lease renewal failed", self.url)

    def _check_generation(self, value: Any) -> None:
        """Reset this process when the store's generation moved (another process reset)."""
        generation = int(value or 0)
        if self.generation is not None and generation != self.generation:
            log.info("state store %s: reset by another process", self.url)
            self.owned.clear()
            self._written_files.clear()
            if self.on_reset is not None:
                self.on_reset()
        self.generation = generation

    # -- fault rules ---------------------------------------------------------------------
    async def sync_rules(self) -> None:
        """Before a request: load the fault rules if another process changed them, and
        every rule's hits (so ``times`` left and ``FaultRules.live`` are the shared ones).

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        faults = self.faults
        if faults is None:
            return
        try:
            version, hits = await self.client.pipeline(transaction=False).get(
                RULES_VERSION_KEY).hgetall(HITS_KEY).execute()
            version = int(version or 0)
            if version != self._rules_seen:
                doc = await self.client.get(RULES_KEY)
                self._rules_seen = version
                if doc is not None:
                    value = json.loads(doc)
                    faults.load(value)
                    self._rules_published = _without_hits(value)
        except (RedisError, OSError) as exc:
            raise _raise_unavailable(exc) from exc
        if hits:
            for rule in faults.rules():
                taken = hits.get(rule.id.encode())
                if taken is not None:
                    rule.hits = int(taken)
        faults.refresh()

    async def publish_rules(self) -> None:
        """After a control-plane request: write the fault rules if they changed here.

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        faults = self.faults
        if faults is None:
            return
        value = faults.dump()
        if _without_hits(value) == self._rules_published:
            return
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(RULES_KEY, dumps(value))
            pipe.incr(RULES_VERSION_KEY)
            _, self._rules_seen = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _raise_unavailable(exc) from exc
        self._rules_published = _without_hits(value)

    async def take_hit(self, rule: FaultRule) -> bool:
        """Take one of ``rule``'s ``times`` on Redis (one Lua script); its ``hits`` become
        the shared count. ``False``: used up (by any process).

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        try:
            taken = int(await self._take_hit(
                keys=[HITS_KEY], args=[rule.id, "" if rule.times is None else rule.times]))
        except (RedisError, OSError) as exc:
            raise _raise_unavailable(exc) from exc
        if taken < 0:
            rule.hits = rule.times if rule.times is not None else rule.hits
            return False
        rule.hits = taken
        return True

    async def reset_done(self) -> None:
        """After this process reset the store (and so moved the generation): note the new
        generation, so this process does not reset itself again."""
        self.owned.clear()
        self._written_files.clear()
        try:
            self.generation = int(await self.client.get(GEN_KEY) or 0)
        except (RedisError, OSError) as exc:
            raise _raise_unavailable(exc) from exc

    async def announce_once(self, job: Job, listeners: Sequence[FinalListener]) -> None:
        """Run ``listeners`` (the webhook) for ``job``'s final status in one process only:
        the first to set ``rmbg:final:<id>`` (``SET NX PX``) runs them; another process
        that reveals the same status later does not."""
        try:
            first = await self.client.set(f"{PREFIX}final:{job.id}", "1", nx=True,
                                          px=ANNOUNCED_MS)
        except (RedisError, OSError):
            log.warning("state store %s unreachable: job %s announced here", self.url, job.id)
            first = True
        if first:
            for listener in listeners:
                await listener(job)

    # -- writing ---------------------------------------------------------------------------
    def settle(self, job: Job, *, charge: bool) -> None:
        """Release ``job``'s hold, charging it when ``charge`` (written by the next
        :meth:`flush`, after the job's admission)."""
        self._settle.append((job, charge, None))
        self._wake.set()

    def refund(self, job: Job, amount_usd: Decimal) -> None:
        """Give back ``amount_usd`` charged for ``job`` (written by the next :meth:`flush`)."""
        self._settle.append((job, False, amount_usd))
        self._wake.set()

    async def admit(self, job_id: str) -> None:
        """Admit the job ``job_id`` submitted by this request: a token, the concurrency cap
        and the price held, atomically on Redis (:class:`SharedAccounts`). Refused, the job
        is withdrawn (:meth:`JobEngine.withdraw`) and the vendor's error answers instead.

        Raises:
            RateLimited, PaymentRequired: refused.
            StoreUnavailable: Redis cannot be reached (the job is withdrawn).
        """
        job = self.pending.pop(job_id, None)
        if job is None:
            return
        engine = self.engine
        limit = engine.billing.account(job.api_key).limit
        try:
            await self.accounts.admit(job.api_key, job.price_usd, limit, engine.clock.now())
        except EmulatorError:
            self._withdraw(job)
            raise
        except (RedisError, OSError) as exc:
            self._withdraw(job)
            raise _raise_unavailable(exc) from exc
        engine.retouch([job], set())

    def _withdraw(self, job: Job) -> None:
        self.owned.discard(job.id)
        self._settle = [s for s in self._settle if s[0] is not job]
        self.engine.withdraw(job)

    async def _write_settlements(self) -> None:
        due = [s for s in self._settle if s[0].id not in self.pending]
        for item in due:
            job, charge, refund = item
            if refund is not None:
                await self.accounts.refund(job.api_key, refund)
            else:
                await self.accounts.settle(job.api_key, job.price_usd, charge=charge)
            self._settle.remove(item)

    async def flush(self) -> None:
        """Write every job changed since the last write (merged with what Redis holds),
        their new result files, and delete evicted jobs.

        Raises:
            StoreUnavailable: Redis cannot be reached; the changes are kept for the next.
        """
        async with self._lock:
            engine = self.engine
            jobs, dropped = engine.take_changes()
            waiting = [j for j in jobs if j.id in self.pending]
            if waiting:  # written once admitted
                engine.retouch(waiting, set())
                jobs = [j for j in jobs if j.id not in self.pending]
            try:
                await self._write_settlements()
            except (RedisError, OSError) as exc:
                engine.retouch(jobs, dropped)
                raise _raise_unavailable(exc) from exc
            if not jobs and not dropped:
                return
            try:
                for job in jobs:
                    await self._write_job(job)
                    if job.work_done:
                        self.owned.discard(job.id)
                if dropped:
                    pipe = self.client.pipeline(transaction=False)
                    for job_id in dropped:
                        pipe.delete(job_key(job_id))
                        pipe.zrem(PREFIX + "jobs", job_id)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                engine.retouch(jobs, dropped)
                raise _raise_unavailable(exc) from exc

    async def _write_job(self, job: Job) -> None:
        new = job_record(job)
        files = [f for f in job.outputs if f.id not in self._written_files]
        if files:
            pipe = self.client.pipeline(transaction=True)
            for f in files:
                pipe.hset(file_key(f.id), mapping=file_mapping(f))
                expiry = file_expiry_ms(f)
                if expiry is not None:
                    pipe.pexpireat(file_key(f.id), expiry)
            await pipe.execute()
            self._written_files.update(f.id for f in files)
        key = job_key(job.id)
        async with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    held_text = await pipe.hget(key, "rec")
                    held = json.loads(held_text) if held_text is not None else None
                    merged = merge_records(held, new)
                    pipe.multi()
                    pipe.hset(key, "rec", dumps(
                        {k: v for k, v in merged.items() if k != "status_reads"}))
                    if held is None:
                        pipe.zadd(PREFIX + "jobs", {job.id: job.created_at}, nx=True)
                    if job.id in self.owned and not job.work_done:
                        pipe.set(lease_key(job.id), "1", px=LEASE_MS)
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        if merged is not new:
            self._apply(job, merged)

    # -- reading ---------------------------------------------------------------------------
    async def prefetch(self, names: Iterable[str]) -> None:
        """Read the jobs and result files named ``names`` (path parameters: a job id, a file
        name ``<id>.png``) from Redis into this process, as they are now.

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        names = [n for n in names if n]
        if not names:
            return
        files = self.engine.files
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(GEN_KEY)
            for name in names:
                pipe.hmget(job_key(name), ["rec", "reads"])
                pipe.exists(lease_key(name))
            file_ids = [n.split(".", 1)[0] for n in names]
            wanted = [i for i in file_ids if files.get(i) is None]
            for file_id in wanted:
                pipe.hmget(file_key(file_id), ["meta", "data"])
            replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _raise_unavailable(exc) from exc
        self._check_generation(replies.pop(0))
        found_files = []
        for (meta, data) in replies[2 * len(names):]:
            if meta is not None and data is not None:
                found_files.append(file_from_meta(json.loads(meta), bytes(data)))
        if found_files:
            files.restore(found_files)
            self._written_files.update(f.id for f in found_files)
        for i in range(len(names)):
            (rec, reads), leased = replies[2 * i], replies[2 * i + 1]
            if rec is not None:
                await self._adopt(json.loads(rec), int(reads or 0), bool(leased))

    async def _adopt(self, record: dict[str, Any], reads: int, leased: bool) -> None:
        """Make this process's copy of a job what Redis holds (its outputs' files read too);
        a job whose work has not ended, not run here, without a lease, is ended."""
        engine = self.engine
        job_id = record["id"]
        record["status_reads"] = reads
        missing = [i for i in record["outputs"] if engine.files.get(i) is None]
        if missing:
            await self.prefetch(missing)
        job = engine.store.get(job_id)
        if job is None:
            job = job_from_record(record, engine.files, engine.generation)
            job.status_reads = reads
            engine.store.put(job)
        else:
            local = job_record(job)
            merged = merge_records(record, local) if job_id in self.owned else (
                merge_records(local, record))
            self._apply(job, merged)
            job.status_reads = max(job.status_reads, reads)
        if record["outcome"] is None and not leased and job_id not in self.owned \
                and not job.work_done:
            job.error = ("the emulator process running the job's work stopped before it "
                         "ended; submit it again")
            job.error_code = "system_error"
            engine.end_orphan(job)
            await self.flush()

    def _apply(self, job: Job, record: dict[str, Any]) -> None:
        """Set ``job``'s fields from ``record`` (work and visible status)."""
        fresh = job_from_record({**record, "status_reads": job.status_reads},
                                self.engine.files, job.generation)
        for name in (*WORK_FIELDS, *VIEW_FIELDS):
            setattr(job, name, getattr(fresh, name))
        if job.work_done and job._done is not None:
            job._done.set()

    async def count_read(self, job_id: str) -> int:
        """One more status read of ``job_id`` (``HINCRBY``); the count now.

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        try:
            return int(await self.client.hincrby(job_key(job_id), "reads", 1))
        except (RedisError, OSError) as exc:
            raise _raise_unavailable(exc) from exc

    async def wait_work(self, job: Job, timeout_s: float) -> None:
        """Wait at most ``timeout_s`` seconds for the work of a job run by another process
        to end (read again every 50 ms)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not job.work_done and loop.time() < deadline:
            await asyncio.sleep(0.05)
            await self.prefetch([job.id])

    # -- listing (the control plane) -------------------------------------------------------
    async def pull_newest(self, count: int) -> int:
        """Read the ``count`` newest jobs of every process (``rmbg:jobs``, by creation time)
        into this process, for the dashboard's job list; how many jobs Redis holds.

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        try:
            ids, total = await self.client.pipeline(transaction=False).zrevrange(
                PREFIX + "jobs", 0, count - 1).zcard(PREFIX + "jobs").execute()
        except (RedisError, OSError) as exc:
            raise _raise_unavailable(exc) from exc
        await self.prefetch([i.decode() if isinstance(i, bytes) else str(i) for i in ids])
        return int(total)


__all__ = ["FINAL_STAGE", "SharedJobs", "StoreUnavailable", "merge_records"]
