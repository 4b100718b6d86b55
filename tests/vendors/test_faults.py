"""Fault injection, billing, rate limits and the journal, end to end, for every vendor.

Every fault kind goes through the four ways in (header, ``fault.`` key, admin API, scenario)
and comes back in the vendor's own shape. Written once over ``tests.vendors.drivers.DRIVERS``.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from emulator.testing.server import EmulatorServer
from tests.conftest import OriginServer, decode_png, emulator_settings
from tests.vendors.drivers import DRIVERS, KEY, Driver

pytestmark = pytest.mark.parametrize("vendor", DRIVERS, ids=[d.slug for d in DRIVERS])

SCENARIOS = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios"


@pytest.fixture()
def client(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    """An httpx client on the emulator, after a reset. Not checked against the contracts
    (``tests.conftest.checked_client``): fault answers break them on purpose."""
    with httpx.Client(base_url=emulator.url, timeout=60) as c:
        c.post("/_emulator/reset").raise_for_status()
        yield c


@pytest.fixture(autouse=True)
def _leave_the_shared_emulator_clean(emulator: EmulatorServer) -> Iterator[None]:
    """Rules, scenarios and the clock moved here must not leak into other modules' tests."""
    yield
    httpx.post(f"{emulator.url}/_emulator/reset", json={"scenarios": False}).raise_for_status()


def fault(text: str) -> dict[str, str]:
    return {"X-Emulator-Fault": text}


