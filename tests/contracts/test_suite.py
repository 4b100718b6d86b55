"""Property-based, in CI: ``rmbg-emulator contracts check`` (schemathesis, fixed seed,
bounded examples, every check, stateful run along the links) against the running emulator,
per contract; once more in strict mode for the vendors; and a target that breaks its
contract must fail the check."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from emulator import contracts
from emulator.cli import main
from emulator.testing import contract_check
from emulator.testing.server import EmulatorServer, free_port
from tests.conftest import emulator_settings
from tests.contracts.conftest import KEY

if sys.version_info >= (3, 11):
    import tomllib
else:  # schemathesis needs tomli on 3.10
    import tomli as tomllib

pytest.importorskip("schemathesis")

#: Bounded so the whole suite stays within a few minutes on 2 cores.
MAX_EXAMPLES = "20"
#: The strict run only has to show negative data refused with the vendor's body.
STRICT_MAX_EXAMPLES = "8"
VENDORS = [n for n in contracts.names() if n != "emulator"]


def check(capsys: pytest.CaptureFixture[str], name: str, url: str, *extra: str
          ) -> tuple[int, str]:
    rc = main(["contracts", "check", name, "--base-url", url, "--api-key", KEY,
               "--max-examples", MAX_EXAMPLES, *extra])
    return rc, capsys.readouterr().out


@pytest.mark.parametrize("name", contracts.names())
def test_contract_suite_passes(fast_emulator: EmulatorServer, name: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    fast_emulator.emulator.reset()
    rc, out = check(capsys, name, fast_emulator.url)
    assert rc == 0, out
    assert f"== contracts check {name}: PASSED" in out
    assert "Seed: 42" in out and "Stateful" in out
    assert "ignored_auth skipped" not in out  # this emulator accepts listed keys only
    assert "no token" not in out  # fal's CDN upload ran with a real token
    fails = [j for j in fast_emulator.emulator.jobs.jobs() if j.error
             and "fetching the input image failed" in j.error]
    assert not fails, "a job tried the network"


def test_tokens_are_fetched_for_schemes_that_an_operation_issues(
        fast_emulator: EmulatorServer) -> None:
    fal = contracts.load("fal")
    tokens, notes = contract_check.fetch_tokens(fal, fast_emulator.url, KEY)
    assert set(tokens) == {"cdnToken"} and notes == []
    upload = httpx.post(f"{fast_emulator.url}/cdn/files/upload", content=b"bytes",
                        headers={"Authorization": f"Bearer {tokens['cdnToken']}"})
    assert upload.status_code == 200, upload.text
    config = tomllib.loads(contract_check.auth_config(fal, KEY, tokens))
    assert config["auth"]["openapi"] == {"falKey": {"api_key": f"Key {KEY}"},
                                         "cdnToken": {"bearer": tokens["cdnToken"]}}
    refused, notes = contract_check.fetch_tokens(fal, fast_emulator.url, "not-a-listed-key")
    assert refused == {} and "HTTP 401" in notes[0]
    assert contract_check.fetch_tokens(contracts.load("pixazo"), fast_emulator.url, KEY) == (
        {}, [])



def test_a_token_chain_logs_in_for_the_gmi_access_token(fast_emulator: EmulatorServer) -> None:
    """GMI's ``x-token-from`` is two steps: login (the key as e-mail), then the session."""
    gmi = contracts.load("gmicloud")
    tokens, notes = contract_check.fetch_tokens(gmi, fast_emulator.url, KEY)
    assert set(tokens) == {"accessToken"} and notes == []
    profile = httpx.get(f"{fast_emulator.url}/api/v1/me/profile",
                        headers={"Authorization": f"Bearer {tokens['accessToken']}"})
    assert profile.status_code == 200 and profile.json()["user"]["email"] == KEY
    refused, notes = contract_check.fetch_tokens(gmi, fast_emulator.url, "not-a-listed-key")
    assert refused == {} and "login (HTTP 401)" in notes[0]

def test_state_dependent_statuses_are_valid_answers_to_valid_requests() -> None:
    fal = contracts.load("fal")
    assert contract_check.state_statuses(fal) == {
        "run.remove": ["499"], "run.replace": ["499"], "cancel": ["400"],
        "result": ["400", "422", "499"]}
    config = tomllib.loads(contract_check.operations_config(fal))
    result = next(o for o in config["operations"] if o["include-operation-id"] == "result")
    assert result["checks"]["positive_data_acceptance"]["expected-statuses"] == [
        *contract_check.POSITIVE_STATUSES, "400", "422", "499"]
    assert contract_check.operations_config(contracts.load("pixazo")) == ""


@pytest.fixture(scope="module")
def strict_emulator() -> Iterator[EmulatorServer]:
    settings = emulator_settings(engine="grabcut", keys=frozenset({KEY}), strict=True)
    with EmulatorServer(settings) as server:
        yield server


@pytest.mark.parametrize("name", VENDORS)
def test_contract_suite_passes_in_strict_mode(strict_emulator: EmulatorServer, name: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = check(capsys, name, strict_emulator.url, "--phases", "coverage,fuzzing",
                    "--max-examples", STRICT_MAX_EXAMPLES)
    assert rc == 0, out
    refused = [v for v in strict_emulator.emulator.guard.violations() if v["refused"]]
    assert refused, "negative data was sent, so strict mode refused some"


@pytest.fixture(scope="module")
def broken_vendor() -> Iterator[str]:
    """A server that answers Pixazo's submit with an undocumented body; yields its URL."""

    async def submit(request: Request) -> JSONResponse:
        return JSONResponse({"id": 1, "state": "queued"}, status_code=202)

    app = Starlette(routes=[Route("/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request", submit,
                                  methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_a_target_that_breaks_the_contract_fails(broken_vendor: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = check(capsys, "pixazo", broken_vendor, "--phases", "examples")
    assert rc != 0
    assert "== contracts check pixazo: FAILED" in out
    assert "Response violates schema" in out
