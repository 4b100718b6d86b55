"""Balances, holds, charges and rate limits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from emulator.core.billing import (
    DEFAULT_LEDGER_SIZE,
    Billing,
    RateLimit,
    parse_key_settings,
    usd,
    usd_text,
)
from emulator.errors import PaymentRequired, RateLimited
from emulator.settings import Settings

PRICE = Decimal("0.018")


def test_hold_then_charge_and_release() -> None:
    billing = Billing(default_balance_usd=0.05)
    billing.open_job("k", PRICE, 0.0, "a", "pixazo")
    billing.open_job("k", PRICE, 0.0, "b", "pixazo")
    with pytest.raises(PaymentRequired):
        billing.open_job("k", PRICE, 0.0, "c", "pixazo")
    billing.close_job("k", PRICE, 1.0, "a", "pixazo", charge=True)
    billing.close_job("k", PRICE, 1.0, "b", "pixazo", charge=False)
    acct = billing.account("k")
    assert acct.balance_usd == Decimal("0.032")
    assert acct.held_usd == 0
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
    billing.open_job("k", PRICE, 0.0, "a", "v")
    with pytest.raises(RateLimited):
        billing.open_job("k", PRICE, 0.0, "b", "v")
    billing.close_job("k", PRICE, 0.0, "a", "v", charge=True)
    billing.open_job("k", PRICE, 0.0, "b", "v")


def _run_jobs(billing: Billing, n: int, key: str = "k") -> None:
    """``n`` jobs on ``key``: every other one charged, the rest released (two entries each)."""
    for i in range(n):
        billing.open_job(key, PRICE, float(i), f"j{i}", "pixazo")
        billing.close_job(key, PRICE, float(i), f"j{i}", "pixazo", charge=i % 2 == 0)


def test_ledger_keeps_only_the_newest_entries_and_balances_stay_exact() -> None:
    billing = Billing(default_balance_usd=10.0, ledger_size=10)
    billing.set_balance("k", 100.0, 0.0)  # an "adjust" entry, soon dropped
    _run_jobs(billing, 100)
    acct = billing.account("k")
    assert len(acct.ledger) == 10
    assert acct.ledger_dropped == 1 + 2 * 100 - 10
    assert [e.job_id for e in acct.ledger][-2:] == ["j99", "j99"]
    assert [e.kind for e in acct.ledger][-2:] == ["hold", "release"]
    # Balances are running totals, not sums of the (truncated) ledger.
    assert acct.balance_usd == Decimal("99.1")  # 100 - 50 * 0.018, exactly
    assert acct.held_usd == 0
    assert acct.active_jobs == 0
    assert acct.ledger[-1].balance_usd == acct.balance_usd
    view = acct.to_json()
    assert len(view["ledger"]) == 10 and view["ledger_dropped"] == acct.ledger_dropped


def test_ledger_is_bounded_by_default() -> None:
    billing = Billing(default_balance_usd=1e6)
    _run_jobs(billing, DEFAULT_LEDGER_SIZE // 2 + 500)
    acct = billing.account("k")
    assert DEFAULT_LEDGER_SIZE == Settings().ledger_size == 10_000
    assert len(acct.ledger) == DEFAULT_LEDGER_SIZE
    assert acct.ledger_dropped == 1000


def test_ledger_size_is_per_key_survives_reset_and_zero_keeps_none() -> None:
    billing = Billing(default_balance_usd=10.0, ledger_size=4)
    _run_jobs(billing, 5, key="a")
    _run_jobs(billing, 1, key="b")
    assert len(billing.account("a").ledger) == 4
    assert len(billing.account("b").ledger) == 2
    billing.reset()
    _run_jobs(billing, 5, key="a")
    assert len(billing.account("a").ledger) == 4
    none = Billing(default_balance_usd=10.0, ledger_size=0)
    _run_jobs(none, 3)
    acct = none.account("k")
    assert list(acct.ledger) == [] and acct.ledger_dropped == 6
    assert acct.balance_usd == Decimal("9.964")
    with pytest.raises(ValueError):
        Billing(default_balance_usd=10.0, ledger_size=-1)


def test_ledger_size_from_the_environment() -> None:
    assert Settings.from_env({}).ledger_size == 10_000
    assert Settings.from_env({"RMBG_EMULATOR_LEDGER_SIZE": "250"}).ledger_size == 250
    assert Settings.from_env({"RMBG_EMULATOR_LEDGER_SIZE": "0"}).ledger_size == 0
    with pytest.raises(ValueError):
        Settings.from_env({"RMBG_EMULATOR_LEDGER_SIZE": "-1"})
    with pytest.raises(ValueError):
        Settings.from_env({"RMBG_EMULATOR_LEDGER_SIZE": "many"})


def test_engine_billing_takes_ledger_size_from_settings() -> None:
    from emulator.core.clock import Clock
    from emulator.core.jobs import JobEngine
    from emulator.matte.grabcut import GrabCutEngine

    settings = Settings.from_env({"RMBG_EMULATOR_LEDGER_SIZE": "3"})
    engine = JobEngine(settings, clock=Clock(), matte=GrabCutEngine)
    _run_jobs(engine.billing, 5)
    assert len(engine.billing.account("k").ledger) == 3


def test_amounts_are_exact_decimals_shown_as_exact_strings() -> None:
    billing = Billing(default_balance_usd=1000.0)
    billing.configure("k", parse_key_settings({"balance_usd": 0.04}), 0.0)
    billing.open_job("k", PRICE, 1.0, "a", "pixazo")
    billing.close_job("k", PRICE, 2.0, "a", "pixazo", charge=True)
    acct = billing.account("k")
    assert acct.balance_usd == Decimal("0.022")  # a float ledger said 0.022000000000000002
    view = acct.to_json()
    assert (view["balance_usd"], view["held_usd"], view["available_usd"]) == ("0.022", "0", "0.022")
    assert [(e["kind"], e["amount_usd"], e["balance_usd"]) for e in view["ledger"]] == [
        ("adjust", "-999.96", "0.04"), ("hold", "0", "0.04"), ("charge", "-0.018", "0.022")]
    assert view["ledger"][1]["note"] == "held 0.018 USD"
    assert billing.account("other").to_json()["balance_usd"] == "1000"


@pytest.mark.parametrize(("value", "text"), [
    (0.018, "0.018"), (0.1, "0.1"), (1000, "1000"), (1e12, "1000000000000"), ("0.0230", "0.023"),
    (-0.018, "-0.018"), (0, "0"), (Decimal("-0.000"), "0"), (Decimal("1E+3"), "1000"),
    (0.1 + 0.2, "0.30000000000000004"), ("0E-999999", "0"), ("1e-9999999999", "0"),
    (5e-324, "0"), ("0.0000000000000000015", "0.000000000000000002")])
def test_usd_and_its_text(value: Decimal | float | str, text: str) -> None:
    assert usd_text(usd(value)) == text


@pytest.mark.parametrize("value", [True, "lots", float("nan"), float("inf"), "1e9999999999",
                                   1e16])
def test_usd_refuses_what_is_not_an_amount(value: object) -> None:
    with pytest.raises(ValueError):
        usd(value)  # type: ignore[arg-type]
