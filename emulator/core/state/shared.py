"""Jobs and result files shared by every ``serve`` process on one Redis (``--store
redis://``): the read-through and write-through layer of the job engine.

One mechanism for every vendor, at the two ends of a request (see
:meth:`emulator.vendors.base.VendorAdapter.route` and the control plane's file route):

* **before** the handler, :meth:`SharedJobs.prefetch` reads from Redis the job and the result
  file named by each path parameter (one pipelined round trip), so the synchronous lookups
  (:meth:`JobEngine.find`, ``FileStore.get``) find a job submitted on another process; the
  middleware's :meth:`SharedJobs.sync_rules` reads them in its own round trip (the same
  pipeline as the fault rules), and the handler's prefetch of the same names is then skipped;
* **after** it, :meth:`SharedJobs.flush` writes every job the request changed (and its
  result files) before the response leaves, so the next request, on any process, sees it.

Jobs changed in the background (image work ending) are written by a loop within
:data:`FLUSH_DELAY_S`. A write is one Lua script (:data:`WRITE_JOB`), a compare-and-set on
the job's version ``v`` (moved by every write): written as is when Redis still holds the
version this process last read or wrote, otherwise the script answers what Redis holds and
the write is merged with it (:func:`merge_records`) and tried again: the work's outcome comes
from whoever knows it, a cancel sticks, and the visible status never goes back. A job's
status-read counter moves by ``HINCRBY`` only.

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
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from emulator.core.background import end_tasks
from emulator.core.billing import KeySettings
from emulator.core.jobs.model import FINAL_STAGE, FinalListener, Job, JobStatus
from emulator.core.state.accounts import ADMIT, SharedAccounts, SharedBalance
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
    from emulator.core.webhooks import Secrets

log = logging.getLogger("emulator.state")

#: Seconds within which a job changed in the background is written to Redis.
FLUSH_DELAY_S = 0.05
#: Milliseconds a lease on running work lasts without renewal.
LEASE_MS = 5000
#: Seconds between two renewals of the leases this process holds.
LEASE_RENEW_S = 1.0
#: Seconds each step of :meth:`SharedJobs.stop` may take (a flush, giving up leases, closing).
STOP_S = 2.0
#: Milliseconds the mark "this job's final status was announced" is kept (one day).
ANNOUNCED_MS = 24 * 3600 * 1000
#: The reset generation (``INCR`` by :meth:`RedisStore.clear`).
GEN_KEY = PREFIX + "gen"
#: Fault rules' hits, by rule id (a hash; ``HINCRBY`` in :data:`TAKE_HIT` only).
HITS_KEY = PREFIX + "hits"
#: The fault rules' document (``FaultRules.dump``) and its version (``INCR`` per change).
RULES_KEY = PREFIX + "rules"
RULES_VERSION_KEY = PREFIX + "rules:version"
#: The signing secrets' document (``Secrets.dump``: fal's ED25519 key, Runflow's ``whsec_``
#: secrets) and its version (``INCR`` per change), read like the rules'.
SECRETS_KEY = PREFIX + "secrets"
SECRETS_VERSION_KEY = PREFIX + "secrets:version"
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
#: KEYS: the job's hash, the jobs' sorted set, the job's lease, then its new result files'
#: hashes; ARGV: the version expected, the record (JSON), the job id, its score in the sorted
#: set, the lease's milliseconds ('': none), then per file its meta, data and expiry (Unix ms,
#: '': none). The files are written; the record only when the job's version ``v`` is the one
#: expected (a hash with a record and no version is version -1): {1, new version}; else
#: {0, version held, record held}, nothing of the job written.
WRITE_JOB = """
for i = 4, #KEYS do
  local a = 6 + (i - 4) * 3
  redis.call('HSET', KEYS[i], 'meta', ARGV[a], 'data', ARGV[a + 1])
  if ARGV[a + 2] ~= '' then redis.call('PEXPIREAT', KEYS[i], ARGV[a + 2]) end
