"""Webhooks as each vendor sends them, received by a real server that verifies signatures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from emulator.core.files import StoredFile
from emulator.testing.server import EmulatorServer
from emulator.testing.sink import Received, WebhookSink
from tests.conftest import OriginServer, emulator_settings
from tests.vendors.drivers import (
    APIFRAME,
    BRIA,
    FAL,
    PIXAZO,
    RUNFLOW,
    WEBHOOK_DRIVERS,
    Driver,
)

ids = [d.slug for d in WEBHOOK_DRIVERS]


@pytest.fixture()
def sink() -> Iterator[WebhookSink]:
    with WebhookSink() as s:
        yield s


@pytest.fixture(scope="module")
def virtual() -> Iterator[EmulatorServer]:
    """An emulator whose clock moves only when advanced (for retry schedules)."""
    with EmulatorServer(emulator_settings(virtual_clock=True)) as server:
        yield server


def wait_deliveries(client: httpx.Client, job_id: str, *, attempts: int | None = None,
                    state: str | None = None, timeout_s: float = 10) -> list[dict[str, Any]]:
    """Deliveries of a job once they reach ``attempts`` attempts and/or ``state``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found: list[dict[str, Any]] = client.get(
            "/_emulator/webhooks", params={"job_id": job_id}).json()["deliveries"]
        if found and (attempts is None or len(found[0]["attempts"]) >= attempts) and (
                state is None or all(d["state"] == state for d in found)):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def verify_fal(client: httpx.Client, got: Received) -> None:
    """fal's check (docs/vendors/fal.md): ED25519 over id, user, timestamp and sha256(body),
    via JWKS."""
    jwks = client.get("/rest/.well-known/jwks.json").json()
    raw = base64.urlsafe_b64decode(jwks["keys"][0]["x"] + "==")
    h = got.headers
    message = "\n".join([h["x-fal-webhook-request-id"], h["x-fal-webhook-user-id"],
                         h["x-fal-webhook-timestamp"], hashlib.sha256(got.body).hexdigest()])
    Ed25519PublicKey.from_public_bytes(raw).verify(
        bytes.fromhex(h["x-fal-webhook-signature"]), message.encode())


@pytest.mark.parametrize("vendor", WEBHOOK_DRIVERS, ids=ids)
def test_finished_job_is_posted_once_without_polling(
        client: httpx.Client, vendor: Driver, origin: OriginServer, sink: WebhookSink) -> None:
    submitted = vendor.submit_with_webhook(client, f"{origin.url}/small.png", f"{sink.url}/hook")
    assert submitted.status_code < 300, submitted.text
    got = sink.wait_for(1)
    assert len(got) == 1 and got[0].path == "/hook"
    assert got[0].headers["content-type"] == "application/json"
    journal = wait_deliveries(client, vendor.job_id(submitted), state="delivered")
    assert len(journal) == 1 and journal[0]["attempts"][0]["status"] == 200
    assert journal[0]["body"].encode() == got[0].body
    time.sleep(0.2)
    assert len(sink.received) == 1


@pytest.mark.parametrize("vendor", [PIXAZO, APIFRAME], ids=["pixazo", "apiframe"])
def test_pixazo_and_apiframe_post_the_status_body(
        client: httpx.Client, vendor: Driver, origin: OriginServer, sink: WebhookSink) -> None:
    submitted = vendor.submit_with_webhook(client, f"{origin.url}/small.png", f"{sink.url}/h")
    payload = sink.wait_for(1)[0].json()
    assert vendor.status(payload) == vendor.status_words["succeeded"]
    assert payload == vendor.poll(client, vendor.poll_url(client, submitted)).json()
    assert client.get(vendor.urls(payload)[0]).status_code == 200
    assert "x-fal-webhook-signature" not in sink.received[0].headers


