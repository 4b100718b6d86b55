"""Client property tests, third slice: answers that are valid but unexpected (the ``vary``
fault, the ``variation`` family), and a client with one bug caught for each bug class with
the smallest behaviour that shows it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import buggy_clients
from emulator import contracts
from emulator.contracts.responses import lift_closed_objects, spec_for
from emulator.core.faults.variation import MIXES, VARIATION_KINDS, vary
from emulator.testing.clientcheck import ClientPropertyRunner
from emulator.testing.plugin import EmulatorHandle
from emulator.testing.server import EmulatorServer
from tests.conftest import OriginServer, emulator_settings
from tests.test_client_properties import FAST, robust_client, shrunk_rules
from tests.vendors.drivers import DRIVERS, Driver

VENDORS = [d.slug for d in DRIVERS]
CONTRACTS = contracts.ContractSet.load()
Answer = tuple[contracts.Operation, int, Any]


def _answers(client: httpx.Client, vendor: Driver, origin: OriginServer) -> list[Answer]:
    """Real JSON answers of one vendor: submit, status reads to the end, and a failed job."""
    seen: list[Answer] = []

    def keep(response: httpx.Response) -> None:
        response.read()
        op, _ = CONTRACTS.match(response.request.method, response.request.url.path)
        if op is not None and response.headers.get("content-type", "").startswith(
                "application/json"):
            seen.append((op, response.status_code, response.json()))

    client.event_hooks["response"] = [keep]
    for rule in (None, {"vendor": vendor.slug, "job": "failed"}):
        client.delete("/_emulator/faults")
        if rule is not None:
            client.post("/_emulator/faults", json=rule).raise_for_status()
        url = vendor.poll_url(client, vendor.submit(client, f"{origin.url}/small.png"))
        for _ in range(3):
            vendor.outcome(client, url)
    client.event_hooks["response"] = []
    return [a for a in seen if a[0].contract == vendor.slug]


@pytest.fixture(scope="module")
def answers(origin: OriginServer) -> dict[str, list[Answer]]:
    with EmulatorServer(emulator_settings(progression="polls:1")) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        return {d.slug: _answers(client, d, origin) for d in DRIVERS}


def _relaxed(op: contracts.Operation, status: int) -> Draft202012Validator:
    """An independent validator of what the vendor may send: the contract's schema, with the
    fields the vendor may add (jsonschema itself, not the emulator's own check)."""
    contract = contracts.load(op.contract)
    raw = contract.resolved["paths"][op.path][op.method.lower()]["responses"]
    spec = spec_for({k: k for k in raw}, status)
    schema = raw[spec]["content"]["application/json"]["schema"]
    return Draft202012Validator(lift_closed_objects(schema))


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_variation_conforms(vendor: str, answers: dict[str, list[Answer]]) -> None:
    found = answers[vendor]
    assert {op.operation_id for op, _, _ in found} >= {"status"}, found
    applied: set[str] = set()

    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @given(index=st.integers(0, len(found) - 1), kind=st.sampled_from((*MIXES, *VARIATION_KINDS)),
           seed=st.integers(0, 2**32 - 1))
    def check(index: int, kind: str, seed: int) -> None:
        op, status, body = found[index]
        varied, text = vary(body, kind, random.Random(seed),
                            lambda b: op.accepts_variant(status, b))
        errors = list(_relaxed(op, status).iter_errors(varied))
        assert not errors, (text, errors[0].message)
        if text is not None:
            applied.add(text.split()[0])
            assert varied != body or text == "reorder"
        else:
            assert varied is body

    check()
    # not vacuous: fields are added, answers reordered, on every vendor
    assert {"extra-field", "reorder"} <= applied, applied


def test_a_variation_that_would_not_conform_is_not_applied() -> None:
    body = {"status": "QUEUED", "request_id": "r1"}
    varied, text = vary(body, "extra-field", random.Random(1), lambda b: False)
    assert (varied, text) == (body, None)
    with pytest.raises(ValueError, match="unknown variation"):
        vary(body, "nope", random.Random(1), lambda b: True)


def _shapes(emulator: EmulatorHandle, seed: int) -> list[str]:
    """Key order and extra keys of every status answer of one pixazo run under ``vary: any``
    with ``seed`` (ids and times differ between runs; the shape must not)."""
    emulator.reset()
    emulator.inject(vendor="pixazo", operation="status", vary="any", seed=seed)
    headers = {"Ocp-Apim-Subscription-Key": "k"}
    shapes = []
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=30) as client:
        from emulator.testing.clientcheck import ClientPropertyRunner as Runner

        image = Runner(emulator, Path(".")).image_url
        url = client.post(buggy_clients.SUBMIT_PATH, json={"image_url": image}).json()[
            "polling_url"]
        for _ in range(4):
            body = client.get(url).json()
            shapes.append(json.dumps(_skeleton(body)))
    return shapes


