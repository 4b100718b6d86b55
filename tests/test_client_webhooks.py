"""Client property tests, third slice: webhook behaviours (``webhook`` family, drawn only when
named): a client that asks for a callback and falls back to polling rides them out; one that
waits only for the callback is caught with a single dropped delivery."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

import buggy_clients
from emulator.core import scenarios
from emulator.testing.behaviours import FAMILIES, WEBHOOK_KINDS, Behaviour, behaviours
from emulator.testing.clientcheck import ClientPropertyRunner
from tests.test_client_properties import FAULT_RULES, shrunk_rules

# Real clock: deliveries (and a delay) run on the emulator's clock, the receiver on real time.
REAL = pytest.mark.rmbg_emulator(progression="polls:1", engine="grabcut")


def test_webhook_behaviours_are_drawn_only_when_named() -> None:
    assert "webhook" not in FAMILIES
    seen: set[str] = set()

    @settings(max_examples=40, deadline=None, derandomize=True, database=None)
    @given(behaviour=behaviours("pixazo", families=("webhook",)))
    def check(behaviour: Behaviour) -> None:
        assert behaviour.recoverable
        scenarios.parse(scenarios.read_text(behaviour.to_scenario_yaml()), FAULT_RULES)
        for rule in behaviour.rules:
            assert set(rule) == {"vendor", "webhook", "times"}
            seen.add(rule["webhook"])

    check()
    assert seen == set(WEBHOOK_KINDS)


@REAL
def test_a_webhook_client_that_falls_back_to_polling_passes(
        client_properties: ClientPropertyRunner) -> None:
    client_properties.check("pixazo", buggy_clients.remover(None, 8.0, webhook=True),
                            max_examples=6, families=("webhook",), deadline_s=8.0)


@REAL
def test_a_client_that_only_waits_for_the_webhook_is_caught(
        client_properties: ClientPropertyRunner) -> None:
    with pytest.raises(AssertionError) as caught:
        client_properties.check("pixazo", buggy_clients.remover("webhook-only", 3.0),
                                max_examples=15, families=("webhook",), deadline_s=3.0,
                                shrink_s=20.0)
    message = str(caught.value)
    assert "the client failed on a recoverable behaviour (ClientError: no webhook came)" \
        in message
    assert shrunk_rules(message) == [{"vendor": "pixazo", "webhook": "drop", "times": 1}], \
        message
