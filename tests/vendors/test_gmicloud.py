"""GMI Cloud beyond the shared end-to-end tests: base64 input, the list, models, auth."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from emulator.testing.server import EmulatorServer
from tests.conftest import OriginServer, decode_png, emulator_settings, png_bytes

BASE = "/api/v1/ie/requestqueue/apikey/requests"
MODEL = "bria-image-remove-background"


def auth(key: str = "gmi-key") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(client: httpx.Client, image: Any, key: str = "gmi-key") -> dict[str, Any]:
    response = client.post(BASE, json={"model": MODEL, "payload": {"image": image}},
                           headers=auth(key))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_submit_reply_has_integer_timestamps(client: httpx.Client,
                                             origin: OriginServer) -> None:
    body = submit(client, f"{origin.url}/small.png")
    assert set(body) == {"request_id", "model", "status", "created_at", "updated_at",
                         "queued_at"}
    assert body["model"] == MODEL and body["status"] == "queued"
    assert all(isinstance(body[k], int) for k in ("created_at", "updated_at", "queued_at"))
    record = client.get(f"{BASE}/{body['request_id']}", headers=auth()).json()
    assert record["status"] == "success"
    assert record["payload"] == {"image": f"{origin.url}/small.png"}
    assert [m["id"] for m in record["outcome"]["media_urls"]] == ["0"]
    assert isinstance(record["updated_at"], int) and record["updated_at"] >= body["created_at"]


def test_raw_base64_payload(client: httpx.Client, origin: OriginServer) -> None:
    raw = base64.b64encode(png_bytes(origin.small)).decode()
    body = submit(client, raw)
    record = client.get(f"{BASE}/{body['request_id']}", headers=auth()).json()
    assert record["status"] == "success", record
    assert record["payload"]["image"].endswith(f"({len(raw)} characters)")
    out = decode_png(client.get(record["outcome"]["media_urls"][0]["url"]).content)
    assert out.size == (origin.small.shape[1], origin.small.shape[0]) and out.mode == "RGBA"


@pytest.mark.parametrize(("body", "field"), [
    ({"model": "bria-rmbg", "payload": {"image": "https://x/a.png"}}, "model"),
    ({"payload": {"image": "https://x/a.png"}}, "model"),
    ({"model": MODEL}, "payload"),
    ({"model": MODEL, "payload": "https://x/a.png"}, "payload"),
    ({"model": MODEL, "payload": {}}, "payload.image"),
    ({"model": MODEL, "payload": {"image": "x"}}, "payload.image"),
])
def test_bad_model_or_payload_is_400(client: httpx.Client, body: dict[str, Any],
                                     field: str) -> None:
    response = client.post(BASE, json=body, headers=auth())
    assert response.status_code == 400
    assert field.split(".")[-1] in response.json()["error"]


@pytest.mark.parametrize("header", ["Key gmi-key", "gmi-key", "Bearer", "Basic abc"])
def test_authorization_must_be_bearer(client: httpx.Client, header: str) -> None:
    response = client.get(BASE, headers={"Authorization": header})
    assert response.status_code == 401 and response.json()["error"]


def test_list_shows_the_callers_requests_newest_first(origin: OriginServer) -> None:
    with EmulatorServer(emulator_settings(progression="polls:2")) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        first = submit(client, f"{origin.url}/small.png")
        second = submit(client, f"{origin.url}/small.png")
        submit(client, f"{origin.url}/small.png", key="someone-else")
        listed = client.get(BASE, headers=auth()).json()["requests"]
        assert [r["request_id"] for r in listed] == [second["request_id"],
                                                     first["request_id"]]
        assert all(r["status"] == "queued" for r in listed)
        assert client.get(BASE, params={"model_id": MODEL}, headers=auth()).json()[
            "requests"]
        assert client.get(BASE, params={"model_id": "seedream-5.0-lite"},
                          headers=auth()).json() == {"requests": []}
        # listing is not a status read: the first read still shows queued
        seen = [client.get(f"{BASE}/{first['request_id']}", headers=auth()).json()["status"]
                for _ in range(3)]
        assert seen == ["queued", "processing", "success"]
        listed = client.get(BASE, headers=auth()).json()["requests"]
        assert [r["status"] for r in listed] == ["queued", "success"]
        assert listed[1]["outcome"]["media_urls"][0]["url"].startswith(server.url)


def test_failed_request_has_an_error_message(client: httpx.Client,
                                             origin: OriginServer) -> None:
    body = submit(client, f"{origin.url}/missing.png")
    record = client.get(f"{BASE}/{body['request_id']}", headers=auth()).json()
    assert record["status"] == "failed"
    assert "404" in record["error_message"] and record["outcome"] == {}


def test_an_unsupported_method_lists_both_methods_of_the_path(client: httpx.Client) -> None:
    """Submit (POST) and list (GET) share a path: a 405's Allow names both."""
    for path in (BASE, f"{BASE}/x"):
        response = client.delete(path, headers=auth())
        assert response.status_code == 405 and response.json()["error"]
    allowed = {m.strip() for m in client.put(BASE, headers=auth()).headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    one = client.post(f"{BASE}/x", headers=auth()).headers["allow"]
    assert "POST" not in one and "GET" in one