def journal(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/_emulator/journal", params=params)
    response.raise_for_status()
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


def last_operation(client: httpx.Client, vendor: Driver) -> str:
    """The operation name of the vendor's last journaled request."""
    return str(journal(client, vendor=vendor.slug)[-1]["operation"])


def submit_ok(client: httpx.Client, vendor: Driver, origin: OriginServer,
              headers: dict[str, str] | None = None, key: str = KEY) -> httpx.Response:
    response = vendor.submit(client, f"{origin.url}/small.png", key=key, headers=headers)
    assert response.status_code == vendor.submit_status, response.text
    return response


def final_body(client: httpx.Client, vendor: Driver, submitted: httpx.Response,
               key: str = KEY) -> dict[str, Any]:
    """The job's outcome (the vendor's status read, and its result where it has one)."""
    return vendor.outcome(client, vendor.poll_url(client, submitted), key=key)


# -- status ----------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [402, 429, 500, 503])
def test_status_fault_in_the_vendors_body(client: httpx.Client, vendor: Driver,
                                          origin: OriginServer, status: int) -> None:
    text = f"status={status}" + (",retry_after=7" if status == 429 else "")
    response = vendor.submit(client, f"{origin.url}/small.png", headers=fault(text))
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert vendor.error_message(response.json())
    if status == 429:
        assert response.headers["Retry-After"] == "7"
    if status == 402:
        assert vendor.is_payment_required(response.json()), response.text
    assert client.get("/_emulator/jobs").json()["jobs"] == []  # answered before the vendor
    entry = journal(client)[-1]
    assert entry["status"] == status and entry["vendor"] == vendor.slug
    assert entry["faults"] == [{"rule": "header", "source": "header",
                                "applied": f"status={status}"}]


def test_fault_key_for_clients_without_extra_headers(client: httpx.Client, vendor: Driver,
                                                     origin: OriginServer) -> None:
    key = "fault.status=402"
    refused = vendor.submit(client, f"{origin.url}/small.png", key=key)
    assert refused.status_code == 402
    assert vendor.error_message(refused.json())
    slow = "fault.latency=0.01"
    accepted = vendor.submit(client, f"{origin.url}/small.png", key=slow)
    assert accepted.status_code == vendor.submit_status  # a key that only slows is a key
    bad = vendor.submit(client, f"{origin.url}/small.png", key="fault.status=nope")
    assert bad.status_code == 400
    assert "fault API key: status must be an integer" in vendor.error_message(bad.json())
    assert [e["api_key"] for e in journal(client, vendor=vendor.slug)] == [key, slow,
                                                                          "fault.status=nope"]


def test_bad_fault_header_is_a_vendor_400(client: httpx.Client, vendor: Driver,
                                          origin: OriginServer) -> None:
    response = vendor.submit(client, f"{origin.url}/small.png",
                             headers=fault("operation=no-such-op,status=500"))
    assert response.status_code == 400
    assert "X-Emulator-Fault: no vendor has an operation 'no-such-op'" in (
        vendor.error_message(response.json()))


def test_latency_fault_delays_the_answer(client: httpx.Client, vendor: Driver,
                                         origin: OriginServer) -> None:
    submitted = submit_ok(client, vendor, origin)
    started = time.monotonic()
    polled = client.get(vendor.poll_url(client, submitted),
                        headers={**vendor.headers(), **fault("latency=0.2")})
    assert time.monotonic() - started >= 0.2
    assert polled.status_code == 200, polled.text
    entry = journal(client, vendor=vendor.slug)[-1]
    assert entry["latency_ms"] >= 200
    assert entry["faults"][0]["applied"] == "latency=0.200"


# -- jobs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["failed", "error"])
def test_job_fails_with_the_vendors_status_and_is_not_charged(
        client: httpx.Client, vendor: Driver, origin: OriginServer, kind: str) -> None:
    submitted = submit_ok(client, vendor, origin, headers=fault(f"job={kind}"))
    body = final_body(client, vendor, submitted)
    assert vendor.status(body) == vendor.status_words[kind]
    assert vendor.error(body)
    account = client.get(f"/_emulator/keys/{KEY}").json()
    assert account["balance_usd"] == "1000"
    assert [e["kind"] for e in account["ledger"]] == ["hold", "release"]
    job = client.get(f"/_emulator/jobs/{vendor.job_id(submitted)}").json()
    assert job["faults"] == {"rule": "header", "job": kind}


def test_stuck_job_never_leaves_processing(client: httpx.Client, vendor: Driver,
                                           origin: OriginServer) -> None:
    submitted = submit_ok(client, vendor, origin, headers=fault("job=stuck"))
    url = vendor.poll_url(client, submitted)
    seen = {vendor.status(vendor.poll(client, url).json()) for _ in range(4)}
    finals = {vendor.status_words[s] for s in ("succeeded", "failed", "error")}
    assert vendor.status_words["processing"] in seen and not seen & finals
    client.post(f"/_emulator/jobs/{vendor.job_id(submitted)}/complete").raise_for_status()
    assert vendor.status(vendor.outcome(client, url)) == vendor.status_words["succeeded"]
    assert vendor.urls(vendor.outcome(client, url))


def test_expired_result_answers_as_the_vendors_storage(client: httpx.Client, vendor: Driver,
                                                       origin: OriginServer) -> None:
    submitted = submit_ok(client, vendor, origin, headers=fault("job=expired"))
    body = final_body(client, vendor, submitted)
    assert vendor.status(body) == vendor.status_words["succeeded"]
    url = vendor.urls(body)[0]
    gone = client.get(url)
    never = client.get(url.rsplit("/", 1)[0] + "/never-stored.png")
    assert gone.status_code == never.status_code == 404
    assert gone.headers["content-type"] == never.headers["content-type"]
    if "/_emulator/files/" in url:  # the default: S3-compatible storage's NoSuchKey
        assert gone.headers["content-type"].startswith("application/xml")
        assert "<Code>NoSuchKey</Code>" in gone.text
    download = journal(client, vendor=vendor.slug)[-2]
    assert download["status"] == 404 and download["path"] == httpx.URL(url).path


def test_result_urls_expire_with_the_clock(client: httpx.Client, vendor: Driver,
                                           origin: OriginServer) -> None:
    body = final_body(client, vendor, submit_ok(client, vendor, origin))
    url = vendor.urls(body)[0]
    assert client.get(url).status_code == 200
    client.post("/_emulator/clock/advance",
                json={"seconds": 7 * 24 * 3600 + 1}).raise_for_status()
    assert client.get(url).status_code == 404


@pytest.mark.parametrize("kind", ["truncated-png", "rgb-no-alpha", "empty-alpha"])
def test_image_faults_break_the_result_file(client: httpx.Client, vendor: Driver,
                                            origin: OriginServer, kind: str) -> None:
    submitted = submit_ok(client, vendor, origin, headers=fault(f"image={kind}"))
    body = final_body(client, vendor, submitted)
    assert vendor.status(body) == vendor.status_words["succeeded"]
    data = client.get(vendor.urls(body)[0]).content
    if kind == "truncated-png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        with pytest.raises(OSError):
            Image.open(io.BytesIO(data)).load()
        return
    image = decode_png(data)
    assert image.size == (origin.small.shape[1], origin.small.shape[0])
    if kind == "rgb-no-alpha":
        assert image.mode == "RGB"
    else:
        assert image.mode == "RGBA" and int(np.asarray(image)[:, :, 3].max()) == 0


# -- connection and body ---------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "error"), [("reset", httpx.ReadError),
                                             ("close", httpx.RemoteProtocolError)])
