"""Per-key accounts: balances in USD with holds and a ledger, and rate limits.

Pricing: $0.018 per successful image at all five vendors (docs/vendors/README.md); system errors
are not charged (Pixazo's ERROR status, docs/vendors/pixazo.md). A job's price is held at submit,
charged when it succeeds and released when it fails, so a balance that runs out in the middle of a
batch answers 402 at the first submit it cannot cover.

Money is exact: every amount (USD) is a :class:`decimal.Decimal` (:func:`usd` makes one from a
float's shortest text, so ``0.018`` is 0.018, not 0.0179999...), and the control plane shows
it as an exact decimal string (:func:`usd_text`: ``"0.022"``, never ``0.022000000000000002``),
as Runflow's ``cost`` already is.

Memory: each account keeps only its newest ``ledger_size`` ledger entries (``Settings.ledger_size``,
10,000 by default); the oldest are dropped first. Balances and holds are running totals kept
on the account, never recomputed from the ledger, so dropping entries leaves them exact.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from emulator.errors import PaymentRequired, RateLimited

#: Ledger entries kept per key unless told otherwise (``Settings.ledger_size``).
DEFAULT_LEDGER_SIZE = 10_000

ZERO = Decimal(0)
#: Bounds of an amount (USD), so its exact text (:func:`usd_text`) stays short: below 10**16
#: (refused past it), kept to 18 decimal places (rounded half-even past them: ``5e-324`` is 0).
MAX_USD_DIGITS = 15
MAX_USD_PLACES = 18


def usd(value: Decimal | float | int | str) -> Decimal:
    """An amount in USD as an exact :class:`~decimal.Decimal`: a float by its shortest text
    (``0.018`` -> ``Decimal("0.018")``), an int or a decimal string as it is; past
    :data:`MAX_USD_PLACES` decimal places it is rounded to them.

    Raises:
        ValueError: a bool, text that is not a decimal number, a value that is not finite, or
            one of 10**16 or more (:data:`MAX_USD_DIGITS`).
    """
    if isinstance(value, bool):
        raise ValueError(f"not an amount: {value!r}")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(
            repr(value) if isinstance(value, float) else value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"not an amount: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    if amount and amount.adjusted() > MAX_USD_DIGITS:
        raise ValueError(f"an amount has at most {MAX_USD_DIGITS + 1} digits before the point, "
                         f"got {value!r}")
    if int(amount.as_tuple().exponent) < -MAX_USD_PLACES:
        amount = amount.quantize(Decimal(1).scaleb(-MAX_USD_PLACES))
    return amount


def usd_text(amount: Decimal) -> str:
    """``amount`` as an exact decimal string, no exponent, no trailing zeros: ``"0.022"``,
    ``"1000"``, ``"-0.018"``, ``"0"`` (the control plane's and Runflow's ``cost`` form)."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


