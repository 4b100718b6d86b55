"""Scenario files: validation before anything changes, keys and rules applied in order."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from emulator.core import scenarios
from emulator.core.billing import Billing
from emulator.core.faults import FaultRules

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios"
CATALOG = {"pixazo": ["submit", "status"], "apiframe": ["submit", "status"]}


def test_shipped_scenarios_are_valid() -> None:
    files = sorted(FIXTURES.glob("*.yaml"))
    assert len(files) >= 3
    for path in files:
        scenario = scenarios.load_file(path, FaultRules(CATALOG))
        assert scenario.name == path.stem and scenario.description
        assert scenario.keys or scenario.rules


def test_apply_sets_keys_defaults_and_rules_in_order() -> None:
    faults, billing = FaultRules(CATALOG), Billing(1000.0)
    faults.add({"status": 500, "api_key": "nobody"})
    data = scenarios.read_text("""
name: demo
defaults: {balance_usd: 0.5}
keys:
  poor: {balance_usd: 0.01}
  slow: {rps: 2, concurrent: 1}
steps:
  - {operation: submit, status: 429, times: 1}
  - {vendor: pixazo, job: stuck}
""")
    scenario = scenarios.parse(data, faults)
    rules = scenarios.apply(scenario, faults, billing, now=0.0)
    assert [r.id for r in rules] == ["f2", "f3"]
    assert [r.source for r in rules] == ["scenario:demo", "scenario:demo"]
    assert billing.account("poor").balance_usd == Decimal("0.01")
    assert billing.account("slow").limit.concurrent == 1
    assert billing.account("anyone").balance_usd == Decimal("0.5")
    billing.reset()
    assert billing.account("anyone").balance_usd == 1000


@pytest.mark.parametrize(("text", "message"), [
    ("- a list", "a scenario must be a mapping"),
    ("name: x\nsurprise: 1", "unknown scenario field 'surprise'"),
    ("faults: [{status: 429}]\nsteps: []", "either faults or steps"),
    ("keys: {k: {balance_usd: cheap}}", "keys.k: balance_usd must be a finite number"),
    ("keys: {k: {rps: -1}}", "keys.k: rps must be >= 0"),
    ("keys: {k: {colour: red}}", "keys.k: unknown key setting 'colour'"),
    ("faults: [{status: 429}, {vendor: pixazo, operation: cancel, status: 500}]",
     "faults[1]: vendor 'pixazo' has no operation 'cancel'"),
    ("faults: {status: 429}", "faults must be a list"),
    ("name: [1", "not valid YAML"),
])
def test_bad_scenarios_change_nothing(text: str, message: str) -> None:
    faults = FaultRules(CATALOG)
    with pytest.raises(scenarios.ScenarioError) as caught:
        scenarios.parse(scenarios.read_text(text), faults)
    assert message in str(caught.value)
    assert faults.rules() == []


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(scenarios.ScenarioError, match=r"missing\.yaml"):
        scenarios.load_file(tmp_path / "missing.yaml", FaultRules(CATALOG))
