"""Input fetches through the vendors: refused addresses, the emulator's own control plane,
the whole-fetch deadline, and the bound on how long a status read or a sync call waits.

Every address used here is loopback (refused ones are refused before connecting; the
unit tests in tests/core/test_fetchpolicy.py cover private and link-local ones).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from emulator.testing.server import EmulatorServer
from tests.conftest import checked_client, emulator_settings
from tests.fetch_origin import FetchOrigin
from tests.vendors.drivers import FAL, KEY, PIXAZO, RUNFLOW, detail_message


@pytest.fixture(scope="module")
def fetch_origin() -> Iterator[FetchOrigin]:
    with FetchOrigin() as server:
        yield server


def _failure(client: httpx.Client, image_url: str) -> str:
    """Submit to Pixazo, read the status once (immediate progression), return the error."""
    submitted = PIXAZO.submit(client, image_url)
    assert submitted.status_code == 202, submitted.text
    body = PIXAZO.outcome(client, PIXAZO.poll_url(client, submitted))
    assert PIXAZO.status(body) == "FAILED", body
    return PIXAZO.error(body)


def test_the_emulators_own_control_plane_is_never_an_input(
        client: httpx.Client, emulator: EmulatorServer) -> None:
    PIXAZO.submit(client, f"{emulator.url}/_emulator/samples/chelsea.jpg")  # a job to list
    for url in (f"{emulator.url}/_emulator/jobs",
                f"http://localhost:{emulator.settings.port}/_emulator/jobs"):
        error = _failure(client, url)
        assert "refused" in error and "emulator's own URL" in error, error
        # nothing of what the URL answers is quoted
        assert "{" not in error and "vendor" not in error and KEY not in error, error


def test_sample_and_file_urls_of_the_emulator_still_work_by_any_loopback_name(
        client: httpx.Client, emulator: EmulatorServer) -> None:
    url = f"http://localhost:{emulator.settings.port}/_emulator/samples/chelsea.jpg"
    submitted = PIXAZO.submit(client, url)
    body = PIXAZO.outcome(client, PIXAZO.poll_url(client, submitted))
    assert PIXAZO.status(body) == "COMPLETED", body
    error = _failure(client, f"{emulator.url}/_emulator/samples/no-such-sample.jpg")
    assert "no such sample or file" in error


@pytest.mark.parametrize(("host", "address"), [
    ("[::1]", "::1"), ("0.0.0.0", "0.0.0.0"), ("127.0.0.2", "127.0.0.2"),
])
def test_other_loopback_and_unspecified_addresses_are_refused(
        client: httpx.Client, fetch_origin: FetchOrigin, host: str, address: str) -> None:
    error = _failure(client, f"http://{host}:{fetch_origin.port}/image.png")
    assert f"the address {address} is" in error and "--allow-fetch" in error, error


def test_a_redirect_to_a_refused_address_is_refused(client: httpx.Client,
                                                    fetch_origin: FetchOrigin) -> None:
    error = _failure(client, f"{fetch_origin.url}/redirect?to=http://127.0.0.2:9/x.png")
    assert "the address 127.0.0.2 is loopback" in error, error
    ok = PIXAZO.submit(client, f"{fetch_origin.url}/redirect?to={fetch_origin.url}/image.png")
    body = PIXAZO.outcome(client, PIXAZO.poll_url(client, ok))
    assert PIXAZO.status(body) == "COMPLETED", body


@pytest.fixture(scope="module")
def impatient() -> Iterator[EmulatorServer]:
    """An emulator with a 2 s fetch deadline and a 1 s bound on waits for image work."""
    with EmulatorServer(emulator_settings(fetch_deadline_s=2.0, max_wait_s=1.0)) as server:
        yield server


def test_a_trickling_origin_neither_holds_the_job_nor_the_status_read(
        impatient: EmulatorServer, fetch_origin: FetchOrigin) -> None:
    # a client timeout well under "for ever": before the fix the first read never returned
    with checked_client(impatient.url) as client:
        client.timeout = httpx.Timeout(15)
        submitted = PIXAZO.submit(client, f"{fetch_origin.url}/trickle")
        url = PIXAZO.poll_url(client, submitted)
        first = PIXAZO.outcome(client, url)
        assert PIXAZO.status(first) == "PROCESSING", first  # the wait bound, not an error
        give_up = time.monotonic() + 30
        body = first
        while PIXAZO.status(body) == "PROCESSING":
            assert time.monotonic() < give_up, "the fetch deadline did not end the job"
            time.sleep(0.2)
            body = PIXAZO.outcome(client, url)
    assert PIXAZO.status(body) == "FAILED", body
    assert "did not end within the deadline of 2 s" in PIXAZO.error(body)


def test_sync_calls_answer_the_vendors_timeout_error(impatient: EmulatorServer,
                                                     fetch_origin: FetchOrigin) -> None:
    image = f"{fetch_origin.url}/trickle"
    with checked_client(impatient.url) as client:
        client.timeout = httpx.Timeout(15)
        fal = client.post("/fal-ai/bria/background/remove", json={"image_url": image},
                          headers=FAL.headers())
        runflow = client.post(RUNFLOW.submit_path, headers=RUNFLOW.headers(),
                              json={"input": {"image_url": image, "sync_mode": True}})
    assert fal.status_code == 504, fal.text
    assert fal.json()["error_type"] == "request_timeout"
    assert fal.headers["x-fal-error-type"] == "request_timeout"
    assert "1 s" in fal.json()["detail"]
    assert runflow.status_code == 504, runflow.text
    assert "timed out" in detail_message(runflow.json()["detail"])
