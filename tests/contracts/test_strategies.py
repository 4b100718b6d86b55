"""The hypothesis strategies built from the contracts draw requests the emulator accepts."""

from __future__ import annotations

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


@pytest.mark.parametrize("vendor", ["pixazo", "apiframe"])
def test_drawn_submits_are_accepted_and_break_nothing(fast_emulator: EmulatorServer,
                                                      vendor: str) -> None:
    seen: list[ContractRequest] = []

    @FAST
    @given(request=requests(vendor, "submit", api_key=KEY))
    def run(request: ContractRequest) -> None:
        with checked_client(fast_emulator.url) as client:
            response = request.send(client)
            assert response.status_code == 202, response.text
            polled = client.get(_status_path(vendor, response.json()),
                                headers=dict(request.headers))
            assert polled.status_code == 200
        seen.append(request)

    with checked_client(fast_emulator.url) as client:
        client.post("/_emulator/reset").raise_for_status()
        run()
        assert client.get("/_emulator/violations").json()["violations"] == []
    assert len(seen) >= 4
    images = [_image_of(r) for r in seen]
    assert all(i in tiny_images() for i in images)


def _status_path(vendor: str, body: dict[str, str]) -> str:
    if vendor == "pixazo":
        return httpx.URL(body["polling_url"]).path
    return f"/v2/jobs/{body['jobId']}"


def _image_of(request: ContractRequest) -> str:
    body = request.body
    assert isinstance(body, dict)
    return str(body["image_url"] if request.vendor == "pixazo"
               else body["briaBgRemoveParams"]["image"])


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
