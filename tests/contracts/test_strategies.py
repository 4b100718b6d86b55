"""The hypothesis strategies built from the contracts draw requests the emulator accepts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator import contracts
from emulator.testing.server import EmulatorServer
from emulator.testing.strategies import (
    WEBHOOK_BASE,
    ContractRequest,
    requests,
    tiny_images,
)
from tests.conftest import checked_client
from tests.contracts.conftest import KEY

FAST = settings(max_examples=8, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


#: vendor -> (submit operation, its status, where the status is, where the image is)
SUBMITS: dict[str, tuple[str, int, Callable[[dict[str, Any]], str],
                         Callable[[dict[str, Any]], Any]]] = {
    "pixazo": ("submit", 202, lambda b: httpx.URL(b["polling_url"]).path,
               lambda body: body["image_url"]),
    "apiframe": ("submit", 202, lambda b: f"/v2/jobs/{b['jobId']}",
                 lambda body: body["briaBgRemoveParams"]["image"]),
    "gmicloud": ("submit", 200,
                 lambda b: f"/api/v1/ie/requestqueue/apikey/requests/{b['request_id']}",
                 lambda body: body["payload"]["image"]),
    "fal": ("submit.remove", 200, lambda b: httpx.URL(b["status_url"]).path,
            lambda body: body["image_url"]),
    "runflow": ("submit", 201, lambda b: f"/v1/runs/{b['id']}",
                lambda body: body["input"]["image_url"]),
}


@pytest.mark.parametrize("vendor", list(SUBMITS))
def test_drawn_submits_are_accepted_and_break_nothing(fast_emulator: EmulatorServer,
                                                      vendor: str) -> None:
    operation, status, status_path, image_of = SUBMITS[vendor]
    seen: list[ContractRequest] = []

    @FAST
    @given(request=requests(vendor, operation, api_key=KEY))
    def run(request: ContractRequest) -> None:
        with checked_client(fast_emulator.url) as client:
            response = request.send(client)
            assert response.status_code == status, response.text
            polled = client.get(status_path(response.json()), headers=dict(request.headers))
            assert polled.status_code == 200
        seen.append(request)

    with checked_client(fast_emulator.url) as client:
        client.post("/_emulator/reset").raise_for_status()
        run()
        assert client.get("/_emulator/violations").json()["violations"] == []
    assert len(seen) >= 4
    assert all(image_of(r.body) in tiny_images() for r in seen)


def test_drawn_uploads_carry_their_bytes(fast_emulator: EmulatorServer) -> None:
    """fal's CDN upload has a binary body: drawn requests send it raw (the token is the key)."""
    with checked_client(fast_emulator.url) as client:
        token = client.post("/rest/storage/auth/token", headers={"Authorization": f"Key {KEY}"},
                            json={}).json()["token"]
        sent: list[bytes] = []

        @FAST
        @given(request=requests("fal", "cdn.upload", api_key=token))
        def run(request: ContractRequest) -> None:
            assert isinstance(request.body, bytes) and request.media_type
            response = request.send(client)
            assert response.status_code == 200, response.text
            assert client.get(response.json()["access_url"]).content == request.body
            sent.append(request.body)

        run()
    assert len(sent) >= 4


def _image_of(request: ContractRequest) -> str:
    return str(SUBMITS[request.vendor][3](request.body))


@pytest.mark.parametrize("name", contracts.names())
def test_every_operation_draws_requests(name: str) -> None:
    ops = contracts.load(name).operations

    @settings(max_examples=5, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        for op in ops.values():
            request = data.draw(requests(name, op.operation_id))
            assert request.method == op.method
            assert op.match(request.path) is not None
            if op.security:
                assert any(k.lower() in {h.lower() for h in request.headers}
                           for s in op.security[0] for k in [s.parameter])

    run()


def test_webhooks_are_loopback_and_images_can_be_samples() -> None:
    @settings(max_examples=30, deadline=None, derandomize=True)
    @given(request=requests("pixazo", "submit", base_url="http://127.0.0.1:8000"))
    def run(request: ContractRequest) -> None:
        webhook = request.headers.get("X-Webhook-URL")
        assert webhook is None or webhook.startswith(WEBHOOK_BASE)
        image = _image_of(request)
        assert image in tiny_images() or image.startswith(
            "http://127.0.0.1:8000/_emulator/samples/")

    run()


def test_fixed_path_parameters(fast_client: httpx.Client) -> None:
    submitted = fast_client.post("/v2/images/background-remove", headers={"X-API-Key": KEY},
                                 json={"model": "bria-bg-remove",
                                       "briaBgRemoveParams": {"image": tiny_images()[2]}})
    job_id = submitted.json()["jobId"]

    @settings(max_examples=3, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(request=requests("apiframe", "status", api_key=KEY, path_parameters={"id": job_id}))
    def run(request: ContractRequest) -> None:
        assert request.path == f"/v2/jobs/{job_id}"
        response = request.send(fast_client)
        assert response.status_code == 200
        assert response.json()["status"] == "COMPLETED"

    run()


def test_unknown_operation_is_refused() -> None:
    with pytest.raises(ValueError, match="known: submit, status"):
        requests("pixazo", "cancel")
    with pytest.raises(contracts.ContractError):
        requests("nobody")
