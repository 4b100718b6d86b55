"""Scenario files from the command line, connection faults in process, and the fault rule
schema of the control-plane contract."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from emulator.cli import main
from emulator.testing.plugin import InProcessEmulator
from emulator.testing.server import free_port
from tests.conftest import emulator_settings

SCENARIOS = Path(__file__).resolve().parents[1] / "fixtures" / "scenarios"
PIXAZO = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"


def test_scenario_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in SCENARIOS.glob("*.yaml"))
    assert main(["scenario", "check", *files]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok: ") == len(files) and "flaky-submits: 0 keys, 1 rules" in out
    # each rule, one a line in the rule grammar, in the order they are tried
    assert "  1. operation=submit,status=429,retry_after=2,times=2\n" in out
    assert ("  1. operation=submit,job=error,times=1\n"
            "  2. operation=submit,image=truncated-png,times=1\n"
            "  3. operation=status,status=503,probability=0.33,seed=7\n"
            "  4. operation=status,latency=uniform:0.01:0.05,seed=7\n") in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("faults:\n  - {vendor: pixazo, operation: refund, status: 500}\n")
    assert main(["scenario", "check", str(bad)]) == 1
    assert "vendor 'pixazo' has no operation 'refund'" in capsys.readouterr().err


def test_rule_text_parses_back_to_the_same_rule() -> None:
    from emulator.app import Emulator
    from emulator.settings import Settings

    faults = Emulator(Settings()).faults
    for spec in ({"vendor": "pixazo", "operation": "submit", "status": 503, "retry_after": 1.5,
                  "message": "busy", "probability": 0.25, "seed": 3},
                 {"api_key": "k1", "latency": "lognormal:0.2:0.5", "times": 4},
                 {"operation": "status", "body": "truncated"}):
        rule = faults.parse(spec, source="admin")
        again = faults.parse_text(rule.to_text(), source="admin")
        assert again.to_json() == rule.to_json(), rule.to_text()


def test_serve_refuses_a_bad_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("keys: {k: {balance_usd: lots}}\n")
    assert main(["serve", "--scenario", str(bad), "--engine", "grabcut"]) == 2
    assert "keys.k: balance_usd must be a finite number" in capsys.readouterr().err


def test_serve_with_a_scenario(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "U2NET_HOME": str(tmp_path), "RMBG_EMULATOR_MODELS": ""}
    scenario = str(SCENARIOS / "flaky-submits.yaml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "serve", "--port", str(port), "--scenario",
         scenario], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        banner: list[str] = []
        while not banner or "health:" not in banner[-1]:
            banner.append(proc.stdout.readline())
            assert banner[-1], "".join(banner)
        assert "  scenario: flaky-submits (1 fault rules, 0 keys)\n" in banner
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(f"{base}/_emulator/health").json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert health["scenarios"] == ["flaky-submits"] and health["fault_rules"] == 1
        answer = httpx.post(base + PIXAZO, json={"image_url": "x"},
                            headers={"Ocp-Apim-Subscription-Key": "k"})
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "2"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(("kind", "error"), [("reset", ConnectionResetError),
                                             ("close", ConnectionAbortedError)])
def test_connection_fault_in_process_raises(kind: str, error: type[Exception]) -> None:
    async def scenario() -> list[dict[str, object]]:
        async with InProcessEmulator(emulator_settings(engine="grabcut")) as emu:
            with pytest.raises(error):
                await emu.client.post(PIXAZO, json={"image_url": "x"}, headers={
                    "Ocp-Apim-Subscription-Key": "k", "X-Emulator-Fault": f"connection={kind}"})
            entries: list[dict[str, object]] = (
                await emu.client.get("/_emulator/journal")).json()["entries"]
            return entries

    entries = asyncio.run(scenario())
    assert [(e["operation"], e["status"]) for e in entries] == [("submit", None)]


def test_the_served_contract_lists_the_vendors_operations_and_effects_of_the_registries(
) -> None:
    from emulator.contracts import contracts_dir
    from emulator.core import faults

    async def served() -> tuple[dict[str, object], list[str], list[str]]:
        async with InProcessEmulator(emulator_settings(engine="grabcut")) as emu:
            response = await emu.client.get("/_emulator/contracts/emulator.yaml")
            assert response.status_code == 200
            rules = emu.emulator.faults
            return yaml.safe_load(response.text), rules.vendors(), rules.operation_names()

    document, vendors, operations = asyncio.run(served())
    schemas = document["components"]["schemas"]  # type: ignore[index]
    spec = schemas["FaultRuleSpec"]["properties"]
    assert spec["vendor"]["enum"] == vendors
    assert spec["operation"]["enum"] == operations
    assert spec["latency"]["oneOf"][1]["pattern"] == faults.LATENCY_PATTERN
    assert spec["webhook"]["oneOf"][1]["pattern"] == faults.WEBHOOK_DELAY_PATTERN
    assert list(spec) == list(faults.FIELDS)
    for name, effect in faults.EFFECTS.items():
        assert spec[name] == effect.spec_schema()
    assert schemas["FaultRuleSpec"]["anyOf"] == [{"required": [n]} for n in faults.EFFECTS]
    assert set(faults.EFFECTS) <= set(schemas["FaultRule"]["properties"])
    # The file itself writes none of it by hand.
    raw = yaml.safe_load((contracts_dir() / "emulator.yaml").read_text(encoding="utf-8"))
    written = raw["components"]["schemas"]["FaultRuleSpec"]
    assert "enum" not in written["properties"]["vendor"]
    assert "enum" not in written["properties"]["operation"]
    assert not set(faults.EFFECTS) & set(written["properties"]) and "anyOf" not in written
