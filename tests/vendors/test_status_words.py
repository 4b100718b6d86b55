"""Every status word a vendor's contract documents can be shown (``word`` fault), and a job can
take more status reads (``polls`` fault): the words and their meaning come from the contract
and the adapter registry, and every answer is checked against the contract."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from emulator.core.jobs import JobStatus
from emulator.testing.behaviours import status_words
from emulator.testing.server import EmulatorServer
from tests.conftest import OriginServer, checked_client, emulator_settings
from tests.vendors.drivers import DRIVERS, Driver

CASES = [(d, word, meaning) for d in DRIVERS for word, meaning in status_words(d.slug).items()]


def _polls(client: httpx.Client, vendor: Driver, origin: OriginServer,
           rule: dict[str, Any] | None, reads: int) -> list[str]:
    client.delete("/_emulator/faults").raise_for_status()
    if rule is not None:
        client.post("/_emulator/faults", json={"vendor": vendor.slug, **rule}
                    ).raise_for_status()
    submitted = vendor.submit(client, f"{origin.url}/small.png")
    assert submitted.status_code == vendor.submit_status, submitted.text
    url = vendor.poll_url(client, submitted)
    return [vendor.status(vendor.outcome(client, url)) for _ in range(reads)]


@pytest.fixture(scope="module")
def server() -> Any:
    with EmulatorServer(emulator_settings(progression="polls:1")) as running:
        yield running


@pytest.mark.parametrize(("vendor", "word", "meaning"), CASES,
                         ids=[f"{d.slug}-{w}" for d, w, _ in CASES])
def test_every_documented_word_can_be_shown(server: EmulatorServer, origin: OriginServer,
                                            vendor: Driver, word: str,
                                            meaning: JobStatus) -> None:
    with checked_client(server.url) as client:
        if not meaning.terminal:
            seen = _polls(client, vendor, origin, {"word": word}, 3)
            assert seen[0] == word and seen[-1] == vendor.status_words["succeeded"], seen
        elif meaning is JobStatus.SUCCEEDED:
            seen = _polls(client, vendor, origin, {"word": word}, 3)
            assert seen[-1] == word, seen
        else:
            job = "error" if meaning is JobStatus.ERROR else "failed"
            seen = _polls(client, vendor, origin, {"job": job, "word": word}, 3)
            assert seen[-1] == word, seen


def _failure_word(vendor: Driver) -> str | None:
    return next((w for w, m in status_words(vendor.slug).items()
                 if m in (JobStatus.FAILED, JobStatus.ERROR)), None)


#: Vendors whose contract documents a failure word (fal's has none: its failures are errors).
WITH_FAILURE_WORD = [d for d in DRIVERS if _failure_word(d) is not None]


@pytest.mark.parametrize("vendor", WITH_FAILURE_WORD, ids=[d.slug for d in WITH_FAILURE_WORD])
def test_a_word_that_does_not_fit_the_job_is_not_shown(
        server: EmulatorServer, origin: OriginServer, vendor: Driver) -> None:
    failure = _failure_word(vendor)
    assert failure is not None
    with checked_client(server.url) as client:
        seen = _polls(client, vendor, origin, {"word": failure}, 3)
    assert seen[-1] == vendor.status_words["succeeded"], seen


def test_polls_delays_the_final_status(server: EmulatorServer, origin: OriginServer) -> None:
    vendor = next(d for d in DRIVERS if d.slug == "pixazo")
    with checked_client(server.url) as client:
        plain = _polls(client, vendor, origin, None, 4)
        slow = _polls(client, vendor, origin, {"polls": 2}, 4)
    assert plain.index("COMPLETED") == 1, plain
    assert slow.index("COMPLETED") == 3, slow
