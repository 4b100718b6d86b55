"""Balances, holds and rate-limit tokens shared by every process on one Redis (``--store
redis://``): each decision is one Lua script, run atomically by Redis, never a read-modify-
write in a process.

An account is the hash ``rmbg:acct:<key>``: ``balance`` and ``held`` in **micro-USD**
(integers: 0.018 USD is 18000; amounts are rounded to 6 decimal places), ``active`` (jobs
not yet ended), ``tokens`` and ``tokens_at`` (the token bucket, as
:meth:`emulator.core.billing.Billing.throttle` keeps it), and, once the control plane set
the key's rate limit (``PUT /_emulator/keys/KEY``, a scenario loaded at run time), ``limit``
(the setting as JSON) with ``rps``, ``burst`` and ``cap`` (-1: none) as the script reads
them, which every process then obeys instead of its own settings. A key seen for the first
time starts with the balance the admitting process has for it (its ``--keys`` / scenario
setting, else the default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from emulator.core.billing import KeySettings, RateLimit, usd_text
from emulator.core.state.redis import PREFIX
from emulator.errors import PaymentRequired, RateLimited

#: Micro-USD in one USD.
MICRO = Decimal(1_000_000)

#: A Lua function the scripts below share: append a ledger entry to the list ``ledger``
#: (``head``: the entry's JSON without its amount, balance and closing brace, made by
#: :func:`entry_head`; amounts in micro-USD), keeping the newest ``size`` entries and
#: counting those dropped in the account's ``dropped``.
NOTE = """
local function note(ledger, acct, size, head, amount, balance)
  redis.call('RPUSH', ledger, head .. ',"amount":' .. string.format('%d', amount)
    .. ',"balance":' .. string.format('%d', balance) .. '}')
  local over = redis.call('LLEN', ledger) - tonumber(size)
  if over > 0 then
    redis.call('LTRIM', ledger, over, -1)
    redis.call('HINCRBY', acct, 'dropped', over)
  end
end
"""

#: KEYS[1] the account, KEYS[2] its ledger; ARGV: starting balance, price, concurrency cap
#: (-1: none), rps (0: none), burst, now, the hold's ledger entry head, the ledger's size;
#: the cap, rps and burst the account holds (``limit`` set) win. Returns {0} (held),
#: {1, active, cap} (cap), {2, available} (balance), {3, wait_s, rps} (rate limit).
ADMIT = NOTE + """
redis.call('HSETNX', KEYS[1], 'balance', ARGV[1])
local rps, burst, cap = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[3])
if redis.call('HEXISTS', KEYS[1], 'limit') == 1 then
  local l = redis.call('HMGET', KEYS[1], 'rps', 'burst', 'cap')
  rps, burst, cap = tonumber(l[1]), tonumber(l[2]), tonumber(l[3])
end
local now = tonumber(ARGV[6])
if rps > 0 then
  local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or burst)
  local at = tonumber(redis.call('HGET', KEYS[1], 'tokens_at') or now)
  tokens = math.min(burst, tokens + math.max(0, now - at) * rps)
  if tokens < 1 then
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'tokens_at', tostring(now))
    return {3, tostring((1 - tokens) / rps), tostring(rps)}
  end
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'tokens_at', tostring(now))
end
local active = tonumber(redis.call('HGET', KEYS[1], 'active') or '0')
if cap >= 0 and active >= cap then
  return {1, tostring(active), tostring(cap)}
end
local available = tonumber(redis.call('HGET', KEYS[1], 'balance'))
  - tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
if available < tonumber(ARGV[2]) then
  return {2, tostring(available)}
end
redis.call('HINCRBY', KEYS[1], 'held', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'active', 1)
note(KEYS[2], KEYS[1], ARGV[8], ARGV[7], 0, tonumber(redis.call('HGET', KEYS[1], 'balance')))
return {0}
"""

#: KEYS[1] the account, KEYS[2] its ledger; ARGV: default balance, price held, charge (1/0),
#: the ledger entry's head, the ledger's size. Releases the hold.
SETTLE = NOTE + """
redis.call('HSETNX', KEYS[1], 'balance', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'held', -tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], 'active', -1)
local amount = 0
if ARGV[3] == '1' then
  amount = -tonumber(ARGV[2])