@pytest.mark.parametrize("vendor", WEBHOOK_DRIVERS, ids=ids)
def test_failed_job_is_posted_too(client: httpx.Client, vendor: Driver, origin: OriginServer,
                                  sink: WebhookSink) -> None:
    vendor.submit_with_webhook(client, f"{origin.url}/missing.png", f"{sink.url}/hook")
    payload = sink.wait_for(1)[0].json()
    if vendor is FAL:
        assert payload["status"] == "ERROR" and payload["error"] == "Invalid status code: 422"
        assert "404" in payload["payload"]["detail"][0]["msg"]
    elif vendor is RUNFLOW:
        assert payload["event"] == "run.failed" and payload["status"] == "failed"
        assert payload["output"] is None
    else:
        assert vendor.status(payload) == vendor.status_words["failed"]
        assert "404" in vendor.error(payload)


def test_fal_webhook_is_signed_and_verifies_against_the_jwks(
        client: httpx.Client, origin: OriginServer, sink: WebhookSink) -> None:
    submitted = FAL.submit_with_webhook(client, f"{origin.url}/small.png", f"{sink.url}/fal")
    got = sink.wait_for(1)[0]
    verify_fal(client, got)
    body = got.json()
    request_id = submitted.json()["request_id"]
    assert body["request_id"] == request_id == body["gateway_request_id"]
    assert body["status"] == "OK"
    assert client.get(body["payload"]["image"]["url"]).content[:4] == b"\x89PNG"
    assert abs(int(got.headers["x-fal-webhook-timestamp"]) - time.time()) < 60
    tampered = Received(got.path, got.body.replace(b'"OK"', b'"ERROR"'), got.headers, got.at,
                        got.answered)
    with pytest.raises(InvalidSignature):
        verify_fal(client, tampered)


