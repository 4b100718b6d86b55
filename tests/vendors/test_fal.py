"""fal.ai beyond the shared end-to-end tests: fal.run, replace, logs, stream, cancel, storage."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from emulator.testing.server import EmulatorServer
from tests.conftest import OriginServer, decode_png, emulator_settings, png_bytes

KEY = "fal-key"
AUTH = {"Authorization": f"Key {KEY}"}
REMOVE = "/fal-ai/bria/background/remove"
REPLACE = "/fal-ai/bria/background/replace"


@pytest.fixture(scope="module")
def polled() -> Iterator[httpx.Client]:
    """A client on an emulator with ``progression=polls:2`` (queued, in progress, completed)."""
    with EmulatorServer(emulator_settings(progression="polls:2")) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def submit(client: httpx.Client, body: dict[str, Any], path: str = REMOVE,
           query: str = "") -> dict[str, Any]:
    response = client.post(f"/queue{path}{query}", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def data_png(rgb: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode()


def from_data_uri(uri: str) -> Image.Image:
    head, _, data = uri.partition(",")
    assert head == "data:image/png;base64"
    return decode_png(base64.b64decode(data))


# -- fal.run -------------------------------------------------------------------------------------
def test_run_answers_the_result(client: httpx.Client, origin: OriginServer) -> None:
    response = client.post(REMOVE, json={"image_url": f"{origin.url}/small.png"}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["x-fal-request-id"]
    image = response.json()["image"]
    assert set(image) == {"url", "content_type", "file_name", "file_size", "width", "height"}
    base = str(client.base_url).rstrip("/")
    assert image["url"].startswith(f"{base}/cdn/files/")
    assert image["url"].endswith("/" + image["file_name"])
    assert image["content_type"] == "image/png"
    h, w = origin.small.shape[:2]
    assert (image["width"], image["height"]) == (w, h)
    download = client.get(image["url"])
    assert download.status_code == 200
    assert len(download.content) == image["file_size"]
    out = decode_png(download.content)
    assert out.mode == "RGBA" and out.size == (w, h)


def test_run_sync_mode_answers_a_data_uri(client: httpx.Client, origin: OriginServer) -> None:
    response = client.post(REMOVE, headers=AUTH,
                           json={"image_url": f"{origin.url}/small.png", "sync_mode": True})
    assert response.status_code == 200
    image = response.json()["image"]
    out = from_data_uri(image["url"])
    assert out.mode == "RGBA" and out.size == (image["width"], image["height"])


@pytest.mark.parametrize(("path", "kind", "cause"), [
    ("/missing.png", "file_download_error", "404"),
    ("/text.png", "image_load_error", "not an image"),
    ("/photo.bmp", "image_load_error", "BMP"),
    ("/bomb.png", "image_too_large", "pixels"),
    ("/big.png", "file_too_large", "bytes"),
])
def test_run_failure_is_a_model_error(client: httpx.Client, origin: OriginServer, path: str,
                                      kind: str, cause: str) -> None:
    response = client.post(REMOVE, json={"image_url": f"{origin.url}{path}"}, headers=AUTH)
    assert response.status_code == 422
    assert response.headers["x-fal-retryable"] == "false"
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "image_url"]
    assert detail["type"] == kind
    assert cause in detail["msg"]
    assert detail["url"].endswith("#" + kind)
    assert detail["input"] == f"{origin.url}{path}"
    account = client.get(f"/_emulator/keys/{KEY}").json()
    assert account["balance_usd"] == "1000"


@pytest.mark.parametrize(("body", "loc"), [
    ({}, ["body", "image_url"]),
    ({"image_url": "ftp://x/y.png"}, ["body", "image_url"]),
    ({"image_url": "https://x/y.png", "sync_mode": "yes"}, ["body", "sync_mode"]),
])
def test_run_validation_errors_are_422_lists(client: httpx.Client, body: dict[str, Any],
                                             loc: list[str]) -> None:
    response = client.post(REMOVE, json=body, headers=AUTH)
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == loc and detail["msg"]


# -- replace ------------------------------------------------------------------------------------
def test_replace_composites_onto_the_reference(client: httpx.Client,
                                               origin: OriginServer) -> None:
    source = origin.composite
    h, w = source.mask.shape
    reference = np.zeros((h, w, 3), np.uint8)
    reference[:] = (20, 200, 240)
    response = client.post(REPLACE, headers=AUTH, json={
        "image_url": f"{origin.url}/composite.png", "ref_image_url": data_png(reference),
        "prompt": "ignored when a reference is given", "num_images": 2, "seed": 7})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["seed"] == 7
    assert len(body["images"]) == 2
    outs = [np.asarray(decode_png(client.get(i["url"]).content)) for i in body["images"]]
    assert all(o.shape == (h, w, 3) for o in outs)
    assert np.array_equal(outs[0], outs[1])
    out = outs[0].astype(int)
    near_ref = np.abs(out - reference.astype(int)).max(axis=2) <= 3
    near_photo = np.abs(out - source.rgb.astype(int)).max(axis=2) <= 3
    assert near_ref[~source.mask].mean() > 0.9
    assert near_photo[source.mask].mean() > 0.9
    ledger = client.get(f"/_emulator/keys/{KEY}").json()["ledger"]
    assert [e["amount_usd"] for e in ledger if e["kind"] == "charge"] == ["-0.046"]


def test_replace_from_a_prompt_is_deterministic(client: httpx.Client,
                                                origin: OriginServer) -> None:
    def run(seed: int, count: int) -> list[bytes]:
        response = client.post(REPLACE, headers=AUTH, json={
            "image_url": f"{origin.url}/small.png", "prompt": "a beach", "seed": seed,
            "num_images": count, "sync_mode": True})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["seed"] == seed
        return [base64.b64decode(i["url"].split(",", 1)[1]) for i in body["images"]]

    first = run(11, 2)
    second = run(12, 1)
    assert len(first) == 2 and first[0] != first[1]
    assert first[1] == second[0]  # image i of a request uses seed + i
    assert Image.open(io.BytesIO(first[0])).mode == "RGB"


@pytest.mark.parametrize(("extra", "loc"), [
    ({}, ["body", "prompt"]),
    ({"prompt": "  "}, ["body", "prompt"]),
    ({"prompt": "x", "num_images": 5}, ["body", "num_images"]),
    ({"prompt": "x", "num_images": 0}, ["body", "num_images"]),
    ({"prompt": "x", "seed": -1}, ["body", "seed"]),
    ({"prompt": "x", "seed": 2147483648}, ["body", "seed"]),
    ({"prompt": 3}, ["body", "prompt"]),
    ({"ref_image_url": 3}, ["body", "ref_image_url"]),
    ({"ref_image_url": "nope"}, ["body", "ref_image_url"]),
    ({"prompt": "x", "num_images": 2.5}, ["body", "num_images"]),
    # a field with a default is typed without null on the page: null is refused
    ({"prompt": "x", "num_images": None}, ["body", "num_images"]),
    ({"prompt": "x", "sync_mode": None}, ["body", "sync_mode"]),
    ({"prompt": "x", "fast": None}, ["body", "fast"]),
    ({"prompt": "x", "ref_image_url": None}, ["body", "ref_image_url"]),
    ({"prompt": "x", "negative_prompt": None}, ["body", "negative_prompt"]),
])
def test_replace_validation(client: httpx.Client, extra: dict[str, Any],
                            loc: list[str]) -> None:
    response = client.post(REPLACE, json={"image_url": "https://example.com/a.png", **extra},
                           headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc


def test_integral_floats_are_integers_and_null_seed_draws_one(client: httpx.Client) -> None:
    """3.0 is an integer to JSON Schema and to fal's models; the optional seed may be null."""
    for extra in ({"num_images": 2.0, "seed": 7.0}, {"seed": None, "prompt": None}):
        body = {"image_url": "data:image/png;base64,AAAA", "prompt": "a beach", **extra}
        if body["prompt"] is None:
            body["ref_image_url"] = "https://example.com/ref.png"
        queued = client.post(f"/queue{REPLACE}", json=body, headers=AUTH)
        assert queued.status_code == 200, queued.text


