"""Webhooks: the emulator delivers to ``webhook_sink``; the client's receiver checks what came.

fal signs with ED25519 (keys from the JWKS the emulator serves), Runflow with HMAC-SHA256 and a
callback secret, Bria with HMAC-SHA256 keyed by the API token; Pixazo and Apiframe sign nothing,
so only submitted jobs are accepted. Every job's outcome is handled once, however often it is
delivered.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bgremove import (
    BackgroundRemover,
    InvalidSignature,
    JobStatus,
    MalformedWebhook,
    RunflowRemover,
    UnknownJob,
    WebhookReceiver,
)
from emulator.testing.plugin import EmulatorHandle
from emulator.testing.sink import Received, WebhookSink

pytestmark = pytest.mark.rmbg_emulator(virtual_clock=True, progression="polls:2",
                                       engine="grabcut")

MakeRemover = Callable[..., BackgroundRemover]


def deliver(vendor: str, remover: BackgroundRemover, sink: WebhookSink, image_uri: str,
            count: int = 1) -> tuple[str, list[Received]]:
    """Submit with a webhook to the sink; the job id and the first ``count`` deliveries."""
    submission = remover.submit(image_uri, webhook_url=f"{sink.url}/hooks/{vendor}")
    received = sink.wait_for(count)
    assert len(received) >= count, f"{vendor}: {len(received)} of {count} deliveries came"
    return submission.job_id, received


def test_fal_signature_verified_and_result_fetched(
        make_remover: MakeRemover, receiver: WebhookReceiver, webhook_sink: WebhookSink,
        image_uri: str, image_size: tuple[int, int]) -> None:
    fal = make_remover("fal")
    job_id, (delivery,) = deliver("fal", fal, webhook_sink, image_uri)

    event = receiver.handle("fal", delivery.headers, delivery.body)

    assert (event.signed, event.duplicate, event.job.job_id) == (True, False, job_id)
    assert event.job.status is JobStatus.SUCCEEDED
    assert fal.fetch(event.job, image_size).size == image_size


def test_forged_fal_deliveries_are_rejected(
        make_remover: MakeRemover, receiver: WebhookReceiver, webhook_sink: WebhookSink,
        image_uri: str) -> None:
    _, (delivery,) = deliver("fal", make_remover("fal"), webhook_sink, image_uri)
    headers, body = delivery.headers, delivery.body
    payload = json.loads(body)
    payload["payload"]["image"]["url"] = "https://attacker.example/cat.png"
    tampered = json.dumps(payload).encode()

    # the body changed after signing
    with pytest.raises(InvalidSignature, match="matches none of fal's keys"):
        receiver.handle("fal", headers, tampered)
    # signed properly, but with someone else's key
    attacker = Ed25519PrivateKey.generate()
    message = "\n".join([headers["x-fal-webhook-request-id"], headers["x-fal-webhook-user-id"],
                         headers["x-fal-webhook-timestamp"],
                         hashlib.sha256(tampered).hexdigest()]).encode()
    forged = {**headers, "x-fal-webhook-signature": attacker.sign(message).hex()}
    with pytest.raises(InvalidSignature):
        receiver.handle("fal", forged, tampered)
    # no signature at all
    unsigned = {k: v for k, v in headers.items() if k != "x-fal-webhook-signature"}
    assert receiver.respond("fal", unsigned, body) == (401, None)
    # a genuine delivery replayed an hour later
    later = WebhookReceiver(fal_jwks_url=receiver.fal_jwks_url, verify=receiver.tls_verify,
                            now=lambda: time.time() + 3600)
    with pytest.raises(InvalidSignature, match="timestamp"):
        later.handle("fal", headers, body)
    # and the genuine one passes
    assert receiver.handle("fal", headers, body).signed


@pytest.mark.parametrize("vendor", ["fal", "runflow", "bria"])
def test_fault_rule_forged_signature_is_rejected(
        vendor: str, make_remover: MakeRemover, rmbg_emulator: EmulatorHandle,
        receiver: WebhookReceiver, webhook_sink: WebhookSink, image_uri: str,
        api_key: str) -> None:
    remover = make_remover(vendor)
    if isinstance(remover, RunflowRemover):
        receiver.runflow_secrets.append(remover.create_callback_secret())
    receiver.bria_api_tokens.append(api_key)
    rmbg_emulator.inject(vendor=vendor, webhook="forged-signature")
    _, (delivery,) = deliver(vendor, remover, webhook_sink, image_uri)
    with pytest.raises(InvalidSignature):
        receiver.handle(vendor, delivery.headers, delivery.body)


def test_runflow_hmac_verified_and_forgeries_rejected(
        make_remover: MakeRemover, receiver: WebhookReceiver, webhook_sink: WebhookSink,
        image_uri: str, image_size: tuple[int, int]) -> None:
    runflow = make_remover("runflow")
    assert isinstance(runflow, RunflowRemover)
    secret = runflow.create_callback_secret("example")
    assert secret.startswith("whsec_")
    receiver.runflow_secrets.append(secret)
    job_id, (delivery,) = deliver("runflow", runflow, webhook_sink, image_uri)

    wrong = WebhookReceiver(runflow_secrets=["whsec_not-the-secret"])
    with pytest.raises(InvalidSignature, match="matches no callback secret"):
        wrong.handle("runflow", delivery.headers, delivery.body)
    with pytest.raises(InvalidSignature, match="missing"):
        receiver.handle("runflow", {}, delivery.body)
    with pytest.raises(InvalidSignature):
        receiver.handle("runflow", delivery.headers, delivery.body.replace(b"succeeded",
                                                                            b"failed"))

    event = receiver.handle("runflow", delivery.headers, delivery.body)
    assert (event.signed, event.job.job_id, event.job.status) == (True, job_id,
                                                                  JobStatus.SUCCEEDED)
    assert runflow.fetch(event.job, image_size).size == image_size


def test_bria_hmac_verified_and_forgeries_rejected(
        make_remover: MakeRemover, receiver: WebhookReceiver, webhook_sink: WebhookSink,
        image_uri: str, image_size: tuple[int, int], api_key: str) -> None:
    bria = make_remover("bria")
    receiver.bria_api_tokens.append(api_key)
    job_id, (delivery,) = deliver("bria", bria, webhook_sink, image_uri)
    headers, body = delivery.headers, delivery.body
    assert headers["bria-webhook-signature"].startswith("v1=")

    wrong = WebhookReceiver(bria_api_tokens=["not-the-token"])
    with pytest.raises(InvalidSignature, match="matches no API token"):
        wrong.handle("bria", headers, body)
    with pytest.raises(InvalidSignature, match="missing"):
        receiver.handle("bria", {}, body)
    with pytest.raises(InvalidSignature):
        receiver.handle("bria", headers, body.replace(b"COMPLETED", b"ERROR"))
    with pytest.raises(InvalidSignature):  # the id is signed too
        receiver.handle("bria", {**headers, "bria-webhook-id": "another"}, body)
    later = WebhookReceiver(bria_api_tokens=[api_key], now=lambda: time.time() + 3600)
    with pytest.raises(InvalidSignature, match="timestamp"):
        later.handle("bria", headers, body)

    event = receiver.handle("bria", headers, body)
    assert (event.signed, event.job.job_id, event.job.status) == (True, job_id,
                                                                  JobStatus.SUCCEEDED)
    assert bria.fetch(event.job, image_size).size == image_size


@pytest.mark.parametrize("vendor", ["pixazo", "apiframe"])
def test_unsigned_vendors_only_for_jobs_we_submitted(
        vendor: str, make_remover: MakeRemover, receiver: WebhookReceiver,
        webhook_sink: WebhookSink, image_uri: str) -> None:
    job_id, (delivery,) = deliver(vendor, make_remover(vendor), webhook_sink, image_uri)

    with pytest.raises(UnknownJob):
        receiver.handle(vendor, delivery.headers, delivery.body)
    receiver.expect(vendor, job_id)
    status, event = receiver.respond(vendor, delivery.headers, delivery.body)

    assert status == 200 and event is not None
    assert (event.signed, event.duplicate, event.job.status) == (False, False,
                                                                 JobStatus.SUCCEEDED)
    assert receiver.respond(vendor, delivery.headers, b"{not json") == (400, None)


def test_a_retried_delivery_is_deduplicated(
        make_remover: MakeRemover, rmbg_emulator: EmulatorHandle, receiver: WebhookReceiver,
        webhook_sink: WebhookSink, image_uri: str) -> None:
    """Our first answer fails (500), so fal delivers again 7 s later (its retry schedule, on
    the virtual clock): the second delivery is genuine, signed, and a duplicate."""
    webhook_sink.fail_first = 1
    fal = make_remover("fal")
    fal.submit(image_uri, webhook_url=f"{webhook_sink.url}/hooks/fal")
    first = webhook_sink.wait_for(1)[0]
    assert receiver.handle("fal", first.headers, first.body).duplicate is False
    (delivery,) = rmbg_emulator.wait_for_webhooks(1, vendor="fal")
    assert [a["status"] for a in delivery["attempts"]] == [500]   # the retry: due in 7 s
    rmbg_emulator.advance(7)
    second = webhook_sink.wait_for(2)[1]

    event = receiver.handle("fal", second.headers, second.body)

    assert event.duplicate and event.signed
    assert first.json()["request_id"] == second.json()["request_id"]
    (delivery,) = rmbg_emulator.wait_for_webhooks(1, vendor="fal", state="delivered")
    assert [a["status"] for a in delivery["attempts"]] == [500, 200]


def test_a_resent_delivery_is_deduplicated(
        make_remover: MakeRemover, rmbg_emulator: EmulatorHandle, receiver: WebhookReceiver,
        webhook_sink: WebhookSink, image_uri: str) -> None:
    job_id, (first,) = deliver("apiframe", make_remover("apiframe"), webhook_sink, image_uri)
    receiver.expect("apiframe", job_id)
    assert not receiver.handle("apiframe", first.headers, first.body).duplicate
    (delivery,) = rmbg_emulator.webhooks(vendor="apiframe")

    rmbg_emulator.resend_webhook(delivery["id"])
    second = webhook_sink.wait_for(2)[1]

    assert second.body == first.body
    assert receiver.handle("apiframe", second.headers, second.body).duplicate


def test_fault_rule_duplicate_is_deduplicated(
        make_remover: MakeRemover, rmbg_emulator: EmulatorHandle, receiver: WebhookReceiver,
        webhook_sink: WebhookSink, image_uri: str) -> None:
    rmbg_emulator.inject(vendor="fal", webhook="duplicate")
    make_remover("fal").submit(image_uri, webhook_url=f"{webhook_sink.url}/hooks/fal")
    received = webhook_sink.wait_for(2, timeout_s=2)
    assert len(received) == 2
    assert [receiver.handle("fal", r.headers, r.body).duplicate for r in received] == [
        False, True]


def test_gmicloud_has_no_webhook(make_remover: MakeRemover, receiver: WebhookReceiver,
                                 image_uri: str) -> None:
    with pytest.raises(ValueError, match="documents no webhook"):
        make_remover("gmicloud").submit(image_uri, webhook_url="http://127.0.0.1:9/hook")
    with pytest.raises(MalformedWebhook):
        receiver.handle("gmicloud", {}, b"{}")
