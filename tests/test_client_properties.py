"""Property-based tests of client integrations (first slice): behaviours drawn from the
contracts, the properties, and the ``client_properties`` fixture catching a naive client while
the worked robust client (``examples/bgremove``) passes."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from PIL import Image

import naive_client
from bgremove import Backoff, PollPolicy, RetryPolicy, VirtualClock, create_remover
from emulator.app import create_app
from emulator.core import scenarios
from emulator.settings import Settings
from emulator.testing import properties
from emulator.testing.behaviours import FAMILIES, Behaviour, behaviours
from emulator.testing.clientcheck import INPUT_SIZE, ClientFunction, ClientPropertyRunner
from emulator.testing.plugin import EmulatorHandle

# The virtual clock: a robust client's sleeps (Retry-After, poll backoff) move the emulator's
# clock and cost no real time; GrabCut cuts the 64 x 48 input in milliseconds.
FAST = pytest.mark.rmbg_emulator(virtual_clock=True, progression="polls:1", engine="grabcut")

FAULT_RULES = create_app(Settings.from_env(progression="immediate")).state.emulator.faults


# -- behaviours ---------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(behaviour=behaviours("pixazo"))
def test_behaviours_replay_as_scenarios(behaviour: Behaviour) -> None:
    loaded = scenarios.parse(scenarios.read_text(behaviour.to_scenario_yaml()), FAULT_RULES)
    assert [dict(r) for r in loaded.rules] == [dict(r) for r in behaviour.rules]
    permanent = [r for r in behaviour.rules if "times" not in r]
    assert behaviour.recoverable is (not permanent)
    assert len(permanent) <= 1
    spent: dict[str, int] = {}
    for rule in behaviour.rules:
        spent[rule["operation"]] = spent.get(rule["operation"], 0) + rule.get("times", 0)
    assert all(n <= 3 for n in spent.values())


@pytest.mark.parametrize("vendor", ["fal", "runflow", "gmicloud", "apiframe", "bria"])
def test_behaviours_use_only_documented_statuses(vendor: str) -> None:
    from emulator import contracts

    contract = contracts.load(vendor)

    @settings(max_examples=25, deadline=None, derandomize=True, database=None)
    @given(behaviour=behaviours(vendor, families=("rate-limit", "server-error", "payment")))
    def check(behaviour: Behaviour) -> None:
        for rule in behaviour.rules:
            op = contract.operations[rule["operation"]]
            assert str(rule["status"]) in op.responses
        scenarios.parse(scenarios.read_text(behaviour.to_scenario_yaml()), FAULT_RULES)

    check()


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown behaviour family 'nope'"):
        behaviours("pixazo", families=("nope",))
    assert "image" in FAMILIES


# -- properties on hand-made records -----------------------------------------------------------
def _png(path: Path, mode: str, size: tuple[int, int], alpha: int = 255) -> Path:
    color: Any = (10, 20, 30, alpha) if mode == "RGBA" else (10, 20, 30)
    Image.new(mode, size, color).save(path, format="PNG")
    return path


def _record(tmp_path: Path, *, success: bool, recoverable: bool = True, **kw: Any
            ) -> properties.RunRecord:
    behaviour = Behaviour("pixazo", 0, (), recoverable)
    outcome = properties.Outcome(success=success, output_path=tmp_path / "out.png",
                                 input_size=INPUT_SIZE, elapsed_s=0.1)
    return properties.RunRecord(behaviour=behaviour, outcome=outcome, **kw)


def test_never_false_success_checks_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    _png(out, "RGB", INPUT_SIZE)
    [problem] = properties.never_false_success(_record(tmp_path, success=True))
    assert "no alpha channel" in problem.detail
    _png(out, "RGBA", INPUT_SIZE, alpha=0)
    assert "alpha is 0 everywhere" in str(properties.never_false_success(
        _record(tmp_path, success=True)))
    _png(out, "RGBA", (10, 10))
    assert "10x10" in str(properties.never_false_success(_record(tmp_path, success=True)))
    out.write_bytes(out.read_bytes()[:40])
    assert "not a readable PNG" in str(properties.never_false_success(
        _record(tmp_path, success=True)))
    _png(out, "RGBA", INPUT_SIZE)
    assert properties.never_false_success(_record(tmp_path, success=True)) == []
    assert "unrecoverable" in str(properties.never_false_success(
        _record(tmp_path, success=True, recoverable=False)))
    assert "recoverable behaviour" in str(properties.never_false_success(
        _record(tmp_path, success=False)))
    assert properties.never_false_success(_record(tmp_path, success=False,
                                                  recoverable=False)) == []


def test_polls_politely_counts_reads_per_job_per_second(tmp_path: Path) -> None:
    def reads(path: str, times: list[float]) -> list[dict[str, Any]]:
        return [{"operation": "status", "path": path, "at": t} for t in times]

    fine = reads("/a", [0.0, 0.3, 0.6, 0.9, 1.2, 1.5]) + reads("/b", [0.0, 0.1, 0.2, 0.3])
    assert properties.polls_politely(_record(tmp_path, success=True, journal=fine)) == []
    burst = reads("/a", [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    [problem] = properties.polls_politely(_record(tmp_path, success=True, journal=burst))
    assert problem.prop == "polls politely" and "6 status reads of /a" in problem.detail


def test_pays_once_flags_a_submit_after_a_success(tmp_path: Path) -> None:
    jobs = [{"id": "j1", "status": "succeeded", "created_at": 1.0, "completed_at": 2.0},
            {"id": "j2", "status": "failed", "created_at": 2.0, "completed_at": 2.5}]
    [problem] = properties.pays_once(_record(tmp_path, success=True, jobs=jobs))
    assert problem.prop == "pays once" and "job j2 was submitted after job j1" in problem.detail
    assert properties.pays_once(_record(tmp_path, success=True, jobs=jobs[:1])) == []
    # a failed job, then a resubmit that succeeds: one image paid
    retried = [{"id": "j1", "status": "failed", "created_at": 1.0, "completed_at": 2.0},
               {"id": "j2", "status": "succeeded", "created_at": 3.0, "completed_at": 4.0}]
    assert properties.pays_once(_record(tmp_path, success=True, jobs=retried)) == []
    both = [{"id": "j1", "status": "succeeded", "created_at": 1.0, "completed_at": 3.0},
            {"id": "j2", "status": "succeeded", "created_at": 2.0, "completed_at": 3.5}]
    assert "2 jobs succeeded" in str(properties.pays_once(_record(tmp_path, success=True,
                                                                  jobs=both)))


# -- the fixture, with real clients ------------------------------------------------------------
def robust_client(emulator: EmulatorHandle, vendor: str) -> ClientFunction:
    """The worked client (examples/bgremove) as a property-test function."""
    def remove(base_url: str, api_key: str, image_url: str, output_path: Path) -> bool:
        with create_remover(vendor, api_key, base_url=base_url,
                            clock=VirtualClock(emulator.advance),
                            retry=RetryPolicy(attempts=5, backoff=Backoff(initial_s=0.5)),
                            poll=PollPolicy(backoff=Backoff(initial_s=1.0, max_s=8.0),
                                            timeout_s=60.0)) as remover:
            output_path.write_bytes(remover.remove(image_url).png)
        return True

    return remove


@FAST
@pytest.mark.parametrize("vendor", ["pixazo", "fal"])
def test_robust_client_has_every_property(vendor: str, client_properties: ClientPropertyRunner,
                                          rmbg_emulator: EmulatorHandle) -> None:
    client_properties.check(vendor, robust_client(rmbg_emulator, vendor), max_examples=15,
                            deadline_s=20.0)


def _caught(client_properties: ClientPropertyRunner, families: tuple[str, ...]) -> str:
    with pytest.raises(AssertionError) as caught:
        client_properties.check("pixazo", naive_client.remove_background, max_examples=15,
                                families=families, deadline_s=20.0)
    return str(caught.value)


def shrunk_rules(message: str) -> list[dict[str, Any]]:
    """The fault rules of the behaviour YAML in a failure message."""
    text = textwrap.dedent(message.split("behaviour (scenario YAML):\n", 1)[1])
    rules: list[dict[str, Any]] = yaml.safe_load(text)["faults"]
    return rules


@FAST
def test_naive_client_is_caught_retrying_before_retry_after(
        client_properties: ClientPropertyRunner) -> None:
    message = _caught(client_properties, ("rate-limit",))
    assert "honours Retry-After: request #" in message
    # shrunk to one rule, once: the first 429 is enough
    assert shrunk_rules(message) == [{"vendor": "pixazo", "operation": "submit", "status": 429,
                                      "retry_after": 1, "times": 1}], message


@FAST
def test_naive_client_is_caught_claiming_a_broken_png(
        client_properties: ClientPropertyRunner) -> None:
    message = _caught(client_properties, ("image",))
    assert "never a false success: the client claimed success but" in message
    assert shrunk_rules(message) == [{"vendor": "pixazo", "operation": "submit",
                                      "image": "truncated-png"}], message


@FAST
def test_a_client_that_hangs_breaks_terminates(client_properties: ClientPropertyRunner) -> None:
    release = threading.Event()

    def hangs(base_url: str, api_key: str, image_url: str, output_path: Path) -> bool:
        release.wait(5)
        return False

    try:
        run = client_properties.run_once(Behaviour("pixazo", 0, (), True), hangs,
                                         deadline_s=0.2)
    finally:
        release.set()
    assert not run.outcome.finished
    [problem] = properties.terminates(run, deadline_s=0.2)
    assert "the client had not returned after 0.2 s" in problem.detail
    assert [p.prop for p in properties.check_all(run, deadline_s=0.2)] == ["terminates"]


def test_check_refuses_an_unknown_property(client_properties: ClientPropertyRunner) -> None:
    with pytest.raises(ValueError, match="unknown property 'nope'"):
        client_properties.check("pixazo", naive_client.remove_background, skip=("nope",))


def test_scenario_yaml_loads_through_the_admin_api(rmbg_emulator: EmulatorHandle) -> None:
    behaviour = Behaviour("pixazo", 7, ({"vendor": "pixazo", "operation": "submit",
                                         "status": 429, "retry_after": 1, "times": 2},),
                          recoverable=True)
    summary = rmbg_emulator.scenario(dict(scenarios.read_text(behaviour.to_scenario_yaml())))
    assert summary["name"] == "behaviour-pixazo-7"
    assert [r["status"] for r in summary["rules"]] == [429]