end
local held = redis.call('HMGET', KEYS[1], 'v', 'rec')
local v = 0
if held[1] then v = tonumber(held[1]) elseif held[2] then v = -1 end
if v ~= tonumber(ARGV[1]) then
  return {0, tostring(v), held[2]}
end
local nv = math.max(v, 0) + 1
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'v', nv)
if v <= 0 then redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[3]) end
if ARGV[5] ~= '' then redis.call('SET', KEYS[3], '1', 'PX', ARGV[5]) end
return {1, tostring(nv)}
"""
#: A submit's admission (:data:`~emulator.core.state.accounts.ADMIT`: KEYS[1..2], ARGV[1..8])
#: and, only when admitted, its job's write (:data:`WRITE_JOB`: the other keys and
#: arguments), in one script: ADMIT's refusal as is, or {0, WRITE_JOB's answer...}.
ADMIT_AND_WRITE = f"""
local function admit(KEYS, ARGV)
{ADMIT}
end
local function write(KEYS, ARGV)
{WRITE_JOB}
end
local a = admit({{KEYS[1], KEYS[2]}},
                {{ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]}})
if a[1] ~= 0 then return a end
local keys, args = {{}}, {{}}
for i = 3, #KEYS do keys[#keys + 1] = KEYS[i] end
for i = 9, #ARGV do args[#args + 1] = ARGV[i] end
local w = write(keys, args)
return {{0, w[1], w[2], w[3]}}
"""
#: The path parameters whose jobs and files this request's :meth:`SharedJobs.sync_rules`
#: already read (the handler's :meth:`SharedJobs.prefetch` of them is then skipped, once).
_READ_AHEAD: ContextVar[set[str] | None] = ContextVar("rmbg_read_ahead", default=None)
#: Fields a job's image work decides (kept from whichever record has an outcome).
WORK_FIELDS = ("outcome", "outputs", "error", "error_code", "work_started_at",
               "work_ended_at", "charged_usd", "planned")
#: Fields of the visible status (kept from whichever record shows the later stage).
VIEW_FIELDS = ("status", "floor_stage", "started_at", "completed_at", "updated_at", "stuck")
_RANK = {"queued": 0, "processing": 1}


@dataclass
class _Call:
    """A Lua script's call queued on a pipeline by its SHA (no ``SCRIPT EXISTS`` round
    trip); one that Redis did not know (``NOSCRIPT``) is made again through ``script``,
    which loads it."""

    script: Any
    keys: list[str]
    args: list[Any]

    def queue(self, pipe: Any) -> None:
        """``EVALSHA`` on ``pipe``."""
        pipe.evalsha(self.script.sha, len(self.keys), *self.keys, *self.args)

    async def answer(self, reply: Any) -> Any:
        """The script's answer from ``reply`` (a pipeline's, with ``raise_on_error=False``).

        Raises:
            RedisError: Redis answered another error.
        """
        if isinstance(reply, NoScriptError):
            return await self.script(keys=self.keys, args=self.args)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def settled(self, reply: Any) -> None:
        """:meth:`answer`, its value unused."""
        await self.answer(reply)


@dataclass
class _JobWrite:
    """One job's write in a :meth:`SharedJobs.flush`: the job, its record, the ids of the
    result files it carries, the script call."""

    job: Job
    new: dict[str, Any]
    files: list[str]
    call: _Call


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
      final), so a status never goes back; the floor (``floor_stage``, the stage the control
      plane made due) is the higher of the two, so an advance on one process is not lost to
      a status read on another.
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
    out["floor_stage"] = max(held.get("floor_stage", 0), new.get("floor_stage", 0))
    return out


def _without_hits(doc: Any) -> Any:
    """A rules document without the rules' hits (they are counted apart, in Redis)."""
    return {**doc, "rules": [{k: v for k, v in r.items() if k != "hits"}
                             for r in doc["rules"]]}


