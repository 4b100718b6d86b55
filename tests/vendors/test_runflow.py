"""Runflow beyond the shared end-to-end tests: dispatching, sync_mode, run fields, validation."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from emulator.testing.server import EmulatorServer
from tests.conftest import OriginServer, decode_png, emulator_settings

SUBMIT = "/v1/models/bria/background/remove/runs"
AUTH = {"Authorization": "Bearer runflow-key"}


def create(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(SUBMIT, json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


def test_run_goes_queued_dispatching_running_succeeded(origin: OriginServer) -> None:
    with EmulatorServer(emulator_settings(progression="polls:3")) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        run = create(client, {"input": {"image_url": f"{origin.url}/small.png"}})
        assert run["status_code"] == "queued" and run["output"] is None
        seen = [client.get(f"/v1/runs/{run['id']}", headers=AUTH).json() for _ in range(5)]
    assert [r["status_code"] for r in seen] == ["queued", "dispatching", "running",
                                                "succeeded", "succeeded"]
    assert [r["cost"] for r in seen] == [None, None, None, "0.018", "0.018"]
    assert seen[1]["started_at"] and seen[0]["started_at"] is None
    done = seen[-1]
    assert isinstance(done["duration_ms"], int) and done["completed_at"]
    (output,) = done["output"]["outputs"]
    assert output["type"] == "image" and output["url"].startswith(server.url)
    h, w = origin.small.shape[:2]
    assert (output["width"], output["height"]) == (w, h)
    assert done["output"]["nsfw_detected"] is None and done["output"]["seed"] is None
    assert done["output"]["timing"]["inference_ms"] > 0


def test_sync_mode_answers_the_finished_run(client: httpx.Client, origin: OriginServer) -> None:
    run = create(client, {"input": {"image_url": f"{origin.url}/small.png", "sync_mode": True},
                          "callback_url": "https://hooks.example/runflow",
                          "metadata": {"order": 42}})
    assert run["status_code"] == "succeeded" and run["cost"] == "0.018"
    assert run["metadata"] == {"order": 42}
    assert run["callback_url"] == "https://hooks.example/runflow"
    url = run["output"]["outputs"][0]["url"]
    assert url.startswith("data:image/png;base64,")
    out = decode_png(base64.b64decode(url.split(",", 1)[1]))
    assert out.mode == "RGBA" and out.size == (origin.small.shape[1], origin.small.shape[0])
    again = client.get(f"/v1/runs/{run['id']}", headers=AUTH).json()
    assert again["output"]["outputs"][0]["url"] == url


def test_failed_run_has_failure_code_and_no_cost(client: httpx.Client,
                                                 origin: OriginServer) -> None:
    run = create(client, {"input": {"image_url": f"{origin.url}/missing.png",
                                    "sync_mode": True}})
    assert run["status_code"] == "failed"
    assert run["failure_code"] == "input_fetch_failed" and "404" in run["failure_message"]
    assert run["cost"] == "0" and run["output"] is None


@pytest.mark.parametrize(("body", "loc"), [
    ({}, ["body", "input"]),
    ({"input": "https://x/a.png"}, ["body", "input"]),
    ({"input": {}}, ["body", "input", "image_url"]),
    ({"input": {"image_url": "gopher://x"}}, ["body", "input", "image_url"]),
    ({"input": {"image_url": "https://x/a.png", "sync_mode": "true"}},
     ["body", "input", "sync_mode"]),
    ({"input": {"image_url": "https://x/a.png", "sync_mode": None}},
     ["body", "input", "sync_mode"]),
    ({"input": {"image_url": "https://x/a.png"}, "callback_url": 5}, ["body", "callback_url"]),
    ({"input": {"image_url": "https://x/a.png"}, "callback_url": "nope"},
     ["body", "callback_url"]),
    ({"input": {"image_url": "https://x/a.png"}, "metadata": [1]}, ["body", "metadata"]),
])
def test_validation_errors_are_422_with_loc(client: httpx.Client, body: dict[str, Any],
                                            loc: list[str]) -> None:
    response = client.post(SUBMIT, json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["loc"] == loc and detail["msg"]


def test_null_callback_and_metadata_are_accepted(client: httpx.Client,
                                                 origin: OriginServer) -> None:
    run = create(client, {"input": {"image_url": f"{origin.url}/small.png"},
                          "callback_url": None, "metadata": None})
    assert run["callback_url"] is None and run["metadata"] is None


@pytest.mark.parametrize("header", ["Key runflow-key", "runflow-key", "Bearer"])
def test_bad_authorization_is_401(client: httpx.Client, header: str) -> None:
    response = client.get("/v1/runs/x", headers={"Authorization": header})
    assert response.status_code == 401 and isinstance(response.json()["detail"], str)