def test_replace_through_the_queue(client: httpx.Client, origin: OriginServer) -> None:
    queued = submit(client, {"image_url": f"{origin.url}/small.png", "prompt": "snow"},
                    path=REPLACE)
    assert "/fal-ai/bria/requests/" in queued["status_url"]
    assert client.get(queued["status_url"], headers=AUTH).json()["status"] == "COMPLETED"
    result = client.get(queued["response_url"], headers=AUTH).json()
    assert 0 <= result["seed"] <= 2147483647 and len(result["images"]) == 1


# -- queue ----------------------------------------------------------------------------------------
def test_queue_reply_and_status_bodies(polled: httpx.Client, origin: OriginServer) -> None:
    queued = submit(polled, {"image_url": f"{origin.url}/small.png"})
    base = str(polled.base_url).rstrip("/") + f"/queue/fal-ai/bria/requests/{queued['request_id']}"
    assert queued["status"] == "IN_QUEUE" and queued["queue_position"] == 0
    assert queued["gateway_request_id"] == queued["request_id"]
    assert (queued["response_url"], queued["status_url"], queued["cancel_url"]) == (
        base, base + "/status", base + "/cancel")
    early = polled.get(queued["response_url"], headers=AUTH)
    assert early.status_code == 400 and "in progress" in early.json()["detail"]
    first = polled.get(queued["status_url"], params={"logs": 1}, headers=AUTH).json()
    assert first["status"] == "IN_QUEUE" and first["queue_position"] == 0
    second = polled.get(queued["status_url"], params={"logs": 1}, headers=AUTH).json()
    assert second["status"] == "IN_PROGRESS"
    assert [e["level"] for e in second["logs"]] == ["INFO"]
    third = polled.get(queued["status_url"], headers=AUTH).json()
    assert third["status"] == "COMPLETED" and third["logs"] is None
    assert third["metrics"]["inference_time"] > 0
    assert "error" not in third
    logged = polled.get(queued["status_url"], params={"logs": "true"}, headers=AUTH).json()
    assert len(logged["logs"]) == 2 and all(e["timestamp"] for e in logged["logs"])
    result = polled.get(queued["response_url"], headers=AUTH)
    assert result.status_code == 200 and result.json()["image"]["url"]