def test_connection_faults_seen_by_httpx(emulator: EmulatorServer, client: httpx.Client,
                                         vendor: Driver, origin: OriginServer, kind: str,
                                         error: type[Exception]) -> None:
    with httpx.Client(base_url=emulator.url, timeout=10) as fresh, pytest.raises(error) as got:
        vendor.submit(fresh, f"{origin.url}/small.png", headers=fault(f"connection={kind}"))
    if kind == "close":
        assert "without sending a response" in str(got.value)
    entry = journal(client)[-1]
    assert entry["status"] is None
    assert entry["faults"][0]["applied"] == f"connection={kind}"
    assert client.get("/_emulator/jobs").json()["jobs"] == []
    assert vendor.submit(client, f"{origin.url}/small.png").status_code == vendor.submit_status


def test_truncated_body_is_cut_on_the_wire(emulator: EmulatorServer, client: httpx.Client,
                                           vendor: Driver, origin: OriginServer) -> None:
    with httpx.Client(base_url=emulator.url, timeout=10) as fresh, \
            pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
        vendor.submit(fresh, f"{origin.url}/small.png", headers=fault("body=truncated"))
    assert len(client.get("/_emulator/jobs").json()["jobs"]) == 1  # the vendor did answer
    assert journal(client)[-1]["status"] == vendor.submit_status


@pytest.mark.parametrize("kind", ["malformed", "empty"])
def test_broken_body(client: httpx.Client, vendor: Driver, origin: OriginServer,
                     kind: str) -> None:
    response = vendor.submit(client, f"{origin.url}/small.png", headers=fault(f"body={kind}"))
    assert response.status_code == vendor.submit_status
    if kind == "empty":
        assert response.content == b""
    else:
        assert response.content
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.content)


# -- admin rules: sequences, probability, validation -----------------------------------------
def test_429_twice_then_success(client: httpx.Client, vendor: Driver,
                                origin: OriginServer) -> None:
    submit_ok(client, vendor, origin)
    operation = last_operation(client, vendor)
    rule = client.post("/_emulator/faults", json={
        "vendor": vendor.slug, "operation": operation, "status": 429, "retry_after": 3,
        "times": 2}).json()
    assert rule["id"] and rule["remaining"] == 2
    codes = [vendor.submit(client, f"{origin.url}/small.png").status_code for _ in range(3)]
    assert codes == [429, 429, vendor.submit_status]
    listed = client.get("/_emulator/faults").json()["rules"]
    assert [(r["id"], r["hits"], r["remaining"]) for r in listed] == [(rule["id"], 2, 0)]
    verdict = client.post("/_emulator/journal/verify",
                          json={"vendor": vendor.slug, "status": 429, "count": 2}).json()
    assert verdict["pass"], verdict


def test_probability_with_seed_is_reproducible(client: httpx.Client, vendor: Driver,
                                               origin: OriginServer) -> None:
    url = vendor.poll_url(client, submit_ok(client, vendor, origin))
    vendor.poll(client, url)
    operation = last_operation(client, vendor)
    spec = {"vendor": vendor.slug, "operation": operation, "status": 503,
            "probability": 0.5, "seed": 1234}

    def run() -> list[int]:
        client.delete("/_emulator/faults").raise_for_status()
        client.post("/_emulator/faults", json=spec).raise_for_status()
        return [vendor.poll(client, url).status_code for _ in range(16)]

    first, second = run(), run()
    assert first == second
    assert set(first) == {200, 503}


def test_rule_for_an_operation_the_vendor_lacks_is_refused(client: httpx.Client,
                                                           vendor: Driver) -> None:
    response = client.post("/_emulator/faults", json={
        "vendor": vendor.slug, "operation": "teleport", "status": 500})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert f"vendor {vendor.slug!r} has no operation 'teleport'" in detail
    assert "file" in detail
    assert client.get("/_emulator/faults").json()["rules"] == []


def test_rules_can_be_listed_and_deleted(client: httpx.Client, vendor: Driver,
                                         origin: OriginServer) -> None:
    added = client.post("/_emulator/faults", json=[
        {"vendor": vendor.slug, "api_key": "other", "status": 500},
        {"vendor": vendor.slug, "api_key": KEY, "status": 503}]).json()["rules"]
    assert vendor.submit(client, f"{origin.url}/small.png").status_code == 503
    assert client.delete(f"/_emulator/faults/{added[1]['id']}").status_code == 200
    assert client.get(f"/_emulator/faults/{added[1]['id']}").status_code == 404
    assert client.delete(f"/_emulator/faults/{added[1]['id']}").status_code == 404
    assert vendor.submit(client, f"{origin.url}/small.png").status_code == vendor.submit_status
    assert client.delete("/_emulator/faults").json()["deleted"] == [added[0]["id"]]


