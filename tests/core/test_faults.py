"""Fault rules: parsing and validation, the order rules apply in, probability with a seed,
the webhook query, and the broken images."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import numpy as np
import pytest
from PIL import Image

from emulator.core.faults import (
    FaultRules,
    Latency,
    RuleError,
    WebhookFault,
    corrupt_png,
    parse_latency,
    parse_text,
)
from emulator.core.tasks import Rendered
from emulator.matte.compose import encode_png

CATALOG = {"pixazo": ["submit", "status"], "apiframe": ["submit", "status"]}


@pytest.fixture()
def rules() -> FaultRules:
    return FaultRules(CATALOG)


def test_text_form_parses_into_the_same_rule_as_json(rules: FaultRules) -> None:
    assert parse_text("status=429, retry-after=3 ,latency=uniform:0.1:0.2,job=failed") == {
        "status": 429, "retry_after": 3.0, "latency": "uniform:0.1:0.2", "job": "failed"}
    from_text = rules.parse_text("vendor=pixazo,operation=submit,status=429,retry_after=3",
                                 source="header")
    from_json = rules.parse({"vendor": "pixazo", "operation": "submit", "status": 429,
                             "retry_after": 3}, source="admin")
    assert from_text.to_json() | {"id": "x", "source": "x"} == (
        from_json.to_json() | {"id": "x", "source": "x"})


@pytest.mark.parametrize(("spec", "message"), [
    ({"vendor": "nope", "status": 500}, "unknown vendor 'nope'; known: apiframe, pixazo"),
    ({"vendor": "pixazo", "operation": "cancel", "status": 500},
     "vendor 'pixazo' has no operation 'cancel'; its operations are: file, status, submit"),
    ({"vendor": "pixazo", "operation": "submit.remove", "status": 500},
     "vendor 'pixazo' has no operation 'submit.remove'"),
    ({"operation": "cancel", "status": 500}, "no vendor has an operation 'cancel'"),
    ({"status": 200}, "status must be >= 400"),
    ({"status": "429"}, "status must be an integer"),
    ({"status": 429.5}, "status must be an integer"),
    ({"status": True}, "status must be an integer"),
    ({"retry_after": "3", "status": 429}, "retry_after must be a number"),
    ({"latency": -1}, "latency must be >= 0"),
    ({"latency": 10**400}, "latency must be a finite number"),
    ({"latency": "0.5"}, "expected SECONDS, uniform:A:B or lognormal:MEDIAN:SIGMA"),
    ({"latency": "gauss:1:2"}, "expected SECONDS, uniform:A:B or lognormal:MEDIAN:SIGMA"),
    ({"job": "exploded"}, "job must be one of failed, error, stuck, expired"),
    ({"job": "FAILED"}, "job must be one of failed, error, stuck, expired"),
    ({"vendor": "PIXAZO", "status": 500}, "unknown vendor 'PIXAZO'"),
    ({"api_key": "  ", "status": 500}, "api_key must be a string with more than white space"),
    ({"connection": "hangup"}, "connection must be one of reset, close"),
    ({"body": "huge"}, "body must be one of truncated, malformed, empty"),
    ({"image": "blurry"}, "image must be one of truncated-png, rgb-no-alpha, empty-alpha"),
    ({"webhook": "delay"}, "webhook must be one of drop, duplicate"),
    ({"webhook": "delay:1e3"}, "or delay:SECONDS"),
    ({"webhook": "eaten"}, "webhook must be one of drop, duplicate"),
    ({"status": 500, "times": 0}, "times must be >= 1"),
    ({"status": 500, "probability": 1.5}, "probability must be <= 1"),
    ({"status": 500, "connection": "reset"}, "status and connection exclude each other"),
    ({"vendor": "pixazo"}, "a rule needs at least one effect"),
    ({"status": 500, "colour": "red"}, "unknown rule attribute 'colour'"),
])
def test_bad_rules_are_refused_with_what_is_wrong(rules: FaultRules, spec: dict[str, Any],
                                                  message: str) -> None:
    with pytest.raises(RuleError) as caught:
        rules.add(spec)
    assert message in str(caught.value)
    assert rules.rules() == [] and not rules.live


@pytest.mark.parametrize("message", ["\x1c", "\x1f\x85", "\x00\x01\x7f", "\u3000", "\ufeff"])
def test_a_message_of_control_characters_is_kept(rules: FaultRules, message: str) -> None:
    """Python's ``\\s`` (and ``str.strip``) count \\x1c-\\x1f and \\x85 as white space,
    the contract's JSON Schema dialect does not: only ASCII white space is blank."""
    rule = rules.parse({"status": 500, "message": f" {message}\n"}, source="admin")
    assert rule.message == message and rule.status_message() == message
    assert json.loads(json.dumps(rule.to_json()))["message"] == message


