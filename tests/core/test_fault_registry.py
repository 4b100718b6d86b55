"""One registry of fault effects: a kind registered in a test is parsed, served in the
control-plane contract and acts, with no other edit; and nothing outside the registry's
effect classes branches on effect kinds."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator.core.faults import (
    EFFECTS,
    Effect,
    FaultRule,
    FaultRules,
    RequestAct,
    RuleError,
    register,
    unregister,
)
from emulator.core.faults.asgi import Message
from emulator.testing.plugin import InProcessEmulator
from tests.conftest import emulator_settings

ROOT = Path(__file__).resolve().parents[2]
PIXAZO = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"


class StampEffect(Effect):
    """A request-stage effect made up for the test: adds ``X-Emulator-Stamp: <value>`` to the
    answer."""

    name = "stamp"

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not value.isalnum():
            raise RuleError(f"stamp must be letters and digits, got {value!r}")
        return value

    def spec_schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": "^[A-Za-z0-9]+$"}

    async def act_on_request(self, drawn: Any, rule: FaultRule, act: RequestAct) -> bool:
        inner = act.send

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [
                    *message.get("headers", []), (b"x-emulator-stamp", drawn.encode())]}
            await inner(message)

        act.send = send
        return False


@pytest.fixture()
def stamp() -> Iterator[None]:
    register(StampEffect)
    try:
        yield
    finally:
        unregister("stamp")


@pytest.mark.usefixtures("stamp")
def test_a_new_effect_is_one_registered_class() -> None:
    rules = FaultRules({"pixazo": ["submit", "status"]})
    rule = rules.parse_text("stamp=abc,vendor=pixazo", source="header")
    assert rule.request_level and rule.stamp == "abc" and rule.to_json()["stamp"] == "abc"
    with pytest.raises(RuleError, match="stamp must be letters"):
        rules.parse({"stamp": "a b"}, source="t")
    plan = rules.plan("pixazo", "submit", "k", [rule])
    assert plan.journal_json() == [{"rule": "header", "source": "header",
                                    "applied": "stamp=abc"}]

    async def scenario() -> tuple[dict[str, Any], str | None, list[dict[str, Any]]]:
        async with InProcessEmulator(emulator_settings(engine="grabcut")) as emu:
            served = yaml.safe_load(
                (await emu.client.get("/_emulator/contracts/emulator.yaml")).text)
            answer = await emu.client.post(PIXAZO, json={"image_url": "x"}, headers={
                "Ocp-Apim-Subscription-Key": "k", "X-Emulator-Fault": "stamp=s1"})
            journal = (await emu.client.get("/_emulator/journal")).json()["entries"]
            return served, answer.headers.get("x-emulator-stamp"), journal

    served, header, journal = asyncio.run(scenario())
    spec = served["components"]["schemas"]["FaultRuleSpec"]
    assert spec["properties"]["stamp"] == StampEffect().spec_schema()
    assert {"required": ["stamp"]} in spec["anyOf"]
    assert "stamp" in served["components"]["schemas"]["FaultRule"]["properties"]
    assert header == "s1"
    assert journal[-1]["faults"] == [{"rule": "header", "source": "header",
                                      "applied": "stamp=s1"}]


def test_the_built_in_effects_are_registered_with_their_stages() -> None:
    assert {name: effect.stage for name, effect in EFFECTS.items()} == {
        "status": "request", "latency": "request", "job": "job", "connection": "request",
        "body": "request", "word": "job", "polls": "job", "vary": "request",
        "image": "output", "webhook": "webhook"}
    with pytest.raises(ValueError, match="already registered"):
        register(type(EFFECTS["status"]))


#: What branching on an effect kind looks like outside the registry's classes.
KIND_BRANCHES = re.compile(
    r"\b(?:rule|fault|plan\.rule)\.(?:" + "|".join(sorted(EFFECTS)) + r")\b"
    r"|\bfault\.kind\s*==|\bjob\.faults(?:\.get)?[\[(]\"(?:" + "|".join(sorted(EFFECTS))
    + r")\"|CURRENT_PLAN|_webhook_fault|apply_to_job|corrupt_outputs|output_hooks")


def test_only_the_registry_branches_on_effect_kinds() -> None:
    allowed = {ROOT / "emulator" / "core" / "faults"}
    found = []
    for path in sorted((ROOT / "emulator").rglob("*.py")):
        if any(parent in allowed for parent in path.parents):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if KIND_BRANCHES.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
