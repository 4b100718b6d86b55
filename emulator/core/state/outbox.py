"""Webhook deliveries shared by every ``serve`` process on one Redis (``--store redis://``).

Under a shared store the outbox (:class:`~emulator.core.webhooks.WebhookOutbox`) keeps its
deliveries in Redis, and each process's delivery loop **claims** the due ones there, so a
delivery whose process dies is retried by another, once:

* ``rmbg:wh:rec`` (hash): every delivery's record (:func:`delivery_record`), by id;
* ``rmbg:wh:all`` (sorted set): every delivery id by creation time (the listing's order);
* ``rmbg:wh:due`` (sorted set): pending deliveries by the time their next attempt is due
  (seconds on the emulator's clock);
* ``rmbg:wh:lease:<id>``: the lease of the process attempting it (``SET NX PX``, a random
  token per process, :data:`LEASE_MS`, renewed every :data:`RENEW_S` while the attempt runs).

:data:`CLAIM` (one Lua script) takes a lease on each due delivery nobody holds; the process
that holds it attempts it and writes the outcome with :data:`FINISH` (only while the lease is
still its own or has lapsed unclaimed: a process that lost its lease drops its outcome). A
process killed mid-attempt or between attempts holds nothing once its lease lapses: the next
due claim on another process attempts the delivery, with the attempts recorded so far.

New deliveries (and changes made outside an attempt) are written by the delivery loop
before it claims, off the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from emulator.core.background import end_tasks
from emulator.core.state.redis import PREFIX, dumps
from emulator.core.state.shared import StoreUnavailable
from emulator.core.webhooks import Delivery, Resigner, delivery_from_record, delivery_record

if TYPE_CHECKING:
    from emulator.core.webhooks import WebhookOutbox

log = logging.getLogger("emulator.state")

#: Every delivery's record by id (a hash).
RECORDS_KEY = PREFIX + "wh:rec"
#: Every delivery id by creation time (a sorted set).
ALL_KEY = PREFIX + "wh:all"
#: Pending delivery ids by the time (emulator clock, s) their next attempt is due.
DUE_KEY = PREFIX + "wh:due"
#: The prefix of a delivery's lease key.
LEASE_PREFIX = PREFIX + "wh:lease:"
#: Milliseconds a delivery's lease lasts without renewal.
LEASE_MS = 5000
#: Seconds between two renewals of the leases of attempts in flight.
RENEW_S = 1.0
#: Seconds between two claims when nothing woke the loop.
CLAIM_EVERY_S = 0.2
#: Seconds the last write and the closing of the connection may take at shutdown.
STOP_S = 2.0
#: Deliveries looked at per claim (due ones held by another process are skipped).
CLAIM_SCAN = 64

#: KEYS: due set, records hash. ARGV: now, token, lease ms, most to claim, lease prefix,
#: how many due ids to look at.
#: The records of the due deliveries this call took a lease on.
CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[6]))
local out = {}
for _, id in ipairs(ids) do
  if #out >= tonumber(ARGV[4]) then break end
  if redis.call('SET', ARGV[5] .. id, ARGV[2], 'NX', 'PX', ARGV[3]) then
    local rec = redis.call('HGET', KEYS[2], id)
    if rec then
      table.insert(out, rec)
    else
      redis.call('ZREM', KEYS[1], id)
      redis.call('DEL', ARGV[5] .. id)
    end
  end
end
return out
"""

#: KEYS: due set, records hash, the lease. ARGV: token, id, record, next due time ('' when
#: the delivery is over). 1: written; 0: another process holds the lease (nothing written).
FINISH = """
local held = redis.call('GET', KEYS[3])
if held and held ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[1], ARGV[2])
else
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
end
redis.call('DEL', KEYS[3])
return 1
"""

#: KEYS: listing set, due set, records hash. ARGV: the most to keep. Drops the oldest
#: deliveries past that number, but pending ones; how many it dropped.
TRIM = """
local n = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if n <= 0 then return 0 end
local gone = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, n - 1)) do
  if not redis.call('ZSCORE', KEYS[2], id) then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[3], id)
    gone = gone + 1
  end
end
return gone
"""