def test_fal_sync_mode_webhook_builds_its_data_uri_off_the_event_loop(
        client: httpx.Client, origin: OriginServer, sink: WebhookSink,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A queued ``sync_mode`` request's webhook payload holds the output as a data URI: its
    base64 (milliseconds per megapixel) is encoded in a worker thread, never on the loop."""
    calls: list[tuple[str, bool]] = []
    encode = StoredFile.data_uri

    def recording(self: StoredFile) -> str:
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        calls.append((threading.current_thread().name, on_loop))
        return encode(self)

    monkeypatch.setattr(StoredFile, "data_uri", recording)
    submitted = client.post(FAL.submit_path, params={"fal_webhook": f"{sink.url}/sync"},
                            json={"image_url": f"{origin.url}/small.png", "sync_mode": True},
                            headers=FAL.headers())
    assert submitted.status_code == 200, submitted.text
    got = sink.wait_for(1)[0]
    verify_fal(client, got)
    image = got.json()["payload"]["image"]
    assert image["url"].startswith("data:image/png;base64,")
    assert base64.b64decode(image["url"].split(",", 1)[1])[:4] == b"\x89PNG"
    assert calls and not any(on_loop for _, on_loop in calls), calls


def test_runflow_callback_is_signed_with_the_callback_secret(
        client: httpx.Client, origin: OriginServer, sink: WebhookSink) -> None:
    unsigned = RUNFLOW.submit_with_webhook(client, f"{origin.url}/small.png", f"{sink.url}/a")
    first = sink.wait_for(1)[0]
    assert first.headers["runflow-request-id"]
    assert "runflow-signature" not in first.headers
    created = client.post("/v1/callback-secrets", json={"label": "ci"},
                          headers=RUNFLOW.headers())
    assert created.status_code == 201
    secret = created.json()["plain_secret"]
    assert secret.startswith("whsec_") and created.json()["label"] == "ci"
    signed = RUNFLOW.submit_with_webhook(client, f"{origin.url}/small.png", f"{sink.url}/b")
    second = sink.wait_for(2)[1]
    expected = hmac.new(secret.encode(), second.body, hashlib.sha256).hexdigest()
    assert second.headers["runflow-signature"] == expected
    body = second.json()
    assert body["event"] == "run.completed" and body["status"] == "succeeded"
    assert body["run_id"] == RUNFLOW.job_id(signed) != RUNFLOW.job_id(unsigned)
    assert body["metadata"] == {"order": 7}
    assert body["output"]["outputs"][0]["url"].startswith("http")
    assert body["created_at"] and body["completed_at"] and body["duration_ms"] >= 0


def test_runflow_retries_5xx_at_1_then_2_seconds(virtual: EmulatorServer,
                                                 origin: OriginServer) -> None:
    with WebhookSink(fail_first=2) as sink, httpx.Client(base_url=virtual.url) as client:
        client.post("/_emulator/reset")
        job_id = RUNFLOW.job_id(RUNFLOW.submit_with_webhook(
            client, f"{origin.url}/small.png", f"{sink.url}/r"))
        first = wait_deliveries(client, job_id, attempts=1)[0]
        assert first["state"] == "pending"
        assert first["next_at"] == pytest.approx(first["attempts"][0]["at"] + 1.0, abs=0.01)
        client.post("/_emulator/clock/advance", json={"seconds": 1})
        second = wait_deliveries(client, job_id, attempts=2)[0]
        assert second["next_at"] == pytest.approx(second["attempts"][1]["at"] + 2.0, abs=0.01)
        client.post("/_emulator/clock/advance", json={"seconds": 2})
        done = wait_deliveries(client, job_id, state="delivered")[0]
    assert [a["status"] for a in done["attempts"]] == [500, 500, 200]
    assert len(sink.received) == 3


def test_runflow_does_not_retry_4xx(virtual: EmulatorServer, origin: OriginServer) -> None:
    with WebhookSink(fail_first=5, status_when_failing=410) as sink, \
            httpx.Client(base_url=virtual.url) as client:
        client.post("/_emulator/reset")
        job_id = RUNFLOW.job_id(RUNFLOW.submit_with_webhook(
            client, f"{origin.url}/small.png", f"{sink.url}/r"))
        done = wait_deliveries(client, job_id, state="failed")[0]
    assert [a["status"] for a in done["attempts"]] == [410]


def test_fal_retries_ten_times_over_two_hours(virtual: EmulatorServer,
                                              origin: OriginServer) -> None:
    with WebhookSink(fail_first=100) as sink, httpx.Client(base_url=virtual.url) as client:
        client.post("/_emulator/reset")
        job_id = FAL.job_id(FAL.submit_with_webhook(client, f"{origin.url}/small.png",
                                                    f"{sink.url}/f"))
        delays = []
        for n in range(1, 11):
            pending = wait_deliveries(client, job_id, attempts=n)[0]
            delay = pending["next_at"] - pending["attempts"][-1]["at"]
            delays.append(delay)
            client.post("/_emulator/clock/advance", json={"seconds": delay})
        done = wait_deliveries(client, job_id, state="failed")[0]
    assert len(done["attempts"]) == 11 == len(sink.received)
    assert 1.9 * 3600 <= sum(delays) <= 2.1 * 3600
    stamps = [int(r.headers["x-fal-webhook-timestamp"]) for r in sink.received]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 7000


def test_undocumented_retries_mean_one_attempt_and_resend_replays(
        client: httpx.Client, origin: OriginServer) -> None:
    with WebhookSink(fail_first=1) as failing:
        submitted = PIXAZO.submit_with_webhook(client, f"{origin.url}/small.png",
                                               f"{failing.url}/hook")
        deliveries = wait_deliveries(client, PIXAZO.job_id(submitted), state="failed")
        assert len(deliveries[0]["attempts"]) == 1
        replay = client.post(f"/_emulator/webhooks/{deliveries[0]['id']}/resend")
        assert replay.status_code == 202 and replay.json()["resend_of"] == deliveries[0]["id"]
        received = failing.wait_for(2)
        assert len(received) == 2 and received[1].body == received[0].body


def test_webhook_url_must_be_a_url(client: httpx.Client, origin: OriginServer) -> None:
    for vendor in WEBHOOK_DRIVERS:
        bad = vendor.submit_with_webhook(client, f"{origin.url}/small.png", "ftp://x/y")
        assert bad.status_code in (400, 422), (vendor.slug, bad.text)


def test_webhooks_fire_under_time_progression(origin: OriginServer, sink: WebhookSink) -> None:
    settings = emulator_settings(progression="time", latency="vendor", virtual_clock=True)
    with EmulatorServer(settings) as server, httpx.Client(base_url=server.url) as client:
        APIFRAME.submit_with_webhook(client, f"{origin.url}/small.png", f"{sink.url}/h")
        assert sink.wait_for(1, timeout_s=1.0) == []  # the clock has not moved
        client.post("/_emulator/clock/advance", json={"seconds": 5}).raise_for_status()
        payload = sink.wait_for(1)[0].json()
    assert payload["status"] == "COMPLETED"


def inject(client: httpx.Client, **rule: Any) -> None:
    response = client.post("/_emulator/faults", json=rule)
    assert response.status_code in (200, 201), response.text


def test_fault_forged_signature_fails_verification(
        client: httpx.Client, origin: OriginServer, sink: WebhookSink) -> None:
    inject(client, vendor="fal", webhook="forged-signature", times=1)
    FAL.submit_with_webhook(client, f"{origin.url}/small.png", f"{sink.url}/f")
    got = sink.wait_for(1)[0]
    with pytest.raises(InvalidSignature):
        verify_fal(client, got)
    FAL.submit_with_webhook(client, f"{origin.url}/small.png", f"{sink.url}/f")
    verify_fal(client, sink.wait_for(2)[1])  # times=1: the next one is genuine


def test_fault_stale_timestamp_is_validly_signed_but_an_hour_old(
        client: httpx.Client, origin: OriginServer, sink: WebhookSink) -> None:
    inject(client, vendor="fal", webhook="stale-timestamp")
    FAL.submit_with_webhook(client, f"{origin.url}/small.png", f"{sink.url}/f")
    got = sink.wait_for(1)[0]
    verify_fal(client, got)
    assert time.time() - int(got.headers["x-fal-webhook-timestamp"]) >= 3500


def test_fault_forged_runflow_signature(client: httpx.Client, origin: OriginServer,
                                        sink: WebhookSink) -> None:
    secret = client.post("/v1/callback-secrets", json={"label": "x"},
                         headers=RUNFLOW.headers()).json()["plain_secret"]
    inject(client, vendor="runflow", webhook="forged-signature")
    RUNFLOW.submit_with_webhook(client, f"{origin.url}/small.png", f"{sink.url}/r")
    got = sink.wait_for(1)[0]
    expected = hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
    assert len(got.headers["runflow-signature"]) == 64
    assert got.headers["runflow-signature"] != expected


def test_fault_drop_and_duplicate(client: httpx.Client, origin: OriginServer,
                                  sink: WebhookSink) -> None:
    inject(client, vendor="apiframe", webhook="drop", times=1)
    dropped = APIFRAME.job_id(APIFRAME.submit_with_webhook(
        client, f"{origin.url}/small.png", f"{sink.url}/a"))
    assert wait_deliveries(client, dropped, state="dropped")[0]["faults"] == ["drop"]
    inject(client, vendor="apiframe", webhook="duplicate", times=1)
    twice = APIFRAME.job_id(APIFRAME.submit_with_webhook(
        client, f"{origin.url}/small.png", f"{sink.url}/a"))
    got = sink.wait_for(2)
    assert len(got) == 2 and got[0].body == got[1].body
    assert got[0].json()["jobId"] == twice
    assert len(wait_deliveries(client, twice, state="delivered")) == 2


def test_fault_delay_on_the_virtual_clock(virtual: EmulatorServer, origin: OriginServer) -> None:
    with WebhookSink() as sink, httpx.Client(base_url=virtual.url) as client:
        client.post("/_emulator/reset")
        inject(client, vendor="pixazo", webhook="delay:30")
        job_id = PIXAZO.job_id(PIXAZO.submit_with_webhook(client, f"{origin.url}/small.png",
                                                          f"{sink.url}/p"))
        queued = wait_deliveries(client, job_id)[0]
        assert queued["faults"] == ["delay:30"]
        assert queued["next_at"] - queued["created_at"] == pytest.approx(30)
        assert sink.wait_for(1, timeout_s=0.5) == []
        client.post("/_emulator/clock/advance", json={"seconds": 30})
        assert len(sink.wait_for(1)) == 1


def test_fault_reorder_sends_the_held_delivery_after_the_next(
        client: httpx.Client, origin: OriginServer, sink: WebhookSink) -> None:
    inject(client, vendor="pixazo", webhook="reorder", times=1)
    first = PIXAZO.job_id(PIXAZO.submit_with_webhook(client, f"{origin.url}/small.png",
                                                     f"{sink.url}/1"))
    wait_deliveries(client, first)
    assert sink.wait_for(1, timeout_s=0.5) == []
    second = PIXAZO.job_id(PIXAZO.submit_with_webhook(client, f"{origin.url}/small.png",
                                                      f"{sink.url}/2"))
    got = sink.wait_for(2)
    assert [g.json()["request_id"] for g in got] == [second, first]


def bria_signature_valid(got: Received, token: str = "test-key") -> bool:
    """Bria's check as docs/vendors/bria.md gives it (no SDK needed): the key is
    ``HMAC-SHA256(key=api_token, msg="bria-webhook-signing-v1")``; any ``v1=`` token of the
    comma-separated header equals base64 HMAC-SHA256 over ``"{id}.{timestamp}.{raw body}"``."""
    h = got.headers
    key = hmac.new(token.encode(), b"bria-webhook-signing-v1", hashlib.sha256).digest()
    message = f"{h['bria-webhook-id']}.{h['bria-webhook-timestamp']}.".encode() + got.body
    expected = base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
    tokens = [t.strip() for t in h["bria-webhook-signature"].split(",")]
    return any(t.startswith("v1=") and hmac.compare_digest(t[3:], expected) for t in tokens)


def test_bria_webhook_is_signed_with_the_token_derived_key(
        client: httpx.Client, origin: OriginServer, sink: WebhookSink) -> None:
    submitted = BRIA.submit_with_webhook(client, f"{origin.url}/small.png", f"{sink.url}/b")
    got = sink.wait_for(1)[0]
    assert got.headers["bria-webhook-id"] == BRIA.job_id(submitted)
    assert abs(time.time() - int(got.headers["bria-webhook-timestamp"])) < 600
    assert bria_signature_valid(got)
    assert not bria_signature_valid(got, token="another-token")
    body = got.json()
    assert body["status"] == "COMPLETED" and body["request_id"] == BRIA.job_id(submitted)
    assert body["result"]["image_url"].startswith("http")


def test_bria_faults_forge_the_signature_or_age_the_timestamp(
        client: httpx.Client, origin: OriginServer, sink: WebhookSink) -> None:
    inject(client, vendor="bria", webhook="forged-signature", times=1)
    BRIA.submit_with_webhook(client, f"{origin.url}/small.png", f"{sink.url}/b")
    assert not bria_signature_valid(sink.wait_for(1)[0])
    inject(client, vendor="bria", webhook="stale-timestamp", times=1)
    BRIA.submit_with_webhook(client, f"{origin.url}/small.png", f"{sink.url}/b")
    stale = sink.wait_for(2)[1]
    assert bria_signature_valid(stale)
    assert time.time() - int(stale.headers["bria-webhook-timestamp"]) >= 3500