def _skeleton(value: Any) -> Any:
    if isinstance(value, dict):
        return [[k, _skeleton(v)] for k, v in value.items()]
    if isinstance(value, list):
        return [_skeleton(v) for v in value]
    return type(value).__name__


@pytest.mark.rmbg_emulator(progression="polls:1", engine="grabcut")
def test_variations_replay_from_the_seed(rmbg_emulator: EmulatorHandle) -> None:
    first, again = _shapes(rmbg_emulator, 7), _shapes(rmbg_emulator, 7)
    assert first == again
    assert any(_shapes(rmbg_emulator, s) != first for s in (8, 9, 10))


@FAST
@pytest.mark.parametrize("vendor", VENDORS)
def test_robust_client_rides_out_variations(vendor: str,
                                            client_properties: ClientPropertyRunner,
                                            rmbg_emulator: EmulatorHandle) -> None:
    client_properties.check(vendor, robust_client(rmbg_emulator, vendor), max_examples=6,
                            families=("variation",), deadline_s=20.0)


# -- one bug each, caught with the smallest behaviour -----------------------------------------
def _caught(client_properties: ClientPropertyRunner, bug: str, family: str,
            deadline_s: float = 10.0) -> str:
    with pytest.raises(AssertionError) as caught:
        client_properties.check("pixazo", buggy_clients.remover(bug, deadline_s),
                                max_examples=20, families=(family,), deadline_s=deadline_s,
                                shrink_s=30.0)
    return str(caught.value)


@pytest.mark.rmbg_emulator(progression="polls:1", engine="grabcut")
def test_a_client_that_crashes_on_an_extra_field_is_caught(
        client_properties: ClientPropertyRunner) -> None:
    message = _caught(client_properties, "strict-fields", "variation")
    assert "the client failed on a recoverable behaviour (KeyError" in message
    assert shrunk_rules(message) == [{"vendor": "pixazo", "operation": "submit",
                                      "vary": "extra-field", "seed": 0, "times": 1}], message


@pytest.mark.rmbg_emulator(progression="polls:1", engine="grabcut")
def test_a_client_that_ignores_retry_after_is_caught(
        client_properties: ClientPropertyRunner) -> None:
    message = _caught(client_properties, "ignores-retry-after", "rate-limit")
    assert "honours Retry-After" in message
    assert shrunk_rules(message) == [{"vendor": "pixazo", "operation": "submit", "status": 429,
                                      "retry_after": 1, "times": 1}], message


@pytest.mark.rmbg_emulator(progression="polls:1", engine="grabcut")
def test_a_client_that_accepts_a_truncated_png_is_caught(
        client_properties: ClientPropertyRunner) -> None:
    message = _caught(client_properties, "accepts-truncated-png", "image")
    assert "claimed success but the output is not a readable PNG" in message
    assert shrunk_rules(message) == [{"vendor": "pixazo", "operation": "submit",
                                      "image": "truncated-png"}], message


@pytest.mark.rmbg_emulator(progression="polls:1", engine="grabcut")
def test_a_client_that_loops_on_an_unknown_word_is_caught(
        client_properties: ClientPropertyRunner) -> None:
    message = _caught(client_properties, "unknown-word", "job-end", deadline_s=1.5)
    assert "terminates: the client had not returned after 1.5 s" in message
    assert shrunk_rules(message) == [{"vendor": "pixazo", "operation": "submit",
                                      "job": "error", "word": "ERROR"}], message


@pytest.mark.rmbg_emulator(progression="polls:1", engine="grabcut")
def test_the_careful_client_passes(client_properties: ClientPropertyRunner) -> None:
    # no bug, no false alarm (a stuck job costs 0.8 x the deadline: keep it short)
    client_properties.check("pixazo", buggy_clients.remover(None, 4.0), max_examples=6,
                            families=("variation", "job-end", "image"), deadline_s=4.0)




@pytest.mark.parametrize("vendor", [d.slug for d in DRIVERS])
def test_a_permanent_fault_comes_before_every_pass_through_rule(vendor: str) -> None:
    """A ``vary`` or ``latency`` rule lets its request through and stops the request-level
    rules after it, so in an unrecoverable behaviour the permanent fault (a 402 on submit)
    must come first, or the first submit would succeed and the label would lie (a false
    alarm found by a 200-example run: ``vary`` x1, then ``status: 402``)."""
    from emulator.testing.behaviours import PASS_THROUGH_FIELDS, behaviours

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(behaviours(vendor, families=["variation", "latency", "payment"]))
    def check(behaviour: Any) -> None:
        if behaviour.recoverable:
            return
        fatal = next(i for i, r in enumerate(behaviour.rules) if r.get("status") == 402)
        assert not any(f in rule for rule in behaviour.rules[:fatal]
                       for f in PASS_THROUGH_FIELDS), behaviour.rules

    check()