def test_reset_clears_rules_and_journal(client: httpx.Client, vendor: Driver,
                                        origin: OriginServer) -> None:
    client.post("/_emulator/faults", json={"status": 500}).raise_for_status()
    vendor.submit(client, f"{origin.url}/small.png")
    client.post("/_emulator/reset").raise_for_status()
    assert client.get("/_emulator/faults").json()["rules"] == []
    assert journal(client) == []
    assert vendor.submit(client, f"{origin.url}/small.png").status_code == vendor.submit_status


# -- billing and rate limits -----------------------------------------------------------------
def test_balance_runs_out_in_the_middle_of_a_batch(client: httpx.Client, vendor: Driver,
                                                   origin: OriginServer) -> None:
    client.put(f"/_emulator/keys/{KEY}", json={"balance_usd": 0.05}).raise_for_status()
    errored = submit_ok(client, vendor, origin, headers=fault("job=error"))
    batch = [submit_ok(client, vendor, origin) for _ in range(2)]
    refused = vendor.submit(client, f"{origin.url}/small.png")
    assert refused.status_code == 402  # two holds of $0.018 leave $0.014
    assert vendor.error_message(refused.json())
    assert vendor.status(final_body(client, vendor, errored)) == vendor.status_words["error"]
    for submitted in batch:
        assert vendor.status(final_body(client, vendor, submitted)) == (
            vendor.status_words["succeeded"])
    account = client.get(f"/_emulator/keys/{KEY}").json()
    assert account["balance_usd"] == "0.014"  # the system error was not charged
    kinds = [e["kind"] for e in account["ledger"]]
    assert kinds.count("charge") == 2 and kinds.count("release") == 1
    assert client.post("/_emulator/journal/verify", json={
        "vendor": vendor.slug, "status": 402, "count": 1}).json()["pass"]


def test_retry_after_and_early_retries_are_journaled(client: httpx.Client, vendor: Driver,
                                                     origin: OriginServer) -> None:
    client.put(f"/_emulator/keys/{KEY}", json={"rps": 0.5, "burst": 1}).raise_for_status()
    submit_ok(client, vendor, origin)
    limited = vendor.submit(client, f"{origin.url}/small.png")
    assert limited.status_code == 429
    wait = int(limited.headers["Retry-After"])
    assert wait >= 1
    assert vendor.submit(client, f"{origin.url}/small.png").status_code == 429  # too soon
    client.post("/_emulator/clock/advance", json={"seconds": wait + 1}).raise_for_status()
    submit_ok(client, vendor, origin)
    entries = journal(client, vendor=vendor.slug)
    ok = vendor.submit_status
    assert [(e["status"], e["early_retry"]) for e in entries] == [
        (ok, False), (429, False), (429, True), (ok, False)]
    assert entries[1]["retry_after"] == wait
    assert journal(client, early_retry="true") == [entries[2]]
    verdict = client.post("/_emulator/journal/verify",
                          json={"vendor": vendor.slug, "early_retry": True, "count": 0}).json()
    assert not verdict["pass"] and verdict["count"] == 1


# -- journal and verify ----------------------------------------------------------------------
def test_journal_filters_and_verify_near_misses(client: httpx.Client, vendor: Driver,
                                                origin: OriginServer) -> None:
    submitted = submit_ok(client, vendor, origin)
    vendor.poll(client, vendor.poll_url(client, submitted))
    vendor.submit(client, f"{origin.url}/small.png", key="someone-else",
                  headers=fault("status=503"))
    entries = journal(client, vendor=vendor.slug)
    assert len(entries) == 3
    assert [e["api_key"] for e in entries] == [KEY, KEY, "someone-else"]
    submit_op = entries[0]["operation"]
    assert journal(client, api_key="someone-else", fault="true") == [entries[2]]
    assert journal(client, limit=1) == [entries[2]]
    assert client.get("/_emulator/journal", params={"bogus": 1}).status_code == 400
    verdict = client.post("/_emulator/journal/verify", json={
        "vendor": vendor.slug, "operation": submit_op, "api_key": "someone-else",
        "status": vendor.submit_status, "min": 1}).json()
    assert not verdict["pass"]
    nearest = verdict["near_misses"][0]
    assert nearest["seq"] == entries[2]["seq"] and nearest["differs"] == ["status"]
    assert client.post("/_emulator/journal/verify",
                       json={"status": 202, "count": 1, "max": 2}).status_code == 400
    assert client.post("/_emulator/journal/verify",
                       json={"status": "202"}).status_code == 400


