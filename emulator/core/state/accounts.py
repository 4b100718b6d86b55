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
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from emulator.core.billing import KeySettings, RateLimit, usd_text
from emulator.core.state.redis import PREFIX
from emulator.errors import PaymentRequired, RateLimited

#: Micro-USD in one USD.
MICRO = Decimal(1_000_000)

#: KEYS[1] the account; ARGV: starting balance, price, concurrency cap (-1: none), rps (0:
#: none), burst, now; the cap, rps and burst the account holds (``limit`` set) win. Returns
#: {0} (held), {1, active, cap} (cap), {2, available} (balance), {3, wait_s, rps} (rate
#: limit).
ADMIT = """
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
return {0}
"""

#: KEYS[1] the account; ARGV: default balance, price held, charge (1/0). Releases the hold.
SETTLE = """
redis.call('HSETNX', KEYS[1], 'balance', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'held', -tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], 'active', -1)
if ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[1], 'balance', -tonumber(ARGV[2]))
end
return 1
"""


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


class SharedAccounts:
    """The account decisions of :class:`~emulator.core.billing.Billing` on Redis (``client``:
    a ``redis.asyncio`` client). Every method raises ``redis.RedisError`` / ``OSError``
    when Redis cannot be reached."""

    def __init__(self, client: Any, default_balance_usd: Decimal) -> None:
        self.client = client
        self.default = micro(default_balance_usd)
        self._settle = client.register_script(SETTLE)

    @staticmethod
    def key(api_key: str) -> str:
        """The account's hash."""
        return f"{PREFIX}acct:{api_key}"

    @staticmethod
    def _limit_args(limit: RateLimit) -> tuple[int, float, float]:
        """``(cap, rps, burst)`` as :data:`ADMIT` reads them (-1 / 0: none)."""
        rps = limit.rps or 0.0
        return (-1 if limit.concurrent is None else limit.concurrent, rps,
                limit.burst or max(1.0, rps))

    def admit_call(self, api_key: str, price_usd: Decimal, limit: RateLimit, now: float,
                   start_usd: Decimal | None = None) -> tuple[list[str], list[Any]]:
        """The keys and arguments of :data:`ADMIT` (a caller that runs it inside another
        script: :data:`emulator.core.state.shared.ADMIT_AND_WRITE`). ``limit``: this
        process's setting for the key; ``start_usd``: the balance a new account starts with
        (``None``: the default)."""
        cap, rps, burst = self._limit_args(limit)
        start = self.default if start_usd is None else micro(start_usd)
        return [self.key(api_key)], [start, micro(price_usd), cap, rps, burst, now]

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

    def settle_call(self, api_key: str, price_usd: Decimal, *, charge: bool
                    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of :data:`SETTLE` for a job's hold (a caller that
        queues it on a pipeline)."""
        return [self.key(api_key)], [self.default, micro(price_usd), 1 if charge else 0]

    async def configure(self, api_key: str, settings: KeySettings) -> None:
        """Set the balance and the rate limit for every process (the control plane); a new
        rate limit's bucket starts full, as :meth:`~emulator.core.billing.Billing.set_limit`
        does."""
        mapping: dict[str, Any] = {}
        if settings.balance_usd is not None:
            mapping["balance"] = micro(settings.balance_usd)
        if settings.limit is not None:
            cap, rps, burst = self._limit_args(settings.limit)
            mapping.update(limit=json.dumps(settings.limit.__dict__), cap=cap, rps=rps,
                           burst=burst)
        if not mapping:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key(api_key), mapping=mapping)
        if settings.limit is not None:
            pipe.hdel(self.key(api_key), "tokens", "tokens_at")
        await pipe.execute()

    async def get(self, api_key: str, start_usd: Decimal | None = None) -> SharedBalance:
        """The account now (a new key: ``start_usd``, else the default balance)."""
        balance, held, active, limit = await self.client.hmget(
            self.key(api_key), ["balance", "held", "active", "limit"])
        start = self.default if start_usd is None else micro(start_usd)
        return SharedBalance(from_micro(balance if balance is not None else start),
                             from_micro(held or 0), int(active or 0),
                             None if limit is None else RateLimit(**json.loads(limit)))


__all__ = ["ADMIT", "SETTLE", "SharedAccounts", "SharedBalance", "from_micro", "micro"]