def test_status_stream_ends_at_completed(polled: httpx.Client, origin: OriginServer) -> None:
    queued = submit(polled, {"image_url": f"{origin.url}/small.png"})
    events = []
    with polled.stream("GET", queued["status_url"] + "/stream", headers=AUTH) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert [e["status"] for e in events] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert events[-1]["request_id"] == queued["request_id"]


def test_cancel_a_queued_request(polled: httpx.Client, origin: OriginServer) -> None:
    polled.post("/_emulator/reset").raise_for_status()
    queued = submit(polled, {"image_url": f"{origin.url}/small.png"})
    cancel = polled.put(queued["cancel_url"], headers=AUTH)
    assert cancel.status_code == 202
    assert cancel.json() == {"status": "CANCELLATION_REQUESTED"}
    status = polled.get(queued["status_url"], headers=AUTH).json()
    assert status["status"] == "COMPLETED" and status["error_type"] == "client_cancelled"
    result = polled.get(queued["response_url"], headers=AUTH)
    assert result.status_code == 499 and result.json()["error_type"] == "client_cancelled"
    again = polled.put(queued["cancel_url"], headers=AUTH)
    assert again.status_code == 400 and again.json()["status"] == "ALREADY_COMPLETED"
    account = polled.get(f"/_emulator/keys/{KEY}").json()
    assert account["balance_usd"] == "1000" and account["held_usd"] == "0"


def test_cancel_is_refused_once_the_request_runs(polled: httpx.Client,
                                                 origin: OriginServer) -> None:
    queued = submit(polled, {"image_url": f"{origin.url}/small.png"})
    polled.get(queued["status_url"], headers=AUTH)
    assert polled.get(queued["status_url"], headers=AUTH).json()["status"] == "IN_PROGRESS"
    refused = polled.put(queued["cancel_url"], headers=AUTH)
    assert refused.status_code == 400
    assert refused.json()["status"] == "IN_PROGRESS" and refused.json()["detail"]
    assert polled.get(queued["status_url"], headers=AUTH).json()["status"] == "COMPLETED"
    assert polled.get(queued["response_url"], headers=AUTH).status_code == 200


def test_system_error_result_is_500(polled: httpx.Client, origin: OriginServer) -> None:
    queued = submit(polled, {"image_url": f"{origin.url}/small.png"})
    polled.post(f"/_emulator/jobs/{queued['request_id']}/fail",
                json={"status": "error", "message": "GPU fell over"}).raise_for_status()
    status = polled.get(queued["status_url"], headers=AUTH).json()
    assert status["status"] == "COMPLETED" and status["error"] == "GPU fell over"
    result = polled.get(queued["response_url"], headers=AUTH)
    assert result.status_code == 500 and result.headers["x-fal-retryable"] == "true"
    assert result.json()["detail"][0]["type"] == "internal_server_error"