@dataclass
class LedgerEntry:
    """One movement on an account (amounts in USD). ``amount_usd`` is negative for a charge."""

    at: float
    kind: str
    amount_usd: Decimal
    balance_usd: Decimal
    job_id: str | None = None
    vendor: str | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; amounts as exact decimal strings (:func:`usd_text`)."""
        out = dict(self.__dict__)
        out["amount_usd"] = usd_text(self.amount_usd)
        out["balance_usd"] = usd_text(self.balance_usd)
        return out


@dataclass
class RateLimit:
    """Limits for one key. ``None`` means unlimited.

    Attributes:
        rps: sustained requests per second (token bucket refill rate).
        burst: bucket size (requests); defaults to ``max(1, rps)``.
        concurrent: jobs that may be unfinished at once.
    """

    rps: float | None = None
    burst: float | None = None
    concurrent: int | None = None


def _new_ledger(size: int = DEFAULT_LEDGER_SIZE) -> deque[LedgerEntry]:
    return deque(maxlen=size)


@dataclass
class Account:
    """A key's balance (USD), holds, ledger, rate limit and live-job count.

    Attributes:
        ledger: the newest entries, oldest first; a bounded deque (its ``maxlen`` is the
            :class:`Billing`'s ``ledger_size``), so the oldest entry is dropped when a new one
            would exceed it.
        ledger_dropped: entries dropped from the front of ``ledger`` since the account was
            made (0 while the ledger is complete).
    """

    key: str
    balance_usd: Decimal
    held_usd: Decimal = ZERO
    ledger: deque[LedgerEntry] = field(default_factory=_new_ledger)
    ledger_dropped: int = 0
    limit: RateLimit = field(default_factory=RateLimit)
    tokens: float = math.inf
    tokens_at: float = 0.0
    active_jobs: int = 0

    @property
    def available_usd(self) -> Decimal:
        """Balance less holds for unfinished jobs."""
        return self.balance_usd - self.held_usd

    def record(self, entry: LedgerEntry) -> None:
        """Append ``entry`` to the ledger, dropping (and counting) the oldest past its size."""
        if self.ledger.maxlen is not None and len(self.ledger) >= self.ledger.maxlen:
            self.ledger_dropped += 1
        self.ledger.append(entry)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready view for ``GET /_emulator/keys/{key}``."""
        return {
            "key": self.key,
            "balance_usd": usd_text(self.balance_usd),
            "held_usd": usd_text(self.held_usd),
            "available_usd": usd_text(self.available_usd),
            "active_jobs": self.active_jobs,
            "limits": dict(self.limit.__dict__),
            "ledger": [e.to_json() for e in self.ledger],
            "ledger_dropped": self.ledger_dropped,
        }


@dataclass(frozen=True)
class KeySettings:
    """What the admin API or a scenario sets for a key (or for every new key).

    Attributes:
        balance_usd: the balance to set, USD; ``None``: unchanged.
        limit: the rate limit to set (replacing the old one); ``None``: unchanged.
    """

    balance_usd: Decimal | None = None
    limit: RateLimit | None = None


KEY_FIELDS = ("balance_usd", "rps", "burst", "concurrent")
#: The largest balance (USD, either sign) a key can be given.
MAX_BALANCE_USD = 1e12


def parse_key_settings(body: Mapping[str, Any]) -> KeySettings:
    """``{balance_usd?, rps?, burst?, concurrent?}`` (numbers) into :class:`KeySettings`;
    ``balance_usd`` becomes an exact :class:`~decimal.Decimal` (:func:`usd`).

    Giving any of ``rps``, ``burst``, ``concurrent`` replaces the whole rate limit (the ones
    left out become unlimited).

    Raises:
        ValueError: an unknown field, or a value that is not a finite number (``rps``,
            ``burst``, ``concurrent`` must be >= 0; ``concurrent`` an integer).
    """
    unknown = sorted(str(k) for k in body if k not in KEY_FIELDS)
    if unknown:
        raise ValueError(f"unknown key setting {unknown[0]!r}; known: {', '.join(KEY_FIELDS)}")
    values: dict[str, float | None] = {}
    for name in KEY_FIELDS:
        value = body.get(name)
        if value is None:
            values[name] = None
            continue
        try:
            finite = (not isinstance(value, bool) and isinstance(value, (int, float))
                      and math.isfinite(value))
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite:
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        if name != "balance_usd" and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
        if name == "balance_usd" and abs(value) > MAX_BALANCE_USD:
            raise ValueError(f"balance_usd must be between -{MAX_BALANCE_USD:g} and "
                             f"{MAX_BALANCE_USD:g}, got {value!r}")
        values[name] = float(value)
    concurrent = values["concurrent"]
    if concurrent is not None and concurrent != int(concurrent):
        raise ValueError(f"concurrent must be an integer, got {concurrent!r}")
    limit = None
    if any(name in body for name in ("rps", "burst", "concurrent")):
        limit = RateLimit(rps=values["rps"], burst=values["burst"],
                          concurrent=None if concurrent is None else int(concurrent))
    balance = values["balance_usd"]
    return KeySettings(None if balance is None else usd(body["balance_usd"]), limit)


class Billing:
    """All accounts, created on first use with ``default_balance_usd``. Thread-safe.

    Each account's ledger keeps at most ``ledger_size`` entries (0: none), the oldest dropped
    first; balances (USD) do not depend on it.

    Raises:
        ValueError: ``ledger_size`` is negative.
    """

    def __init__(self, default_balance_usd: Decimal | float, *,
                 ledger_size: int = DEFAULT_LEDGER_SIZE) -> None:
        if ledger_size < 0:
            raise ValueError(f"ledger_size must be >= 0, got {ledger_size!r}")
        self.ledger_size = ledger_size
        self.default_balance_usd = usd(default_balance_usd)
        self._initial_balance_usd = self.default_balance_usd
        self.default_limit = RateLimit()
        self._accounts: dict[str, Account] = {}
        self._lock = threading.Lock()
        #: Goes up with every change (a state store saves the accounts when it moved).
        self.version = 0

    def account(self, key: str) -> Account:
        """The key's account (created if new)."""
        with self._lock:
            return self._get(key)

    def _get(self, key: str) -> Account:
        acct = self._accounts.get(key)
        if acct is None:
            acct = Account(key=key, balance_usd=self.default_balance_usd,
                           ledger=_new_ledger(self.ledger_size),
                           limit=RateLimit(**self.default_limit.__dict__))
            self._accounts[key] = acct
        return acct

    def set_balance(self, key: str, amount_usd: Decimal | float, now: float) -> Account:
        """Set a key's balance to ``amount_usd`` (a ledger ``adjust`` entry records the
        change)."""
        amount = usd(amount_usd)
        with self._lock:
            self.version += 1
            acct = self._get(key)
            delta = amount - acct.balance_usd
            acct.balance_usd = amount
            acct.record(LedgerEntry(now, "adjust", delta, amount, note="balance set"))
            return acct

    def set_limit(self, key: str, limit: RateLimit) -> Account:
        """Replace a key's rate limit (the bucket starts full)."""
        with self._lock:
            self.version += 1
            acct = self._get(key)
            acct.limit = limit
            acct.tokens = math.inf
            return acct

    def throttle(self, key: str, now: float) -> None:
        """Take one token from the key's bucket.

        Raises:
            RateLimited: the bucket is empty; ``retry_after`` is the seconds until a token.
        """
        with self._lock:
            self.version += 1
            acct = self._get(key)
            rps = acct.limit.rps
            if rps is None or rps <= 0:
                return
            burst = acct.limit.burst or max(1.0, rps)
            if acct.tokens == math.inf:
                acct.tokens, acct.tokens_at = burst, now
            acct.tokens = min(burst, acct.tokens + (now - acct.tokens_at) * rps)
            acct.tokens_at = now
            if acct.tokens < 1.0:
                wait = (1.0 - acct.tokens) / rps
                raise RateLimited(
                    f"rate limit of {rps:g} requests per second exceeded for this key",
                    retry_after=max(1.0, math.ceil(wait)),
                )
            acct.tokens -= 1.0

    def open_job(self, key: str, price_usd: Decimal, now: float, job_id: str, vendor: str
                 ) -> None:
        """Hold a job's price and count it as live.

        Raises:
            RateLimited: the key already has ``concurrent`` unfinished jobs.
            PaymentRequired: the available balance is below ``price_usd``.
        """
        with self._lock:
            self.version += 1
            acct = self._get(key)
            cap = acct.limit.concurrent
            if cap is not None and acct.active_jobs >= cap:
                raise RateLimited(
                    f"this key already has {acct.active_jobs} unfinished jobs (limit {cap})",
                    retry_after=1.0,
                )
            if acct.available_usd < price_usd:
                raise PaymentRequired(
                    f"balance {usd_text(acct.available_usd)} USD cannot cover "
                    f"{usd_text(price_usd)} USD"
                )
            acct.held_usd += price_usd
            acct.active_jobs += 1
            acct.record(LedgerEntry(now, "hold", ZERO, acct.balance_usd, job_id, vendor,
                                    f"held {usd_text(price_usd)} USD"))

    def close_job(self, key: str, price_usd: Decimal, now: float, job_id: str, vendor: str,
                  *, charge: bool) -> None:
        """Release the hold; charge ``price_usd`` when ``charge`` (a successful image)."""
        with self._lock:
            self.version += 1
            acct = self._get(key)
            acct.held_usd = max(ZERO, acct.held_usd - price_usd)
            acct.active_jobs = max(0, acct.active_jobs - 1)
            if charge:
                acct.balance_usd -= price_usd
                acct.record(LedgerEntry(now, "charge", -price_usd, acct.balance_usd,
                                        job_id, vendor, "successful image"))
            else:
                acct.record(LedgerEntry(now, "release", ZERO, acct.balance_usd, job_id,
                                        vendor, "not charged"))

    def refund(self, key: str, amount_usd: Decimal, now: float, job_id: str, vendor: str,
               note: str) -> None:
        """Give back a charge (a job whose success was overridden afterwards)."""
        with self._lock:
            self.version += 1
            acct = self._get(key)
            acct.balance_usd += amount_usd
            acct.record(LedgerEntry(now, "refund", amount_usd, acct.balance_usd, job_id,
                                    vendor, note))

    def configure(self, key: str, settings: KeySettings, now: float) -> Account:
        """Apply :class:`KeySettings` to one key (balance through :meth:`set_balance`)."""
        if settings.balance_usd is not None:
            self.set_balance(key, settings.balance_usd, now)
        if settings.limit is not None:
            self.set_limit(key, settings.limit)
        return self.account(key)

    def set_defaults(self, settings: KeySettings) -> None:
        """Balance and rate limit of keys first seen from now on (until :meth:`reset`)."""
        with self._lock:
            self.version += 1
            if settings.balance_usd is not None:
                self.default_balance_usd = settings.balance_usd
            if settings.limit is not None:
                self.default_limit = RateLimit(**settings.limit.__dict__)

    def dump(self) -> dict[str, Any]:
        """Every account and the defaults as JSON values (for a state store; thread-safe).

        Shape: ``{"default_balance_usd", "default_limit": {rps, burst, concurrent},
        "accounts": [{key, balance_usd, held_usd, ledger: [entry...], ledger_dropped, limit,
        tokens, tokens_at, active_jobs}]}``; an infinite token count is ``null``.
        """
        with self._lock:
            accounts = [(a, list(a.ledger)) for a in self._accounts.values()]
            out: dict[str, Any] = {
                "default_balance_usd": usd_text(usd(self.default_balance_usd)),
                "default_limit": dict(self.default_limit.__dict__)}
        out["accounts"] = [{
            "key": a.key, "balance_usd": usd_text(a.balance_usd),
            "held_usd": usd_text(a.held_usd),
            "ledger": [e.to_json() for e in ledger], "ledger_dropped": a.ledger_dropped,
            "limit": dict(a.limit.__dict__),
            "tokens": None if a.tokens == math.inf else a.tokens, "tokens_at": a.tokens_at,
            "active_jobs": a.active_jobs} for a, ledger in accounts]
        return out

    def load(self, doc: Mapping[str, Any]) -> None:
        """Replace every account with those of :meth:`dump`'s ``doc`` (amounts are exact
        decimal strings there)."""
        with self._lock:
            self.version += 1
            self.default_balance_usd = usd(doc["default_balance_usd"])
            self.default_limit = RateLimit(**doc["default_limit"])
            self._accounts.clear()
            for a in doc["accounts"]:
                ledger = _new_ledger(self.ledger_size)
                ledger.extend(LedgerEntry(**{**e, "amount_usd": usd(e["amount_usd"]),
                                              "balance_usd": usd(e["balance_usd"])})
                              for e in a["ledger"])
                self._accounts[a["key"]] = Account(
                    key=a["key"], balance_usd=usd(a["balance_usd"]),
                    held_usd=usd(a["held_usd"]),
                    ledger=ledger, ledger_dropped=a["ledger_dropped"],
                    limit=RateLimit(**a["limit"]),
                    tokens=math.inf if a["tokens"] is None else a["tokens"],
                    tokens_at=a["tokens_at"], active_jobs=a["active_jobs"])

    def reset(self) -> None:
        """Forget every account; defaults go back to the start-up balance, no limits."""
        with self._lock:
            self.version += 1
            self._accounts.clear()
            self.default_limit = RateLimit()
            self.default_balance_usd = self._initial_balance_usd