def test_operations_match_their_dotted_sub_operations() -> None:
    rules = FaultRules({"fal": ["submit.remove", "status", "status.stream"], "pixazo": ["submit"]})
    rule = rules.add({"operation": "submit", "status": 503})
    assert rule.matches("fal", "submit.remove", "k") and rule.matches("pixazo", "submit", "k")
    assert not rule.matches("fal", "submitted", "k") and not rule.matches("fal", None, "k")
    rules.add({"vendor": "fal", "operation": "status.stream", "status": 500})
    with pytest.raises(RuleError) as caught:
        rules.add({"vendor": "fal", "operation": "stream", "status": 500})
    assert "its operations are: file, status, status.stream, submit, submit.remove" in str(
        caught.value)


def test_retry_after_goes_on_any_status(rules: FaultRules) -> None:
    assert rules.parse({"status": 503, "retry_after": 30}, source="t").retry_after_s() == 30
    assert rules.parse({"status": 503}, source="t").retry_after_s() is None
    assert rules.parse({"status": 429}, source="t").retry_after_s() == 1.0
    assert rules.parse({"status": 429}, source="t").status_message() == (
        "too many requests; retry after 1 seconds")


@pytest.mark.parametrize("text", ["", "status", "=3", "status=1,status=2"])
def test_bad_rule_text_is_refused(text: str) -> None:
    with pytest.raises(RuleError):
        parse_text(text)


def test_add_all_is_all_or_nothing(rules: FaultRules) -> None:
    with pytest.raises(RuleError, match="rule 2: job must be"):
        rules.add_all([{"status": 500}, {"job": "nope"}])
    assert rules.rules() == []
    added = rules.add_all([{"status": 500}, {"job": "failed"}])
    assert [r.id for r in added] == ["f1", "f2"] and rules.live


def test_webhook_attribute_is_parsed_and_offered_but_not_applied(rules: FaultRules) -> None:
    rule = rules.add({"vendor": "pixazo", "webhook": "delay:2.5", "times": 1})
    assert rule.webhook == WebhookFault("delay", 2.5)
    assert rule.to_json()["webhook"] == "delay:2.5"
    assert not rules.live  # nothing for the middleware to do
    assert rules.plan("pixazo", "submit", "k").empty
    assert rules.rules_for_webhook("apiframe", "k") == []
    assert rules.rules_for_webhook("pixazo", "k") == [rule]
    taken = rules.take_webhook_fault("pixazo", "k")
    assert taken == (rule, WebhookFault("delay", 2.5))
    assert rules.take_webhook_fault("pixazo", "k") is None  # times=1 used up
    for kind in ("drop", "duplicate", "reorder", "forged-signature", "stale-timestamp"):
        assert rules.parse({"webhook": kind}, source="t").webhook == WebhookFault(kind)


def test_ordered_steps_make_a_sequence(rules: FaultRules) -> None:
    rules.add_all([{"operation": "submit", "status": 429, "times": 2},
                   {"operation": "submit", "status": 503, "times": 1}])
    seen = []
    for _ in range(5):
        plan = rules.plan("pixazo", "submit", "k")
        seen.append(plan.rule.status if plan.rule else None)
    assert seen == [429, 429, 503, None, None]
    assert [r.hits for r in rules.rules()] == [2, 1]
    assert not rules.live


def test_matching_on_vendor_operation_and_key(rules: FaultRules) -> None:
    rules.add({"vendor": "apiframe", "operation": "status", "api_key": "a", "status": 500})
    assert rules.plan("pixazo", "status", "a").empty
    assert rules.plan("apiframe", "submit", "a").empty
    assert rules.plan("apiframe", "status", "b").empty
    assert not rules.plan("apiframe", "status", "a").empty


def test_per_request_rules_come_first(rules: FaultRules) -> None:
    rules.add({"status": 500})
    header = rules.parse_text("status=418", source="header")
    plan = rules.plan("pixazo", "submit", "k", [header])
    assert plan.rule is header
    assert rules.rules()[0].hits == 0


