"""Client property tests, third slice: job paths from the contracts' status enums
(``job-path``, ``job-end``), the robust client riding them out on every vendor and the naive
client caught looping on a failure word it does not know."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

import naive_client
from emulator.core import scenarios
from emulator.testing.behaviours import Behaviour, behaviours, status_words
from emulator.testing.clientcheck import ClientPropertyRunner
from emulator.testing.plugin import EmulatorHandle
from tests.test_client_properties import FAST, FAULT_RULES, robust_client, shrunk_rules

VENDORS = ["apiframe", "bria", "fal", "gmicloud", "pixazo", "runflow"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_job_paths_come_from_the_contract(vendor: str) -> None:
    words = status_words(vendor)
    seen: set[str] = set()

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(behaviour=behaviours(vendor, families=("job-path", "job-end")))
    def check(behaviour: Behaviour) -> None:
        scenarios.parse(scenarios.read_text(behaviour.to_scenario_yaml()), FAULT_RULES)
        jobbed = [r for r in behaviour.rules if {"job", "word", "polls"} & set(r)]
        assert len(jobbed) <= 1
        for rule in jobbed:
            if "word" in rule:
                assert rule["word"] in words
                seen.add(rule["word"])
            stuck_or_failed = rule.get("job") in ("stuck", "failed", "error", "expired")
            assert behaviour.recoverable is not stuck_or_failed, behaviour.describe()
            if rule.get("job") in ("failed", "error"):
                assert words[rule["word"]].terminal

    check()
    # every failure word of the enum is drawn (pixazo: ERROR and FAILED)
    failures = {w for w, m in words.items() if m.terminal and m.value != "succeeded"}
    assert failures <= seen


def test_partial_succeeded_is_a_success() -> None:
    # Runflow's partial_succeeded: the run has its one output, so the behaviour is recoverable
    labels = set()

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(behaviour=behaviours("runflow", families=("job-path",)))
    def check(behaviour: Behaviour) -> None:
        if any(r.get("word") == "partial_succeeded" for r in behaviour.rules):
            labels.add(behaviour.recoverable)

    check()
    assert labels == {True}


@FAST
@pytest.mark.parametrize("vendor", VENDORS)
def test_robust_client_rides_out_every_job_path(vendor: str,
                                                client_properties: ClientPropertyRunner,
                                                rmbg_emulator: EmulatorHandle) -> None:
    client_properties.check(vendor, robust_client(rmbg_emulator, vendor), max_examples=6,
                            families=("job-path", "job-end"), deadline_s=20.0)


@FAST
def test_naive_client_is_caught_looping_on_an_error_word(
        client_properties: ClientPropertyRunner) -> None:
    with pytest.raises(AssertionError) as caught:
        client_properties.check("pixazo", naive_client.remove_background, max_examples=15,
                                families=("job-end",), deadline_s=20.0)
    message = str(caught.value)
    assert "polls politely" in message
    assert shrunk_rules(message) == [{"vendor": "pixazo", "operation": "submit",
                                      "job": "error", "word": "ERROR"}], message


# -- Bria, covered like the others -------------------------------------------------------------
@FAST
def test_robust_client_has_every_property_on_bria(client_properties: ClientPropertyRunner,
                                                  rmbg_emulator: EmulatorHandle) -> None:
    client_properties.check("bria", robust_client(rmbg_emulator, "bria"), max_examples=15,
                            deadline_s=20.0)


@FAST
def test_naive_bria_client_is_caught(client_properties: ClientPropertyRunner) -> None:
    with pytest.raises(AssertionError) as caught:
        client_properties.check("bria", naive_client.remove_background_bria, max_examples=15,
                                families=("rate-limit",), deadline_s=20.0)
    message = str(caught.value)
    assert "honours Retry-After: request #" in message
    assert shrunk_rules(message) == [{"vendor": "bria", "operation": "submit", "status": 429,
                                      "retry_after": 1, "times": 1}], message


@FAST
def test_naive_bria_client_is_caught_on_a_truncated_png(
        client_properties: ClientPropertyRunner) -> None:
    with pytest.raises(AssertionError) as caught:
        client_properties.check("bria", naive_client.remove_background_bria, max_examples=15,
                                families=("image",), deadline_s=20.0)
    assert shrunk_rules(str(caught.value)) == [{"vendor": "bria", "operation": "submit",
                                                "image": "truncated-png"}]