@pytest.mark.parametrize("hook", ["ftp://hooks.example/x", "not a url", "data:image/png;base64,AA"])
def test_bad_webhook_url_is_422(client: httpx.Client, hook: str) -> None:
    response = client.post(f"/queue{REMOVE}", params={"fal_webhook": hook}, headers=AUTH,
                           json={"image_url": "https://example.com/a.png"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "fal_webhook"]


def test_webhook_url_is_accepted(client: httpx.Client, origin: OriginServer) -> None:
    queued = submit(client, {"image_url": f"{origin.url}/small.png"},
                    query="?fal_webhook=https://hooks.example/fal")
    assert queued["status"] == "IN_QUEUE"


# -- storage ------------------------------------------------------------------------------------
def token(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/rest/storage/auth/token", params={"storage_type": "fal-cdn-v3"},
                           headers=AUTH, json={})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_upload_then_use_the_access_url(client: httpx.Client, origin: OriginServer) -> None:
    grant = token(client)
    base = str(client.base_url).rstrip("/")
    assert grant["token_type"] == "Bearer" and grant["base_url"] == f"{base}/cdn"
    assert grant["expires_at"].endswith("+00:00")
    photo = png_bytes(origin.small)
    upload = client.post("/cdn/files/upload", content=photo, headers={
        "Authorization": f"Bearer {grant['token']}", "Content-Type": "image/png",
        "X-Fal-File-Name": "cat.png"})
    assert upload.status_code == 200, upload.text
    access = upload.json()["access_url"]
    assert access.startswith(f"{base}/cdn/files/") and access.endswith(".png")
    assert upload.json()["file_size"] == len(photo)
    assert client.get(access).content == photo
    run = client.post(REMOVE, json={"image_url": access}, headers=AUTH)
    assert run.status_code == 200, run.text
    out = decode_png(client.get(run.json()["image"]["url"]).content)
    assert out.size == (origin.small.shape[1], origin.small.shape[0])


NO_CDN_TOKEN = ("Missing CDN token: send 'Authorization: Bearer <token>' from "
                "POST rest.fal.ai/storage/auth/token")


@pytest.mark.parametrize(("auth", "detail"), [
    (None, NO_CDN_TOKEN), ("Bearer", NO_CDN_TOKEN), ("Key fal-key", NO_CDN_TOKEN),
    ("Bearer forged.0123", "Invalid CDN token"), ("bearer forged", "Invalid CDN token")])
def test_upload_needs_a_valid_token(client: httpx.Client, auth: str | None,
                                    detail: str) -> None:
    headers = {"Content-Type": "image/png"}
    if auth is not None:
        headers["Authorization"] = auth
    response = client.post("/cdn/files/upload", content=b"\x89PNG", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": detail}


def test_upload_token_expires(client: httpx.Client) -> None:
    grant = token(client)
    client.post("/_emulator/clock/advance", json={"seconds": 3601}).raise_for_status()
    response = client.post("/cdn/files/upload", content=b"data", headers={
        "Authorization": f"Bearer {grant['token']}"})
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_storage_token_needs_a_key(client: httpx.Client) -> None:
    assert client.post("/rest/storage/auth/token", json={}).status_code == 401
    other = client.post("/rest/storage/auth/token", params={"storage_type": "gcs"},
                        headers=AUTH, json={})
    assert other.status_code == 422


def test_unknown_cdn_file_is_404(client: httpx.Client) -> None:
    response = client.get("/cdn/files/tiger/nothing-here.png")
    assert response.status_code == 404 and response.json() == {"detail": "File not found"}


def test_in_process_jobs_read_their_own_cdn_urls(origin: OriginServer) -> None:
    """In-process (ASGI transport: http://testserver is not reachable), a fal result URL and an
    upload's access_url still work as inputs: the emulator reads them without HTTP."""
    import asyncio

    from emulator.app import create_app

    app = create_app(emulator_settings())
    photo = png_bytes(origin.small)

    async def scenario() -> None:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                timeout=60) as tc:
            grant = (await tc.post("/rest/storage/auth/token", headers=AUTH, json={})).json()
            upload = (await tc.post("/cdn/files/upload", content=photo, headers={
                "Authorization": f"Bearer {grant['token']}",
                "Content-Type": "image/png"})).json()
            assert upload["access_url"].startswith("http://testserver/cdn/files/")
            assert upload["access_url"].endswith(".png")
            first = await tc.post(REMOVE, json={"image_url": upload["access_url"]},
                                  headers=AUTH)
            assert first.status_code == 200, first.text
            chained = await tc.post(REMOVE, json={"image_url": first.json()["image"]["url"]},
                                    headers=AUTH)
            assert chained.status_code == 200, chained.text
            missing = await tc.post(REMOVE, headers=AUTH, json={
                "image_url": "http://testserver/cdn/files/lion/nothing.png"})
            assert missing.status_code == 422
            assert missing.json()["detail"][0]["type"] == "file_download_error"

    asyncio.run(scenario())
