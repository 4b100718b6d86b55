"""Webhooks as each vendor sends them, received by a real server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from emulator.testing.server import EmulatorServer
from emulator.testing.sink import WebhookSink
from tests.conftest import OriginServer, emulator_settings
from tests.vendors.drivers import APIFRAME, PIXAZO, Driver


@pytest.fixture()
def sink() -> Iterator[WebhookSink]:
    with WebhookSink() as s:
        yield s


def submit_with_webhook(client: httpx.Client, vendor: Driver, image: str, hook: str
                        ) -> httpx.Response:
    if vendor is PIXAZO:
        return vendor.submit(client, image, headers={"X-Webhook-URL": hook})
    body = {**vendor.body(image), "webhook_url": hook}
    return client.post(vendor.submit_path, json=body, headers=vendor.headers())


@pytest.mark.parametrize("vendor", [PIXAZO, APIFRAME], ids=["pixazo", "apiframe"])
def test_final_status_is_posted_without_polling(client: httpx.Client, vendor: Driver,
                                                origin: OriginServer, sink: WebhookSink) -> None:
    submitted = submit_with_webhook(client, vendor, f"{origin.url}/small.png",
                                    f"{sink.url}/hook")
    assert submitted.status_code == 202
    received = sink.wait_for(1)
    assert len(received) == 1
    payload = received[0].json()
    assert vendor.status(payload) == vendor.status_words["succeeded"]
    polled = vendor.poll(client, vendor.poll_url(client, submitted)).json()
    assert payload == polled
    assert client.get(vendor.urls(payload)[0]).status_code == 200
    journal = client.get("/_emulator/webhooks",
                         params={"job_id": vendor.job_id(submitted)}).json()["deliveries"]
    assert [d["state"] for d in journal] == ["delivered"]
    assert journal[0]["attempts"][0]["status"] == 200


@pytest.mark.parametrize("vendor", [PIXAZO, APIFRAME], ids=["pixazo", "apiframe"])
def test_failed_job_is_posted_too(client: httpx.Client, vendor: Driver, origin: OriginServer,
                                  sink: WebhookSink) -> None:
    submit_with_webhook(client, vendor, f"{origin.url}/missing.png", f"{sink.url}/hook")
    payload = sink.wait_for(1)[0].json()
    assert vendor.status(payload) == vendor.status_words["failed"]
    assert "404" in vendor.error(payload)


def test_undocumented_retries_mean_one_attempt_and_resend_replays(
        client: httpx.Client, origin: OriginServer) -> None:
    with WebhookSink(fail_first=1) as failing:
        submitted = submit_with_webhook(client, PIXAZO, f"{origin.url}/small.png",
                                        f"{failing.url}/hook")
        job_id = PIXAZO.job_id(submitted)
        failing.wait_for(1)
        deliveries = _wait_state(client, job_id, "failed")
        assert len(deliveries[0]["attempts"]) == 1
        replay = client.post(f"/_emulator/webhooks/{deliveries[0]['id']}/resend")
        assert replay.status_code == 202
        received = failing.wait_for(2)
        assert len(received) == 2 and received[1].body == received[0].body


def test_webhook_url_must_be_a_url(client: httpx.Client, origin: OriginServer) -> None:
    bad = submit_with_webhook(client, APIFRAME, f"{origin.url}/small.png", "not a url")
    assert bad.status_code == 422 and bad.json()["field"] == "webhook_url"
    bad = submit_with_webhook(client, PIXAZO, f"{origin.url}/small.png", "ftp://x/y")
    assert bad.status_code == 400


def test_webhooks_fire_under_time_progression(origin: OriginServer, sink: WebhookSink) -> None:
    settings = emulator_settings(progression="time", latency="vendor", virtual_clock=True)
    with EmulatorServer(settings) as server, httpx.Client(base_url=server.url) as client:
        submit_with_webhook(client, APIFRAME, f"{origin.url}/small.png", f"{sink.url}/h")
        assert sink.wait_for(1, timeout_s=1.5) == []  # the clock has not moved
        client.post("/_emulator/clock/advance", json={"seconds": 5}).raise_for_status()
        payload = sink.wait_for(1)[0].json()
    assert payload["status"] == "COMPLETED"


def _wait_state(client: httpx.Client, job_id: str, state: str) -> list[dict[str, object]]:
    import time

    deadline = time.monotonic() + 10
    while True:
        deliveries: list[dict[str, object]] = client.get(
            "/_emulator/webhooks", params={"job_id": job_id}).json()["deliveries"]
        if deliveries and all(d["state"] == state for d in deliveries):
            return deliveries
        assert time.monotonic() < deadline, deliveries
        time.sleep(0.05)