def _record_text(record: dict[str, Any]) -> str:
    """A job record as Redis keeps it: JSON without the read count (``reads`` apart)."""
    return dumps({k: v for k, v in record.items() if k != "status_reads"})


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
        self.accounts = SharedAccounts(self.client, engine.billing.default_balance_usd,
                                       engine.billing.ledger_size)
        #: Jobs submitted here whose admission (:meth:`admit`) has not run yet.
        self.pending: dict[str, Job] = {}
        #: Settlements not yet written: ``(job, charge, refund_usd or None, refund note)``.
        self._settle: list[tuple[Job, bool, Decimal | None, str]] = []
        #: The fault rules shared (``Emulator`` sets them; ``None``: rules stay local).
        self.faults: FaultRules | None = None
        #: The signing secrets, shared by every process (set by the app).
        self.secrets: Secrets | None = None
        self._secrets_seen = 0  # the version in Redis this process has loaded or written
        self._secrets_sent = 0  # Secrets.version this process has written
        self._rules_seen: int | None = None
        self._rules_published: Any = None
        self._take_hit = self.client.register_script(TAKE_HIT)
        self._write_script = self.client.register_script(WRITE_JOB)
        self._admit_write_script = self.client.register_script(ADMIT_AND_WRITE)
        #: The version (``v``) of each job's record this process last read or wrote.
        self._versions: dict[str, int] = {}

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
        await end_tasks([t for t in (self._task, self._lease_task) if t is not None],
                        what="shared-store writer and lease renewal")
        self._task = self._lease_task = None
        # Each step bounded: a Redis that hangs or is gone never keeps the process from
        # stopping (what was not written is lost, as on a crash).
        with contextlib.suppress(StoreUnavailable, asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), timeout=STOP_S)
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            if self.owned:
                await asyncio.wait_for(
                    self.client.delete(*[lease_key(i) for i in self.owned]), timeout=STOP_S)
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self.client.aclose(), timeout=STOP_S)

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
            self._versions.clear()
            self._secrets_seen = 0
            if self.on_reset is not None:
                self.on_reset()
        self.generation = generation

    # -- fault rules ---------------------------------------------------------------------
    async def sync_rules(self, names: Iterable[Any] = ()) -> None:
        """Before a request: load the fault rules if another process changed them, and
        every rule's hits (so ``times`` left and ``FaultRules.live`` are the shared ones);
        in the same round trip, read the jobs and files named ``names`` (the request's path
        parameters) as :meth:`prefetch` does, so the handler's prefetch of them is skipped.

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        faults = self.faults
        if faults is None:
            return
        wanted = [str(n) for n in names if n]
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(RULES_VERSION_KEY).hgetall(HITS_KEY).get(SECRETS_VERSION_KEY)
            if wanted:
                self._queue_reads(pipe, wanted)
            replies = await pipe.execute()
            version, hits = replies[0], replies[1]
            await self._adopt_secrets(replies[2])
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
        if wanted:
            await self._take_reads(wanted, replies[3:])
            _READ_AHEAD.set(set(wanted))

    async def share_secrets(self) -> bool:
        """At start, and before a job's webhook is made: adopt the secrets other processes
        wrote (so every process signs with the same fal ED25519 key and knows every Runflow
        secret), after writing this process's if it changed them. The first process to
        start writes its ED25519 key; the others take it (``SET NX``).

        Returns:
            Whether secrets written by another process were loaded (a message signed
            before should be made again).

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        secrets = self.secrets
        if secrets is None:
            return False
        try:
            if secrets.version != self._secrets_sent:
                await self._publish_secrets(secrets)
            elif self._secrets_seen == 0:  # not read yet: the first process's key wins
                pipe = self.client.pipeline(transaction=True)
                pipe.set(SECRETS_KEY, dumps(secrets.dump()), nx=True)
                pipe.incr(SECRETS_VERSION_KEY)
                await pipe.execute()
            return await self._adopt_secrets(await self.client.get(SECRETS_VERSION_KEY))
        except (RedisError, OSError) as exc:
            raise _raise_unavailable(exc) from exc

    async def _publish_secrets(self, secrets: Secrets) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(SECRETS_KEY, dumps(secrets.dump()))
        pipe.incr(SECRETS_VERSION_KEY)
        _, self._secrets_seen = await pipe.execute()
        self._secrets_sent = secrets.version

    async def _adopt_secrets(self, version: Any) -> bool:
        """Load the secrets' document when its ``version`` (a reply) is not the one seen;
        whether it did."""
        secrets = self.secrets
        if secrets is None or int(version or 0) == self._secrets_seen:
            return False
        doc = await self.client.get(SECRETS_KEY)
        self._secrets_seen = int(version or 0)
        if doc is None:
            return False
        secrets.load(json.loads(doc))
        self._secrets_sent = secrets.version
        return True

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
        self._versions.clear()
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

    # -- accounts (the control plane) -------------------------------------------------------
    async def account(self, api_key: str, start_usd: Decimal) -> SharedBalance:
        """The key's account as every process shares it, with its ledger (``start_usd``: the
        balance of a key Redis does not hold yet).

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        try:
            return await self.accounts.get(api_key, start_usd)
        except (RedisError, OSError) as exc:
            raise _raise_unavailable(exc) from exc

    async def configure_key(self, api_key: str, settings: KeySettings, now: float) -> None:
        """Set the key's balance and rate limit for every process.

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        try:
            await self.accounts.configure(api_key, settings, now)
        except (RedisError, OSError) as exc:
            raise _raise_unavailable(exc) from exc

    # -- writing ---------------------------------------------------------------------------
    def settle(self, job: Job, *, charge: bool) -> None:
        """Release ``job``'s hold, charging it when ``charge`` (written by the next
        :meth:`flush`, after the job's admission)."""
        self._settle.append((job, charge, None, ""))
        self._wake.set()

    def refund(self, job: Job, amount_usd: Decimal, note: str) -> None:
        """Give back ``amount_usd`` charged for ``job``, ``note`` in the ledger (written by
        the next :meth:`flush`)."""
        self._settle.append((job, False, amount_usd, note))
        self._wake.set()

    async def admit(self, job_id: str) -> None:
        """Admit the job ``job_id`` submitted by this request: a token, the concurrency cap
        and the price held, atomically on Redis (:class:`SharedAccounts`), and the job
        written only when admitted, in the same script (:data:`ADMIT_AND_WRITE`, the round
        trip of :meth:`flush`). Refused, the job is withdrawn (:meth:`JobEngine.withdraw`)
        and the vendor's error answers instead.

        Raises:
            RateLimited, PaymentRequired: refused.
            StoreUnavailable: Redis cannot be reached (the job is withdrawn).
        """
        job = self.pending.get(job_id)
        if job is None:
            return
        await self.flush(admitting=job)  # pending until then: no other flush writes it

    def _withdraw(self, job: Job) -> None:
        self.owned.discard(job.id)
        self._settle = [s for s in self._settle if s[0] is not job]
        self.engine.withdraw(job)

    async def flush(self, admitting: Job | None = None) -> None:
        """Write the settlements due, every job changed since the last write (merged with
        what Redis holds) with their new result files, and delete evicted jobs: one
        pipelined round trip (more only for a job another process changed meanwhile).

        ``admitting``: a submit's job (:meth:`admit`), admitted and written in one script.

        Raises:
            RateLimited, PaymentRequired: ``admitting`` refused (it is withdrawn).
            StoreUnavailable: Redis cannot be reached; the changes are kept for the next
                (``admitting`` is withdrawn).
        """
        secrets = self.secrets
        if secrets is not None and secrets.version != self._secrets_sent:
            try:  # a request made a signing secret (or a reset forgot them): share them
                await self._publish_secrets(secrets)
            except (RedisError, OSError) as exc:
                raise _raise_unavailable(exc) from exc
        async with self._lock:
            engine = self.engine
            if admitting is not None:
                self.pending.pop(admitting.id, None)
            jobs, dropped = engine.take_changes()
            if admitting is not None:
                jobs = [j for j in jobs if j is not admitting] + [admitting]
            waiting = [j for j in jobs if j.id in self.pending]
            if waiting:  # written once admitted
                engine.retouch(waiting, set())
                jobs = [j for j in jobs if j.id not in self.pending]
            # a settlement follows its job's admission (the next flush)
            due = [s for s in self._settle
                   if s[0].id not in self.pending and s[0] is not admitting]
            if not jobs and not dropped and not due:
                return
            if admitting is not None:
                account = engine.billing.account(admitting.api_key)  # its settings here
                admit_keys, admit_args = self.accounts.admit_call(
                    admitting.api_key, admitting.price_usd, account.limit, engine.clock.now(),
                    account.balance_usd, admitting.id, admitting.vendor)
            pipe = self.client.pipeline(transaction=False)
            calls: list[_Call] = []
            for job, charge, refund, note in due:
                if refund is not None:
                    call = _Call(self.accounts.move_script, *self.accounts.refund_call(
                        job.api_key, refund, engine.clock.now(), job.id, job.vendor, note))
                else:
                    call = _Call(self.accounts.settle_script, *self.accounts.settle_call(
                        job.api_key, job.price_usd, job.work_ended_at or engine.clock.now(),
                        job.id, job.vendor, charge=charge))
                call.queue(pipe)
                calls.append(call)
            writes = [self._job_write(job) for job in jobs]
            for write in writes:
                if write.job is admitting:
                    _Call(self._admit_write_script, admit_keys + write.call.keys,
                          admit_args + write.call.args).queue(pipe)
                else:
                    write.call.queue(pipe)
            for job_id in dropped:
                self._versions.pop(job_id, None)
                pipe.delete(job_key(job_id))
                pipe.zrem(PREFIX + "jobs", job_id)
            refusal: EmulatorError | None = None
            try:
                replies = await pipe.execute(raise_on_error=False)
                for queued, reply in zip(calls, replies, strict=False):
                    await queued.settled(reply)
                self._settle = [s for s in self._settle if s not in due]
                for write, reply in zip(writes, replies[len(calls):], strict=False):
                    if write.job is admitting:
                        reply = await _Call(self._admit_write_script,
                                            admit_keys + write.call.keys,
                                            admit_args + write.call.args).answer(reply)
                        try:
                            self.accounts.check(reply, admitting.price_usd)
                        except EmulatorError as exc:
                            refusal = exc
                            continue
                        reply = reply[1:]
                    await self._finish_write(write, reply)
                    if write.job.work_done:
                        self.owned.discard(write.job.id)
            except (RedisError, OSError) as exc:
                if admitting is not None:
                    self._withdraw(admitting)
                engine.retouch([j for j in jobs if j is not admitting], dropped)
                raise _raise_unavailable(exc) from exc
            if refusal is not None:
                assert admitting is not None
                self._withdraw(admitting)
                raise refusal

    def _job_write(self, job: Job) -> _JobWrite:
        """The script call (:data:`WRITE_JOB`) that writes ``job`` and its new result files
        if Redis holds the version this process last read or wrote."""
        new = job_record(job)
        files = [f for f in job.outputs if f.id not in self._written_files]
        keys = [job_key(job.id), PREFIX + "jobs", lease_key(job.id)]
        lease = LEASE_MS if job.id in self.owned and not job.work_done else ""
        args: list[Any] = [self._versions.get(job.id, 0), _record_text(new), job.id,
                           repr(job.created_at), lease]
        for f in files:
            keys.append(file_key(f.id))
            expiry = file_expiry_ms(f)
            args += [*file_mapping(f).values(), "" if expiry is None else expiry]
        return _JobWrite(job, new, [f.id for f in files], _Call(self._write_script, keys, args))

    async def _finish_write(self, write: _JobWrite, reply: Any) -> None:
        """Apply the answer of ``write``'s script; when another process changed the job
        since this one last read or wrote it, merge with what Redis holds and write again.

        Raises:
            RedisError: Redis answered an error, or cannot be reached.
        """
        call, job, merged = write.call, write.job, write.new
        while True:
            reply = await call.answer(reply)
            if write.files:  # written whatever the job's answer
                self._written_files.update(write.files)
                write.files = []
                call.keys, call.args = call.keys[:3], call.args[:5]
            if int(reply[0]) == 1:
                self._versions[job.id] = int(reply[1])
                break
            held = json.loads(reply[2]) if reply[2] is not None else None
            merged = merge_records(held, write.new)
            call.args[0], call.args[1] = int(reply[1]), _record_text(merged)
            reply = await call.script(keys=call.keys, args=call.args)
        if merged is not write.new:
            self._apply(job, merged)

    # -- reading ---------------------------------------------------------------------------
    async def prefetch(self, names: Iterable[str]) -> None:
        """Read the jobs and result files named ``names`` (path parameters: a job id, a file
        name ``<id>.png``) from Redis into this process, as they are now (skipped, once, for
        names this request's :meth:`sync_rules` has just read).

        Raises:
            StoreUnavailable: Redis cannot be reached.
        """
        names = [n for n in names if n]
        if not names:
            return
        ahead = _READ_AHEAD.get()
        if ahead is not None and ahead.issuperset(names):
            ahead.difference_update(names)
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            self._queue_reads(pipe, names)
            replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _raise_unavailable(exc) from exc
        await self._take_reads(names, replies)

    def _queue_reads(self, pipe: Any, names: Sequence[str]) -> None:
        """Queue on ``pipe`` the reads of :meth:`prefetch` (answered by :meth:`_take_reads`):
        the generation, each name's job (record, reads, version) and lease, and the result
        files not held here."""
        files = self.engine.files
        pipe.get(GEN_KEY)
        for name in names:
            pipe.hmget(job_key(name), ["rec", "reads", "v"])
            pipe.exists(lease_key(name))
        for name in names:
            file_id = name.split(".", 1)[0]
            if files.get(file_id) is None:
                pipe.hmget(file_key(file_id), ["meta", "data"])

    async def _take_reads(self, names: Sequence[str], replies: list[Any]) -> None:
        """Apply the replies of :meth:`_queue_reads` for ``names``."""
        files = self.engine.files
        self._check_generation(replies[0])
        replies = replies[1:]
        found_files = []
        for (meta, data) in replies[2 * len(names):]:
            if meta is not None and data is not None:
                found_files.append(file_from_meta(json.loads(meta), bytes(data)))
        if found_files:
            files.restore(found_files)
            self._written_files.update(f.id for f in found_files)
        for i, name in enumerate(names):
            (rec, reads, version), leased = replies[2 * i], replies[2 * i + 1]
            if rec is None:
                continue
            held = -1 if version is None else int(version)
            job = self.engine.store.get(name)
            if job is not None and job.work_done and self._versions.get(name) == held:
                # the record this process last read or wrote: nothing new but the reads
                job.status_reads = max(job.status_reads, int(reads or 0))
                continue
            await self._adopt(json.loads(rec), int(reads or 0), bool(leased), held)

    async def _adopt(self, record: dict[str, Any], reads: int, leased: bool,
                     version: int) -> None:
        """Make this process's copy of a job what Redis holds (its outputs' files read too;
        ``version``: the record's ``v``); a job whose work has not ended, not run here,
        without a lease, is ended."""
        engine = self.engine
        job_id = record["id"]
        self._versions[job_id] = version
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
