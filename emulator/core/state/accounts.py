"""Balances, holds and rate-limit tokens shared by every process on one Redis (``--store
redis://``): each decision is one Lua script, run atomically by Redis, never a
read-modify-write in a process.

An account is the hash ``rmbg:acct:<key>``: ``balance`` and ``held`` in **micro-USD**
(integers: 0.018 USD is 18000; amounts are rounded to 6 decimal places), ``active`` (jobs
not yet ended), ``tokens`` and ``tokens_at`` (the token bucket, as
:meth:`emulator.core.billing.Billing.throttle` keeps it). A key seen for the first time
starts with the default balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from emulator.core.billing import RateLimit, usd_text
from emulator.core.state.redis import PREFIX
from emulator.errors import PaymentRequired, RateLimited

#: Micro-USD in one USD.
MICRO = Decimal(1_000_000)

#: KEYS[1] the account; ARGV: default balance, price, concurrency cap (-1: none), rps (0:
#: none), burst, now. Returns {0} (held), {1, active} (cap), {2, available} (balance),
#: {3, wait_s} (rate limit).
ADMIT = """
redis.call('HSETNX', KEYS[1], 'balance', ARGV[1])
local rps = tonumber(ARGV[4])
local now = tonumber(ARGV[6])
if rps > 0 then
  local burst = tonumber(ARGV[5])
  local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or burst)
  local at = tonumber(redis.call('HGET', KEYS[1], 'tokens_at') or now)
  tokens = math.min(burst, tokens + math.max(0, now - at) * rps)
  if tokens < 1 then
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'tokens_at', tostring(now))
    return {3, tostring((1 - tokens) / rps)}
  end
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'tokens_at', tostring(now))
end
local cap = tonumber(ARGV[3])
local active = tonumber(redis.call('HGET', KEYS[1], 'active') or '0')
if cap >= 0 and active >= cap then
  return {1, tostring(active)}
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


class SharedAccounts:
    """The account decisions of :class:`~emulator.core.billing.Billing` on Redis (``client``:
    a ``redis.asyncio`` client). Every method raises ``redis.RedisError`` / ``OSError``
    when Redis cannot be reached."""

    def __init__(self, client: Any, default_balance_usd: Decimal) -> None:
        self.client = client
        self.default = micro(default_balance_usd)
        self._admit = client.register_script(ADMIT)
        self._settle = client.register_script(SETTLE)

    @staticmethod
    def key(api_key: str) -> str:
        """The account's hash."""
        return f"{PREFIX}acct:{api_key}"

    def admit_call(self, api_key: str, price_usd: Decimal, limit: RateLimit, now: float
                   ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of :data:`ADMIT` (a caller that runs it inside another
        script: :data:`emulator.core.state.shared.ADMIT_AND_WRITE`)."""
        rps = limit.rps or 0.0
        burst = limit.burst or max(1.0, rps)
        cap = -1 if limit.concurrent is None else limit.concurrent
        return [self.key(api_key)], [self.default, micro(price_usd), cap, rps, burst, now]

    @staticmethod
    def check(reply: Any, price_usd: Decimal, limit: RateLimit) -> None:
        """Raise the refusal :data:`ADMIT` answered, if any (``{0}``: admitted).

        Raises:
            RateLimited: no token (``retry_after``: seconds until one), or ``concurrent``
                jobs already unfinished.
            PaymentRequired: the available balance cannot cover ``price_usd``.
        """
        code = int(reply[0])
        if code == 3:
            rate = float(limit.rps or 0.0)
            raise RateLimited(
                f"rate limit of {rate:g} requests per second exceeded for this key",
                retry_after=max(1.0, float(reply[1])))
        if code == 1:
            raise RateLimited(f"this key already has {int(reply[1])} unfinished jobs "
                              f"(limit {limit.concurrent})", retry_after=1.0)
        if code == 2:
            raise PaymentRequired(f"balance {usd_text(from_micro(reply[1]))} USD cannot cover "
                                  f"{usd_text(price_usd)} USD")

    async def admit(self, api_key: str, price_usd: Decimal, limit: RateLimit,
                    now: float) -> None:
        """Take a token, check the concurrency cap, hold ``price_usd``: all or nothing.

        Raises:
            RateLimited: no token (``retry_after``: seconds until one), or ``concurrent``
                jobs already unfinished.
            PaymentRequired: the available balance cannot cover ``price_usd``.
        """
        keys, args = self.admit_call(api_key, price_usd, limit, now)
        self.check(await self._admit(keys=keys, args=args), price_usd, limit)

    @property
    def settle_script(self) -> Any:
        """The :data:`SETTLE` script (a ``redis.asyncio`` ``AsyncScript``)."""
        return self._settle

    def settle_call(self, api_key: str, price_usd: Decimal, *, charge: bool
                    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of :data:`SETTLE` for a job's hold (a caller that
        queues it on a pipeline)."""
        return [self.key(api_key)], [self.default, micro(price_usd), 1 if charge else 0]

    async def settle(self, api_key: str, price_usd: Decimal, *, charge: bool) -> None:
        """Release a job's hold; charge its price when ``charge``."""
        keys, args = self.settle_call(api_key, price_usd, charge=charge)
        await self._settle(keys=keys, args=args)

    async def refund(self, api_key: str, amount_usd: Decimal) -> None:
        """Give back ``amount_usd`` (a charge overridden afterwards)."""
        await self.client.hincrby(self.key(api_key), "balance", micro(amount_usd))

    async def set_balance(self, api_key: str, amount_usd: Decimal) -> None:
        """Set the balance (the control plane)."""
        await self.client.hset(self.key(api_key), "balance", micro(amount_usd))

    async def get(self, api_key: str) -> SharedBalance:
        """The account now (a new key: the default balance)."""
        balance, held, active = await self.client.hmget(
            self.key(api_key), ["balance", "held", "active"])
        return SharedBalance(from_micro(balance if balance is not None else self.default),
                             from_micro(held or 0), int(active or 0))


__all__ = ["ADMIT", "SETTLE", "SharedAccounts", "SharedBalance", "from_micro", "micro"]
