"""The request guard: violations recorded strict or not; strict mode (global or per key)
refuses them with the vendor's own 400/422 body naming the field and the rule."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import yaml

from emulator import contracts
from emulator.cli import build_parser
from emulator.testing.server import EmulatorServer
from emulator.testing.strategies import tiny_images
from tests.conftest import checked_client, emulator_settings
from tests.contracts.conftest import KEY, OTHER_KEY

PIXAZO_SUBMIT = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"
APIFRAME_SUBMIT = "/v2/images/background-remove"
IMAGE = tiny_images()[0]


def pixazo(client: httpx.Client, body: object, *, key: str | None = KEY,
           content_type: str = "application/json", **headers: str) -> httpx.Response:
    hdrs = {"Content-Type": content_type, **headers}
    if key is not None:
        hdrs["Ocp-Apim-Subscription-Key"] = key
    return client.post(PIXAZO_SUBMIT, content=json.dumps(body), headers=hdrs)


def apiframe(client: httpx.Client, body: object, *, key: str = KEY,
             content_type: str = "application/json") -> httpx.Response:
    return client.post(APIFRAME_SUBMIT, content=json.dumps(body),
                       headers={"X-API-Key": key, "Content-Type": content_type})


def violations(client: httpx.Client, **params: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = client.get("/_emulator/violations",
                                                params=params).json()["violations"]
    return found


@pytest.fixture(scope="module")
def strict_emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(emulator_settings(engine="grabcut", strict=True)) as server:
        yield server


@pytest.fixture()
def strict_client(strict_emulator: EmulatorServer) -> Iterator[httpx.Client]:
    with checked_client(strict_emulator.url) as c:
        c.post("/_emulator/reset").raise_for_status()
        yield c


def test_contracts_are_served(fast_client: httpx.Client) -> None:
    listing = fast_client.get("/_emulator/contracts").json()["contracts"]
    assert [c["name"] for c in listing] == contracts.names()
    for entry in listing:
        response = fast_client.get(entry["url"])
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/yaml")
        assert response.text == contracts.text(entry["name"])
        assert yaml.safe_load(response.text)["x-vendor"] == entry["vendor"]
    missing = fast_client.get("/_emulator/contracts/nope.yaml")
    assert missing.status_code == 404 and "no contract" in missing.json()["detail"]


def test_a_violation_is_recorded_but_not_refused_by_default(fast_client: httpx.Client) -> None:
    response = pixazo(fast_client, {"image_url": IMAGE}, content_type="text/plain")
    assert response.status_code == 202
    [found] = violations(fast_client)
    assert found["vendor"] == "pixazo" and found["operation"] == "submit"
    assert found["location"] == "content-type" and found["rule"] == "content-type"
    assert found["field"] == "Content-Type" and found["api_key"] == KEY
    assert found["refused"] is False
    assert "text/plain is not accepted" in str(found["message"])


def test_a_valid_request_records_nothing(fast_client: httpx.Client) -> None:
    assert pixazo(fast_client, {"image_url": IMAGE},
                  **{"X-Webhook-URL": "http://127.0.0.1:9/hook"}).status_code == 202
    assert apiframe(fast_client, {"model": "bria-bg-remove",
                                  "briaBgRemoveParams": {"image": IMAGE}}).status_code == 202
    assert violations(fast_client) == []


def test_strict_mode_refuses_with_the_vendor_body(strict_client: httpx.Client) -> None:
    assert strict_client.get("/_emulator/health").json()["strict"] is True
    refused = pixazo(strict_client, {"image_url": IMAGE}, content_type="text/plain")
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "Bad Request",
        "message": "Content-Type: text/plain is not accepted; send application/json "
                   "(rule: content-type)"}
    bad_type = apiframe(strict_client, {"model": "bria-bg-remove", "briaBgRemoveParams": {
        "image": IMAGE, "content_moderation": "yes"}})
    assert bad_type.status_code == 422
    body = bad_type.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["field"] == "briaBgRemoveParams.content_moderation"
    assert body["message"] == ("briaBgRemoveParams.content_moderation: 'yes' is not of type "
                               "'boolean' (rule: type)")
    assert [v["refused"] for v in violations(strict_client)] == [True, True]
    ok = pixazo(strict_client, {"image_url": IMAGE})
    assert ok.status_code == 202
    assert len(violations(strict_client)) == 2


def test_strict_mode_uses_the_contracts_violation_status(strict_client: httpx.Client) -> None:
    response = apiframe(strict_client, {"model": "flux", "briaBgRemoveParams": {"image": IMAGE}})
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_MODEL"
    assert response.json()["field"] == "model"
    assert "(rule: const)" in response.json()["message"]


def test_strict_mode_names_nested_missing_fields(strict_client: httpx.Client) -> None:
    response = apiframe(strict_client, {"model": "bria-bg-remove", "briaBgRemoveParams": {}})
    assert response.status_code == 422
    assert response.json()["field"] == "briaBgRemoveParams.image"
    assert "(rule: required)" in response.json()["message"]
    header = pixazo(strict_client, {"image_url": IMAGE}, **{"X-Webhook-URL": "not a url"})
    assert header.status_code == 400
    assert header.json()["message"].startswith("X-Webhook-URL: 'not a url' is not a")


def test_strict_mode_leaves_a_missing_key_to_the_vendors_401(
        strict_client: httpx.Client) -> None:
    response = pixazo(strict_client, {"image_url": IMAGE}, key=None)
    assert response.status_code == 401
    assert response.json()["message"].startswith("Access denied due to missing subscription")
    [found] = violations(strict_client)
    assert found["location"] == "security" and found["field"] == "Ocp-Apim-Subscription-Key"
    assert found["refused"] is False and found["api_key"] is None


def test_per_key_strict_setting(fast_client: httpx.Client) -> None:
    account = fast_client.put(f"/_emulator/keys/{KEY}", json={"strict": True}).json()
    assert account["strict"] is True
    assert fast_client.get(f"/_emulator/keys/{KEY}").json()["strict"] is True
    assert fast_client.get(f"/_emulator/keys/{OTHER_KEY}").json()["strict"] is False
    refused = apiframe(fast_client, {"model": "bria-bg-remove",
                                     "briaBgRemoveParams": {"image": IMAGE}},
                       content_type="text/plain")
    assert refused.status_code == 400 and refused.json()["code"] == "BAD_REQUEST"
    accepted = apiframe(fast_client, {"model": "bria-bg-remove",
                                      "briaBgRemoveParams": {"image": IMAGE}},
                        key=OTHER_KEY, content_type="text/plain")
    assert accepted.status_code == 202
    assert [(v["api_key"], v["refused"]) for v in violations(fast_client)] == [
        (KEY, True), (OTHER_KEY, False)]
    assert [v["api_key"] for v in violations(fast_client, api_key=OTHER_KEY)] == [OTHER_KEY]
    assert violations(fast_client, vendor="pixazo") == []
    bad = fast_client.put(f"/_emulator/keys/{KEY}", json={"strict": "yes"})
    assert bad.status_code == 400
    fast_client.post("/_emulator/reset").raise_for_status()
    assert fast_client.get(f"/_emulator/keys/{KEY}").json()["strict"] is False
    assert violations(fast_client) == []


def test_violations_can_be_cleared(fast_client: httpx.Client) -> None:
    pixazo(fast_client, {"image_url": IMAGE}, content_type="text/plain")
    pixazo(fast_client, {"image_url": ""})
    assert len(violations(fast_client)) == 2
    assert fast_client.delete("/_emulator/violations").json() == {"cleared": 2}
    assert violations(fast_client) == []


def test_malformed_json_is_still_the_adapters_answer(fast_client: httpx.Client) -> None:
    response = fast_client.post(PIXAZO_SUBMIT, content=b"{", headers={
        "Ocp-Apim-Subscription-Key": KEY, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["message"].startswith("request body is not valid JSON")
    [found] = violations(fast_client)
    assert found["rule"] == "json"


def test_serve_has_a_strict_flag() -> None:
    assert build_parser().parse_args(["serve", "--strict"]).strict is True
    assert build_parser().parse_args(["serve"]).strict is None


def test_a_bodyless_request_seen_to_obey_is_not_taken_for_another(
        fast_client: httpx.Client) -> None:
    """The guard remembers body-less requests that obeyed; the same poll without its key,
    or with another header set, is still checked and recorded every time."""
    fast_client.delete("/_emulator/violations")
    rid = pixazo(fast_client, {"image_url": IMAGE}).json()["request_id"]
    path = f"/v2/requests/status/{rid}"
    for _ in range(3):
        assert fast_client.get(path, headers={"Ocp-Apim-Subscription-Key": KEY}
                               ).status_code == 200
    assert violations(fast_client) == []
    for _ in range(2):
        assert fast_client.get(path).status_code == 401
    found = violations(fast_client, vendor="pixazo")
    assert [v["location"] for v in found] == ["security", "security"]
    assert all(v["path"] == path for v in found)
    assert fast_client.get(path, headers={"Ocp-Apim-Subscription-Key": ""}).status_code == 401
    assert len(violations(fast_client, vendor="pixazo")) == 3


def test_a_body_seen_to_obey_is_checked_again_under_another_content_type(
        fast_client: httpx.Client) -> None:
    fast_client.delete("/_emulator/violations")
    for _ in range(2):
        assert pixazo(fast_client, {"image_url": IMAGE}).status_code == 202
    assert violations(fast_client) == []
    for _ in range(2):
        assert pixazo(fast_client, {"image_url": IMAGE},
                      content_type="text/plain").status_code == 202
    assert [v["rule"] for v in violations(fast_client)] == ["content-type", "content-type"]