end
local balance = redis.call('HINCRBY', KEYS[1], 'balance', amount)
note(KEYS[2], KEYS[1], ARGV[5], ARGV[4], amount, balance)
return 1
"""

#: KEYS[1] the account, KEYS[2] its ledger; ARGV: starting balance, ``add`` (micro-USD,
#: added) or ``set`` (the new balance), the ledger entry's head, the ledger's size.
MOVE = NOTE + """
redis.call('HSETNX', KEYS[1], 'balance', ARGV[1])
local amount, balance
if ARGV[2] == 'set' then  -- the integer as given (Lua's numbers are doubles)
  local old = tonumber(redis.call('HGET', KEYS[1], 'balance'))
  redis.call('HSET', KEYS[1], 'balance', ARGV[3])
  balance = tonumber(ARGV[3])
  amount = balance - old
else
  balance = redis.call('HINCRBY', KEYS[1], 'balance', ARGV[3])
  amount = tonumber(ARGV[3])
end
note(KEYS[2], KEYS[1], ARGV[5], ARGV[4], amount, balance)
return 1
"""


def entry_head(now: float, kind: str, job_id: str | None, vendor: str | None,
               note: str) -> str:
    """A ledger entry's JSON up to its amount and balance (:data:`NOTE` adds them): the
    fields of :class:`~emulator.core.billing.LedgerEntry` but those two."""
    return json.dumps({"at": now, "kind": kind, "job_id": job_id, "vendor": vendor,
                       "note": note})[:-1]


def ledger_entry(raw: Any) -> dict[str, Any]:
    """A ledger entry Redis holds as :meth:`~emulator.core.billing.LedgerEntry.to_json`
    shows it (amounts in USD, exact decimal strings)."""
    entry = json.loads(raw)
    return {"at": entry["at"], "kind": entry["kind"],
            "amount_usd": usd_text(from_micro(entry["amount"])),
            "balance_usd": usd_text(from_micro(entry["balance"])),
            "job_id": entry["job_id"], "vendor": entry["vendor"], "note": entry["note"]}


def micro(amount: Decimal) -> int:
    """``amount`` (USD) in micro-USD, rounded half-even."""
    return int((amount * MICRO).to_integral_value(ROUND_HALF_EVEN))


def from_micro(value: Any) -> Decimal:
    """Micro-USD (a Redis reply) as USD."""
    return Decimal(int(value)) / MICRO


@dataclass
class SharedBalance:
    """An account as Redis holds it (USD)."""

    balance_usd: Decimal
    held_usd: Decimal
    active_jobs: int
    #: The rate limit the control plane set for every process; ``None``: each process's own.
    limit: RateLimit | None = None
    #: The newest ledger entries, oldest first (:func:`ledger_entry`'s shape).
    ledger: list[dict[str, Any]] = field(default_factory=list)
    #: Entries dropped from the front of the ledger.
    ledger_dropped: int = 0


class SharedAccounts:
    """The account decisions of :class:`~emulator.core.billing.Billing` on Redis (``client``:
    a ``redis.asyncio`` client). Every method raises ``redis.RedisError`` / ``OSError``
    when Redis cannot be reached."""

    def __init__(self, client: Any, default_balance_usd: Decimal, ledger_size: int) -> None:
        self.client = client
        self.default = micro(default_balance_usd)
        self.ledger_size = ledger_size
        self._settle = client.register_script(SETTLE)
        self._move = client.register_script(MOVE)

    @staticmethod
    def key(api_key: str) -> str:
        """The account's hash."""
        return f"{PREFIX}acct:{api_key}"

    @staticmethod
    def ledger_key(api_key: str) -> str:
        """The account's ledger (a list of JSON entries, oldest first)."""
        return f"{PREFIX}ledger:{api_key}"

    @staticmethod
    def _limit_args(limit: RateLimit) -> tuple[int, float, float]:
        """``(cap, rps, burst)`` as :data:`ADMIT` reads them (-1 / 0: none)."""
        rps = limit.rps or 0.0
        return (-1 if limit.concurrent is None else limit.concurrent, rps,
                limit.burst or max(1.0, rps))

    def admit_call(self, api_key: str, price_usd: Decimal, limit: RateLimit, now: float,
                   start_usd: Decimal | None, job_id: str, vendor: str
                   ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of :data:`ADMIT` (a caller that runs it inside another
        script: :data:`emulator.core.state.shared.ADMIT_AND_WRITE`). ``limit``: this
        process's setting for the key; ``start_usd``: the balance a new account starts with
        (``None``: the default)."""
        cap, rps, burst = self._limit_args(limit)
        start = self.default if start_usd is None else micro(start_usd)
        head = entry_head(now, "hold", job_id, vendor, f"held {usd_text(price_usd)} USD")
        return ([self.key(api_key), self.ledger_key(api_key)],
                [start, micro(price_usd), cap, rps, burst, now, head, self.ledger_size])

    @staticmethod
    def check(reply: Any, price_usd: Decimal) -> None:
        """Raise the refusal :data:`ADMIT` answered, if any (``{0}``: admitted).

        Raises:
            RateLimited: no token (``retry_after``: seconds until one), or ``concurrent``
                jobs already unfinished.
            PaymentRequired: the available balance cannot cover ``price_usd``.
        """
        code = int(reply[0])
        if code == 3:
            rate = float(reply[2])
            raise RateLimited(
                f"rate limit of {rate:g} requests per second exceeded for this key",
                retry_after=max(1.0, float(reply[1])))
        if code == 1:
            raise RateLimited(f"this key already has {int(reply[1])} unfinished jobs "
                              f"(limit {int(reply[2])})", retry_after=1.0)
        if code == 2:
            raise PaymentRequired(f"balance {usd_text(from_micro(reply[1]))} USD cannot cover "
                                  f"{usd_text(price_usd)} USD")

    @property
    def settle_script(self) -> Any:
        """The :data:`SETTLE` script (a ``redis.asyncio`` ``AsyncScript``)."""
        return self._settle

    def settle_call(self, api_key: str, price_usd: Decimal, now: float, job_id: str,
                    vendor: str, *, charge: bool) -> tuple[list[str], list[Any]]:
        """The keys and arguments of :data:`SETTLE` for a job's hold (a caller that
        queues it on a pipeline); its ledger entry as
        :meth:`~emulator.core.billing.Billing.close_job` writes it."""
        head = (entry_head(now, "charge", job_id, vendor, "successful image") if charge
                else entry_head(now, "release", job_id, vendor, "not charged"))
        return ([self.key(api_key), self.ledger_key(api_key)],
                [self.default, micro(price_usd), 1 if charge else 0, head, self.ledger_size])

    @property
    def move_script(self) -> Any:
        """The :data:`MOVE` script (a ``redis.asyncio`` ``AsyncScript``)."""
        return self._move

    def refund_call(self, api_key: str, amount_usd: Decimal, now: float, job_id: str,
                    vendor: str, note: str) -> tuple[list[str], list[Any]]:
        """The keys and arguments of :data:`MOVE` giving back ``amount_usd`` (a charge
        overridden afterwards), with :meth:`~emulator.core.billing.Billing.refund`'s entry."""
        return ([self.key(api_key), self.ledger_key(api_key)],
                [self.default, "add", micro(amount_usd),
                 entry_head(now, "refund", job_id, vendor, note), self.ledger_size])

    async def configure(self, api_key: str, settings: KeySettings, now: float) -> None:
        """Set the balance (with a ledger ``adjust`` entry) and the rate limit for every
        process (the control plane); a new rate limit's bucket starts full, as
        :meth:`~emulator.core.billing.Billing.set_limit` does."""
        if settings.balance_usd is None and settings.limit is None:
            return
        pipe = self.client.pipeline(transaction=True)  # one round trip, all or nothing
        if settings.balance_usd is not None:
            await self._move(keys=[self.key(api_key), self.ledger_key(api_key)], args=[
                self.default, "set", micro(settings.balance_usd),
                entry_head(now, "adjust", None, None, "balance set"), self.ledger_size],
                client=pipe)
        if settings.limit is not None:
            cap, rps, burst = self._limit_args(settings.limit)
            pipe.hset(self.key(api_key), mapping={
                "limit": json.dumps(settings.limit.__dict__), "cap": cap, "rps": rps,
                "burst": burst})
            pipe.hdel(self.key(api_key), "tokens", "tokens_at")
        await pipe.execute()

    async def get(self, api_key: str, start_usd: Decimal | None = None) -> SharedBalance:
        """The account now, with its ledger (a new key: ``start_usd``, else the default
        balance)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.key(api_key), ["balance", "held", "active", "limit", "dropped"])
        pipe.lrange(self.ledger_key(api_key), 0, -1)
        (balance, held, active, limit, dropped), ledger = await pipe.execute()
        start = self.default if start_usd is None else micro(start_usd)
        return SharedBalance(from_micro(balance if balance is not None else start),
                             from_micro(held or 0), int(active or 0),
                             None if limit is None else RateLimit(**json.loads(limit)),
                             [ledger_entry(e) for e in ledger], int(dropped or 0))


__all__ = ["ADMIT", "MOVE", "NOTE", "SETTLE", "SharedAccounts", "SharedBalance", "entry_head",
           "from_micro", "ledger_entry", "micro"]
