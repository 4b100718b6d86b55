"""Bria's official SDK (``bria-client``, pinned in the ``sdk`` extra) against a served emulator,
aimed by ``BRIA_BASE_URL`` and ``BRIA_API_TOKEN`` alone (the SDK reads them with
pydantic-settings when a client is built): ``run`` (``sync: true``), ``submit`` + ``poll``,
the async client, a signed webhook checked with the SDK's own verifier, the SDK's exceptions
for 402, 429 and an unknown id, and the same flow over ``--tls``.
"""

from __future__ import annotations

import asyncio
import io
import ssl
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image

from emulator.testing.server import EmulatorServer

bria_client = pytest.importorskip("bria_client")
from bria_client import BriaAsyncClient, BriaSyncClient  # noqa: E402
from bria_client.toolkit import BriaException, verify_webhook_signature  # noqa: E402

ENDPOINT = "image/edit/remove_background"
SAMPLE = "/_emulator/samples/chelsea.jpg"
WIDTH, HEIGHT = 451, 300
TOKEN = "bria-test-token"


def aim(monkeypatch: pytest.MonkeyPatch, base: str, token: str = TOKEN) -> None:
    """What a user does: the two environment variables the SDK documents."""
    monkeypatch.setenv("BRIA_BASE_URL", base)
    monkeypatch.setenv("BRIA_API_TOKEN", token)


@pytest.fixture()
def sdk_at(server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> str:
    server.emulator.reset()
    aim(monkeypatch, server.url)
    return server.url


def assert_cutout(url: str, *, verify: Any = True) -> None:
    png = httpx.get(url, verify=verify, timeout=30)
    assert png.status_code == 200
    image = Image.open(io.BytesIO(png.content))
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (WIDTH, HEIGHT))


def test_run_answers_the_result_at_once(sdk_at: str) -> None:
    with BriaSyncClient() as client:
        response = client.run(ENDPOINT, {"image": sdk_at + SAMPLE}, raise_for_status=True)
    assert response.status == "COMPLETED" and response.error is None
    assert len(response.request_id) == 32
    assert_cutout(response.result.image_url)


def test_submit_then_poll(sdk_at: str, server: EmulatorServer) -> None:
    with BriaSyncClient() as client:
        submitted = client.submit(ENDPOINT, {"image": sdk_at + SAMPLE}, raise_for_status=True)
        assert submitted.status == "IN_PROGRESS"
        assert submitted.status_url == f"{sdk_at}/v2/status/{submitted.request_id}"
        assert client.status(submitted.request_id) == "IN_PROGRESS"  # polls:2
        done = client.poll(submitted, interval=0.05, timeout=30)
    assert done.status == "COMPLETED"
    assert_cutout(done.result.image_url)
    job = server.emulator.jobs.find(submitted.request_id, vendor="bria", api_key=TOKEN)
    assert job is not None and job.charged_usd == Decimal("0.018")


def test_the_async_client_runs_and_polls(sdk_at: str) -> None:
    async def flow() -> tuple[Any, Any]:
        async with BriaAsyncClient() as client:
            ran = await client.run(ENDPOINT, {"image": sdk_at + SAMPLE},
                                   raise_for_status=True)
            submitted = await client.submit(ENDPOINT, {"image": sdk_at + SAMPLE},
                                            raise_for_status=True)
            polled = await client.poll(submitted, interval=0.05, timeout=30)
            return ran, polled

    ran, polled = asyncio.run(flow())
    assert ran.status == polled.status == "COMPLETED"
    assert_cutout(ran.result.image_url)
    assert_cutout(polled.result.image_url)


@pytest.mark.parametrize("status", [402, 429])
def test_a_fault_token_surfaces_as_the_sdk_exception(server: EmulatorServer, status: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    server.emulator.reset()
    aim(monkeypatch, server.url, token=f"fault.status={status}")
    with BriaSyncClient() as client:
        response = client.submit(ENDPOINT, {"image": server.url + SAMPLE})
        assert response.status == "ERROR" and response.error is not None
        assert response.error.code == status
        with pytest.raises(BriaException) as raised:
            client.run(ENDPOINT, {"image": server.url + SAMPLE}, raise_for_status=True)
    assert raised.value.code == status


def test_a_drained_balance_raises_402(sdk_at: str) -> None:
    put = httpx.put(f"{sdk_at}/_emulator/keys/{TOKEN}", json={"balance_usd": 0.0})
    assert put.status_code == 200, put.text
    with BriaSyncClient() as client, pytest.raises(BriaException) as raised:
        client.run(ENDPOINT, {"image": sdk_at + SAMPLE}, raise_for_status=True)
    assert raised.value.code == 402


def test_an_unknown_or_foreign_id_raises_404_at_once(sdk_at: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with BriaSyncClient() as client:
        submitted = client.submit(ENDPOINT, {"image": sdk_at + SAMPLE}, raise_for_status=True)
    monkeypatch.setenv("BRIA_API_TOKEN", "someone-else")

    async def poll() -> None:
        async with BriaAsyncClient() as other:
            await other.poll(submitted.request_id, interval=0.05, timeout=30)

    with pytest.raises(BriaException) as raised:
        asyncio.run(poll())  # the async poll would loop on UNKNOWN: 404 ends it
    assert raised.value.code == 404


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []
    arrived = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((dict(self.headers), body))
        _Hook.arrived.set()
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_the_webhook_is_signed_as_the_sdk_verifies(sdk_at: str) -> None:
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    _Hook.received.clear()
    _Hook.arrived.clear()
    try:
        url = f"http://127.0.0.1:{hook.server_address[1]}/bria"
        with BriaSyncClient() as client:
            submitted = client.submit(ENDPOINT, {"image": sdk_at + SAMPLE}, webhook_url=url,
                                      raise_for_status=True)
        assert _Hook.arrived.wait(60), "no callback"
    finally:
        hook.shutdown()
        hook.server_close()
    headers, body = _Hook.received[0]
    assert headers["Bria-Webhook-Id"] == submitted.request_id
    signature = headers["Bria-Webhook-Signature"]
    assert signature.startswith("v1=")
    assert verify_webhook_signature(body, headers["Bria-Webhook-Id"],
                                    headers["Bria-Webhook-Timestamp"], signature, TOKEN)
    assert not verify_webhook_signature(body, submitted.request_id,
                                        headers["Bria-Webhook-Timestamp"], signature,
                                        "another-token")
    payload = httpx.Response(200, content=body).json()
    assert payload["status"] == "COMPLETED" and payload["request_id"] == submitted.request_id
    assert_cutout(payload["result"]["image_url"])


def test_the_sdk_over_tls(tls_server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tls_server.ca_bundle is not None and tls_server.url.startswith("https://")
    aim(monkeypatch, tls_server.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca_bundle))
    with BriaSyncClient() as client:
        response = client.run(ENDPOINT, {"image": tls_server.url + SAMPLE},
                              raise_for_status=True)
        submitted = client.submit(ENDPOINT, {"image": tls_server.url + SAMPLE},
                                  raise_for_status=True)
        done = client.poll(submitted, interval=0.05, timeout=30)
    assert response.result.image_url.startswith("https://")
    assert done.status == "COMPLETED"
    assert_cutout(response.result.image_url,
                  verify=ssl.create_default_context(cafile=str(tls_server.ca_bundle)))