def test_job_only_rules_wait_for_a_job_and_do_not_shadow(rules: FaultRules) -> None:
    job_rule, _ = rules.add_all([{"job": "failed", "times": 1},
                                 {"operation": "status", "latency": 0.0}])
    poll = rules.plan("pixazo", "status", "k")
    assert poll.rule is not None and poll.rule.latency == Latency("fixed", 0.0)
    assert poll.pending == [job_rule] and job_rule.hits == 0
    submit = rules.plan("pixazo", "submit", "k")
    assert submit.rule is None and submit.pending
    taken = submit.take_job_rule()
    assert taken is not None and taken.job == "failed"
    assert submit.take_job_rule() is None  # once per request
    assert rules.plan("pixazo", "submit", "k").take_job_rule() is None  # times=1 used up


def test_probability_with_a_seed_is_reproducible(rules: FaultRules) -> None:
    def outcomes() -> list[bool]:
        rules.clear()
        rules.add({"status": 503, "probability": 0.5, "seed": 42})
        return [not rules.plan("pixazo", "status", "k").empty for _ in range(40)]

    first, second = outcomes(), outcomes()
    assert first == second
    assert 5 < sum(first) < 35
    expected = random.Random(42)
    assert first == [expected.random() < 0.5 for _ in range(40)]


def test_latency_distributions_are_seeded_and_bounded() -> None:
    assert parse_latency(0.25) == Latency("fixed", 0.25)
    assert parse_latency(0.25).sample(random.Random(1)) == 0.25
    assert parse_latency("uniform:0.3:0.1") == Latency("uniform", 0.1, 0.3)
    uniform = parse_latency("uniform:0.1:0.3")
    draws = [uniform.sample(random.Random(7)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2] and 0.1 <= draws[0] <= 0.3
    lognormal = parse_latency("lognormal:0.2:0.5")
    rng = random.Random(3)
    values = [lognormal.sample(rng) for _ in range(2000)]
    assert 0.17 < float(np.median(values)) < 0.23
    assert str(lognormal) == "lognormal:0.2:0.5"


def _png(alpha_value: int = 255) -> Rendered:
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[5:15, 5:25] = (200, 30, 30, alpha_value)
    return Rendered(encode_png(rgba), "image/png", 30, 20)


def test_truncated_png_cannot_be_decoded() -> None:
    broken = corrupt_png(_png(), "truncated-png")
    assert broken.data[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OSError):
        Image.open(io.BytesIO(broken.data)).load()


def test_rgb_no_alpha_and_empty_alpha_keep_the_size() -> None:
    rgb = Image.open(io.BytesIO(corrupt_png(_png(), "rgb-no-alpha").data))
    assert rgb.mode == "RGB" and rgb.size == (30, 20)
    empty = Image.open(io.BytesIO(corrupt_png(_png(), "empty-alpha").data))
    assert empty.mode == "RGBA" and empty.size == (30, 20)
    assert int(np.asarray(empty)[:, :, 3].max()) == 0
    with pytest.raises(ValueError):
        corrupt_png(_png(), "sepia")


def test_a_rule_text_is_parsed_once_and_each_request_gets_a_fresh_rule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from emulator.core.faults import effects
    from emulator.core.faults import rules as rules_module

    calls: list[str] = []
    real = rules_module.parse_text

    def counting(text: str) -> dict[str, Any]:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(rules_module, "parse_text", counting)
    rules = FaultRules(CATALOG)
    text = "status=503,times=1,probability=0.5,seed=7"
    first = rules.parse_text(text, source="header")
    second = rules.parse_text(text, source="header")
    assert calls == [text]  # a client's header on every request is parsed once
    assert first is not second and first.values == second.values
    assert first.values is not second.values
    first.consume(rules)
    assert (first.hits, second.hits) == (1, 0) and not second.exhausted
    assert [first.rng.random() for _ in range(3)] == [second.rng.random() for _ in range(3)]
    rules.parse_text(text, source="key")  # another source is another rule
    assert calls == [text, text]
    monkeypatch.setattr(effects, "version", effects.version + 1)  # the registry changed
    rules.parse_text(text, source="header")
    assert len(calls) == 3
    with pytest.raises(RuleError):
        rules.parse_text("status=999", source="header")