# -- scenarios -------------------------------------------------------------------------------
def load_scenario(client: httpx.Client, name: str) -> dict[str, Any]:
    text = (SCENARIOS / f"{name}.yaml").read_text(encoding="utf-8")
    response = client.post("/_emulator/scenarios", content=text,
                           headers={"Content-Type": "application/yaml"})
    assert response.status_code == 201, response.text
    loaded: dict[str, Any] = response.json()
    return loaded


def test_scenario_flaky_submits(client: httpx.Client, vendor: Driver,
                                origin: OriginServer) -> None:
    loaded = load_scenario(client, "flaky-submits")
    assert loaded["name"] == "flaky-submits" and len(loaded["rules"]) == 1
    first = vendor.submit(client, f"{origin.url}/small.png")
    second = vendor.submit(client, f"{origin.url}/small.png")
    assert (first.status_code, second.status_code) == (429, 429)
    assert first.headers["Retry-After"] == "2"
    for _ in range(2):
        submit_ok(client, vendor, origin)
    assert client.get("/_emulator/scenarios").json()["scenarios"][0]["name"] == "flaky-submits"


def test_scenario_low_balance(client: httpx.Client, vendor: Driver,
                              origin: OriginServer) -> None:
    load_scenario(client, "low-balance")
    poor = "low-balance-key"
    jobs = [submit_ok(client, vendor, origin, key=poor) for _ in range(2)]
    assert vendor.submit(client, f"{origin.url}/small.png", key=poor).status_code == 402
    for job in jobs:
        final_body(client, vendor, job, key=poor)
    assert client.get(f"/_emulator/keys/{poor}").json()["balance_usd"] == "0.004"
    throttled = "throttled-key"
    codes = [vendor.submit(client, f"{origin.url}/small.png", key=throttled).status_code
             for _ in range(3)]
    ok = vendor.submit_status
    assert codes == [ok, ok, 429]  # burst of 2, then 1 per second


def test_scenario_degraded_vendor(client: httpx.Client, vendor: Driver,
                                  origin: OriginServer) -> None:
    load_scenario(client, "degraded-vendor")

    def settle(submitted: httpx.Response) -> tuple[dict[str, Any], list[int]]:
        """The outcome, polling through the injected 503s; the status codes seen."""
        codes: list[int] = []
        url = vendor.poll_url(client, submitted)
        for _ in range(40):
            response = vendor.poll(client, url)
            codes.append(response.status_code)
            if response.status_code == 503:
                continue
            try:
                return vendor.outcome(client, url), codes
            except AssertionError:  # a 503 on the outcome's own status read
                codes.append(503)
        raise AssertionError(f"only 503s: {codes}")

    errored, codes_1 = settle(submit_ok(client, vendor, origin))
    broken, codes_2 = settle(submit_ok(client, vendor, origin))
    fine, codes_3 = settle(submit_ok(client, vendor, origin))
    assert vendor.status(errored) == vendor.status_words["error"]
    assert vendor.status(broken) == vendor.status_words["succeeded"]
    with pytest.raises(OSError):
        Image.open(io.BytesIO(client.get(vendor.urls(broken)[0]).content)).load()
    assert decode_png(client.get(vendor.urls(fine)[0]).content).mode == "RGBA"
    polls = codes_1 + codes_2 + codes_3
    assert 503 in polls
    # Seeded: the same scenario gives the same poll outcomes after a reset.
    client.post("/_emulator/reset").raise_for_status()
    load_scenario(client, "degraded-vendor")
    again = [settle(submit_ok(client, vendor, origin))[1] for _ in range(3)]
    assert again == [codes_1, codes_2, codes_3]


def test_scenario_given_at_start_up_comes_back_after_reset(vendor: Driver,
                                                           origin: OriginServer) -> None:
    settings = emulator_settings(scenarios=(str(SCENARIOS / "flaky-submits.yaml"),))
    with EmulatorServer(settings) as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        assert vendor.submit(c, f"{origin.url}/small.png").status_code == 429
        c.post("/_emulator/reset").raise_for_status()
        codes = [vendor.submit(c, f"{origin.url}/small.png").status_code for _ in range(3)]
        assert codes == [429, 429, vendor.submit_status]
        c.post("/_emulator/reset", json={"scenarios": False}).raise_for_status()
        assert c.get("/_emulator/faults").json()["rules"] == []
