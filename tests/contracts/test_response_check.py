"""The response check the end-to-end tests run on every response: it must catch an
undocumented status, field, header or media type."""

from __future__ import annotations

import httpx
import pytest

from emulator.contracts import ContractSet
from tests.conftest import CONTRACTS, check_against_contracts

STATUS = "/v2/requests/status/bria-rmbg-2-0-682_0193"
GOOD = {"request_id": "bria-rmbg-2-0-682_0193", "status": "COMPLETED",
        "model_id": "bria-rmbg-2-0-682", "error": None,
        "output": {"media_url": ["http://127.0.0.1:8000/_emulator/files/pixazo/a.png"],
                   "media_type": "image/png"},
        "created_at": "2026-03-31T10:00:00.000Z", "updated_at": "2026-03-31T10:00:15.000Z",
        "completed_at": "2026-03-31T10:00:15.000Z"}


def check(method: str, path: str, status: int, body: object = None,
          headers: dict[str, str] | None = None, contracts: ContractSet = CONTRACTS
          ) -> list[str]:
    response = httpx.Response(status, json=body, headers=headers)
    return contracts.check_response(method, path, status, response.headers, response.content)


def test_a_conforming_response_passes() -> None:
    assert check("GET", STATUS, 200, GOOD) == []


def test_an_undocumented_field_fails() -> None:
    [problem] = check("GET", STATUS, 200, {**GOOD, "polling_url": "http://x/y"})
    assert "Additional properties are not allowed ('polling_url'" in problem


def test_a_missing_required_field_and_a_bad_enum_fail() -> None:
    body = {k: v for k, v in GOOD.items() if k != "model_id"}
    problems = check("GET", STATUS, 200, {**body, "status": "DONE"})
    assert any("'model_id' is a required property" in p for p in problems)
    assert any("'DONE' is not one of" in p for p in problems)


def test_an_undocumented_status_fails() -> None:
    [problem] = check("GET", STATUS, 418, {"error": "x", "message": "y"})
    assert "status 418 is not documented" in problem


def test_an_undocumented_header_fails() -> None:
    [problem] = check("GET", STATUS, 200, GOOD, headers={"X-Debug": "1"})
    assert "header 'x-debug' is not documented" in problem
    assert check("POST", "/v2/images/background-remove", 429,
                 {"message": "slow down", "code": "RATE_LIMITED"},
                 headers={"Retry-After": "3"}) == []
    [wrong] = check("POST", "/v2/images/background-remove", 429,
                    {"message": "slow down", "code": "RATE_LIMITED"},
                    headers={"Retry-After": "soon"})
    assert "retry-after" in wrong and "breaks its schema" in wrong


def test_an_undocumented_media_type_fails() -> None:
    response = httpx.Response(404, text="not found")
    [problem] = CONTRACTS.check_response("GET", "/v2/jobs/abc", 404, response.headers,
                                         response.content)
    assert "content type 'text/plain' is not documented" in problem


def test_wrong_method_on_a_known_path_must_be_405_with_allow() -> None:
    assert check("GET", "/v2/images/background-remove", 405, {"message": "m", "code": "c"},
                 headers={"Allow": "POST"}) == []
    assert check("GET", "/v2/images/background-remove", 200, {}) != []
    assert check("GET", "/v2/images/background-remove", 405, {}) != []


def test_paths_no_contract_knows_are_not_checked() -> None:
    assert check("GET", "/somewhere/else", 418, {"x": 1}) == []


def test_the_client_hook_raises() -> None:
    request = httpx.Request("GET", f"http://127.0.0.1:8000{STATUS}")
    good = httpx.Response(200, json=GOOD, request=request)
    check_against_contracts(good)
    bad = httpx.Response(200, json={**GOOD, "extra": 1}, request=request)
    with pytest.raises(AssertionError, match="breaks the contract"):
        check_against_contracts(bad)
