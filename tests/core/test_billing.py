"""Balances, holds, charges and rate limits."""

from __future__ import annotations

import pytest

from emulator.core.billing import Billing, RateLimit
from emulator.errors import PaymentRequired, RateLimited


def test_hold_then_charge_and_release() -> None:
    billing = Billing(default_balance_usd=0.05)
    billing.open_job("k", 0.018, 0.0, "a", "pixazo")
    billing.open_job("k", 0.018, 0.0, "b", "pixazo")
    with pytest.raises(PaymentRequired):
        billing.open_job("k", 0.018, 0.0, "c", "pixazo")
    billing.close_job("k", 0.018, 1.0, "a", "pixazo", charge=True)
    billing.close_job("k", 0.018, 1.0, "b", "pixazo", charge=False)
    acct = billing.account("k")
    assert acct.balance_usd == pytest.approx(0.032)
    assert acct.held_usd == pytest.approx(0.0)
    assert [e.kind for e in acct.ledger] == ["hold", "hold", "charge", "release"]


def test_token_bucket_and_retry_after() -> None:
    billing = Billing(default_balance_usd=1.0)
    billing.set_limit("k", RateLimit(rps=2.0, burst=2.0))
    billing.throttle("k", 10.0)
    billing.throttle("k", 10.0)
    with pytest.raises(RateLimited) as caught:
        billing.throttle("k", 10.0)
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1
    billing.throttle("k", 10.6)  # refilled by 1.2 tokens


def test_concurrency_cap() -> None:
    billing = Billing(default_balance_usd=1.0)
    billing.set_limit("k", RateLimit(concurrent=1))
    billing.open_job("k", 0.018, 0.0, "a", "v")
    with pytest.raises(RateLimited):
        billing.open_job("k", 0.018, 0.0, "b", "v")
    billing.close_job("k", 0.018, 0.0, "a", "v", charge=True)
    billing.open_job("k", 0.018, 0.0, "b", "v")