#: KEYS: the lease. ARGV: token, lease ms. Renews the lease only while it is this token's.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class SharedOutbox:
    """The deliveries of ``outbox`` kept in Redis at ``url`` and claimed there.

    Args:
        resign: rebuilds a claimed message's ``sign`` from its record (the vendor signs its
            job's callback again, ``Emulator._resign``).
        prepare: reads jobs by id into this process before ``resign`` (``SharedJobs.prefetch``).

    Redis errors never leave this class: a claim or write that fails is logged and tried
    again on the next turn of the delivery loop.
    """

    def __init__(self, url: str, outbox: WebhookOutbox, resign: Resigner,
                 prepare: Callable[[list[str]], Awaitable[None]] | None = None) -> None:
        self.url = url
        self.outbox = outbox
        self.resign = resign
        self.prepare = prepare
        self.client: Any = aioredis.Redis.from_url(url, socket_timeout=5,
                                                   socket_connect_timeout=2)
        #: This process's lease token.
        self.token = secrets.token_hex(8)
        #: Ids of deliveries created or changed here and not written yet.
        self.dirty: dict[str, Delivery] = {}
        #: Ids of deliveries this process is attempting now (their leases are renewed).
        self.in_flight: set[str] = set()
        self._claim = self.client.register_script(CLAIM)
        self._finish = self.client.register_script(FINISH)
        self._renew = self.client.register_script(RENEW)
        self._trim = self.client.register_script(TRIM)
        #: The most deliveries Redis keeps (the outbox's journal size; the oldest finished
        #: ones are dropped first).
        self.size = outbox.journal_size
        self._renew_task: asyncio.Task[None] | None = None
        self._last_claim = 0.0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start renewing the leases of attempts in flight (on the serving loop)."""
        if self._renew_task is None:
            self._renew_task = asyncio.create_task(self._renew_forever())

    async def stop(self) -> None:
        """Write what is left, give up the leases held (another process may take them at
        once) and close the connection."""
        if self._renew_task is not None:
            await end_tasks([self._renew_task], what="webhook lease renewal")
            self._renew_task = None
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self._give_up(), timeout=STOP_S)
        with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self.client.aclose(), timeout=STOP_S)

    async def _give_up(self) -> None:
        await self.write()
        if self.in_flight:
            pipe = self.client.pipeline(transaction=False)
            for delivery_id in self.in_flight:
                pipe.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then "
                          "return redis.call('DEL', KEYS[1]) end return 0",
                          1, LEASE_PREFIX + delivery_id, self.token)
            await pipe.execute()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW_S)
            if not self.in_flight:
                continue
            try:
                for delivery_id in list(self.in_flight):
                    await self._renew(keys=[LEASE_PREFIX + delivery_id],
                                      args=[self.token, LEASE_MS])
            except (RedisError, OSError):
                log.warning("state store %s: webhook lease renewal failed", self.url)

    # -- writing ---------------------------------------------------------------------------
    def changed(self, delivery: Delivery) -> None:
        """``delivery`` was created or changed here (outside an attempt): written by the
        next :meth:`write` (the delivery loop's next turn)."""
        if delivery.id not in self.in_flight:
            self.dirty[delivery.id] = delivery

    def forget(self) -> None:
        """A reset: nothing of this process's is left to write."""
        self.dirty.clear()
        self.in_flight.clear()

    async def write(self) -> None:
        """Write the deliveries changed here: the record, its place in the listing, and in
        the due set while it is pending with a time set.

        Raises:
            RedisError, OSError: Redis cannot be reached (the changes are kept).
        """
        if not self.dirty:
            return
        batch = list(self.dirty.values())
        self.dirty.clear()
        try:
            pipe = self.client.pipeline(transaction=True)
            for delivery in batch:
                pipe.hset(RECORDS_KEY, delivery.id, dumps(delivery_record(delivery)))
                pipe.zadd(ALL_KEY, {delivery.id: delivery.created_at}, nx=True)
                if delivery.state == "pending" and delivery.next_at is not None:
                    pipe.zadd(DUE_KEY, {delivery.id: delivery.next_at})
                else:
                    pipe.zrem(DUE_KEY, delivery.id)
            await pipe.execute()
        except BaseException:
            for delivery in batch:
                self.dirty.setdefault(delivery.id, delivery)
            raise
        await self._trim(keys=[ALL_KEY, DUE_KEY, RECORDS_KEY], args=[self.size])

    # -- claiming --------------------------------------------------------------------------
    async def claim(self, now: float, *, woken: bool) -> list[Delivery]:
        """One turn of the delivery loop: write what changed here, then take a lease on
        every due delivery no process holds; their deliveries, ready to attempt (this
        process's own objects when it has them, else rebuilt and signed again).

        Claims only when ``woken`` or :data:`CLAIM_EVERY_S` after the last one. Returns
        ``[]`` when Redis cannot be reached (logged; tried again next turn).
        """
        loop = asyncio.get_running_loop()
        if not woken and loop.time() - self._last_claim < CLAIM_EVERY_S:
            return []
        self._last_claim = loop.time()
        try:
            await self.write()
            records = await self._claim(keys=[DUE_KEY, RECORDS_KEY],
                                        args=[repr(now), self.token, LEASE_MS, CLAIM_SCAN,
                                              LEASE_PREFIX, CLAIM_SCAN])
        except (RedisError, OSError):
            log.warning("state store %s unreachable: webhook deliveries wait", self.url)
            return []
        out = []
        parsed = [json.loads(r) for r in records]
        unsigned = [r for r in parsed if r["signed"] and self.outbox.get(r["id"]) is None]
        if unsigned and self.prepare is not None:
            with contextlib.suppress(Exception):  # the job may be gone: sent unsigned
                await self.prepare(sorted({r["job_id"] for r in unsigned}))
        for record in parsed:
            local = self.outbox.get(record["id"])
            if local is not None:
                sign = local.message.sign
            else:
                sign = self.resign(record) if record["signed"] else None
            delivery = delivery_from_record(record, sign)
            self.in_flight.add(delivery.id)
            out.append(delivery)
        return out

    async def finish(self, delivery: Delivery) -> None:
        """After an attempt: write its outcome (and the next due time) if this process
        still holds the lease, and give the lease up."""
        next_at = delivery.next_at if delivery.state == "pending" else None
        try:
            await self._finish(keys=[DUE_KEY, RECORDS_KEY, LEASE_PREFIX + delivery.id],
                               args=[self.token, delivery.id,
                                     dumps(delivery_record(delivery)),
                                     "" if next_at is None else repr(next_at)])
        except (RedisError, OSError):
            log.warning("state store %s unreachable: delivery %s's outcome kept here",
                        self.url, delivery.id)
            self.in_flight.discard(delivery.id)
            self.dirty[delivery.id] = delivery
            return
        self.in_flight.discard(delivery.id)

    # -- reading ---------------------------------------------------------------------------
    async def pull(self) -> None:
        """Make the outbox's deliveries every process's, as Redis holds them, oldest first
        (for the control plane's listing; those changed here and not written yet win).

        Raises:
            StoreUnavailable: Redis cannot be reached (the vendor-neutral 503).
        """
        try:
            await self.write()
            ids = [i.decode() if isinstance(i, bytes) else i
                   for i in await self.client.zrange(ALL_KEY, -self.size, -1)]
            records = await self.client.hmget(RECORDS_KEY, ids) if ids else []
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Service temporarily unavailable: the emulator's state "
                                   f"store cannot be reached ({type(exc).__name__}); retry "
                                   f"shortly") from exc
        found = []
        for record in records:
            if record is None:
                continue
            value = json.loads(record)
            local = self.dirty.get(value["id"]) or self.outbox.get(value["id"])
            if value["id"] in self.dirty and local is not None:
                found.append(local)
                continue
            sign = local.message.sign if local is not None else None
            found.append(delivery_from_record(value, sign))
        self.outbox.replace_all(found + [d for d in self.dirty.values()
                                         if d.id not in {f.id for f in found}])


__all__ = ["SharedOutbox"]
