"""Jobs are scoped to the API key that made them, on every vendor.

Each vendor scopes requests to the account that made them: another key's status read, result
read or cancel answers exactly what an unknown id answers (status and body, byte for byte,
the id swapped), and leaves the job as it was. The control plane still sees every job.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from emulator.testing.server import EmulatorServer
from tests.conftest import checked_client, emulator_settings, png_bytes
from tests.vendors.drivers import DRIVERS, FAL, GMICLOUD, Driver

OWNER = "scope-owner-key"
OTHER = "scope-other-key"
FAULT_KEY = "fault.job=stuck"

by_vendor = pytest.mark.parametrize("vendor", DRIVERS, ids=[d.slug for d in DRIVERS])


def tiny_png_uri() -> str:
    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[2:6, 3:9] = (200, 30, 30)
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode()


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    """Five status reads before the final status: a job stays queued while others poke it."""
    with EmulatorServer(emulator_settings(progression="polls:5")) as s:
        yield s


@pytest.fixture()
def client(server: EmulatorServer) -> Iterator[httpx.Client]:
    with checked_client(server.url) as c:
        c.post("/_emulator/reset").raise_for_status()
        yield c


def submit(client: httpx.Client, vendor: Driver, key: str) -> str:
    response = vendor.submit(client, tiny_png_uri(), key=key)
    assert response.status_code == vendor.submit_status, response.text
    return vendor.job_id(response)


def unknown_like(job_id: str) -> str:
    """An id of the same shape that names no job (the last 12 hex digits zeroed)."""
    return job_id[:-12] + "0" * 12


def assert_answers_as_unknown(client: httpx.Client, vendor: Driver, key: str,
                              job_id: str) -> None:
    """Every per-job request of ``vendor`` by ``key`` on ``job_id`` answers, byte for byte,
    what it answers for an unknown id (the id swapped)."""
    unknown = unknown_like(job_id)
    assert vendor.job_requests
    for method, template in vendor.job_requests:
        theirs = client.request(method, template.format(id=job_id), headers=vendor.headers(key))
        none = client.request(method, template.format(id=unknown), headers=vendor.headers(key))
        where = f"{method} {template} with another key"
        assert none.status_code == 404, (where, none.text)
        assert theirs.status_code == none.status_code, (where, theirs.text)
        assert theirs.headers["content-type"] == none.headers["content-type"], where
        assert theirs.content == none.content.replace(unknown.encode(), job_id.encode()), where
        assert theirs.json()  # every error body is JSON


def control(client: httpx.Client, job_id: str) -> dict[str, object]:
    response = client.get(f"/_emulator/jobs/{job_id}")
    assert response.status_code == 200, response.text
    summary: dict[str, object] = response.json()
    return summary


@by_vendor
def test_another_key_sees_the_job_as_an_unknown_id(client: httpx.Client,
                                                   vendor: Driver) -> None:
    job_id = submit(client, vendor, OWNER)
    assert_answers_as_unknown(client, vendor, OTHER, job_id)
    # Untouched: still queued, no status read counted, not cancelled (fal).
    summary = control(client, job_id)
    assert (summary["status"], summary["status_reads"]) == ("queued", 0)
    listed = client.get("/_emulator/jobs", params={"vendor": vendor.slug}).json()["jobs"]
    assert [(j["id"], j["api_key"]) for j in listed] == [(job_id, OWNER)]
    # The owner still sees it, queued.
    method, template = vendor.job_requests[0]
    own = client.request(method, template.format(id=job_id), headers=vendor.headers(OWNER))
    assert own.status_code == 200, own.text
    assert vendor.status(own.json()) == vendor.status_words["queued"]


def test_fal_cancel_by_another_key_is_not_found_and_leaves_the_request(
        client: httpx.Client) -> None:
    job_id = submit(client, FAL, OWNER)
    path = f"/queue/fal-ai/bria/requests/{job_id}/cancel"
    refused = client.put(path, headers=FAL.headers(OTHER))
    assert refused.status_code == 404
    assert refused.json() == {"detail": f"Request {job_id} not found"}
    assert control(client, job_id)["status"] == "queued"
    accepted = client.put(path, headers=FAL.headers(OWNER))
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"status": "CANCELLATION_REQUESTED"}
    assert control(client, job_id)["status"] == "cancelled"


def test_fal_takes_only_the_key_scheme(client: httpx.Client) -> None:
    job_id = submit(client, FAL, OWNER)
    path = f"/queue/fal-ai/bria/requests/{job_id}/status"
    for header in (f"Key  {OWNER}", f"key {OWNER}", f"KEY {OWNER}"):
        response = client.get(path, headers={"Authorization": header})
        assert response.status_code == 200, (header, response.text)
    # fal documents only `Key <FAL_KEY>`: a Bearer header is refused as fal refuses it
    for header in (f"Bearer {OWNER}", f"Token {OWNER}"):
        response = client.get(path, headers={"Authorization": header})
        assert response.status_code == 401, (header, response.text)
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "Key <FAL_KEY>" in detail


def test_gmicloud_list_shows_only_the_callers_requests(client: httpx.Client) -> None:
    mine = submit(client, GMICLOUD, OWNER)
    theirs = submit(client, GMICLOUD, OTHER)

    def listed(key: str) -> list[str]:
        response = client.get(GMICLOUD.submit_path, headers=GMICLOUD.headers(key))
        assert response.status_code == 200, response.text
        return [r["request_id"] for r in response.json()["requests"]]

    assert listed(OWNER) == [mine]
    assert listed(OTHER) == [theirs]


@by_vendor
def test_scoping_in_strict_key_mode_with_a_fault_key(vendor: Driver) -> None:
    """A ``fault.<rule>`` key is an account of its own (the whole key, as for billing)."""
    settings = emulator_settings(progression="polls:5",
                                 keys=frozenset({OWNER, OTHER, FAULT_KEY}))
    with EmulatorServer(settings) as server, checked_client(server.url) as client:
        job_id = submit(client, vendor, FAULT_KEY)
        assert control(client, job_id)["faults"]
        assert_answers_as_unknown(client, vendor, OWNER, job_id)
        method, template = vendor.job_requests[0]
        own = client.request(method, template.format(id=job_id),
                             headers=vendor.headers(FAULT_KEY))
        assert own.status_code == 200, own.text
        unlisted = client.get(template.format(id=job_id), headers=vendor.headers("nobody"))
        assert unlisted.status_code == 401


@by_vendor
def test_the_journal_notes_the_job_of_each_request(client: httpx.Client,
                                                   vendor: Driver) -> None:
    """``job_id`` in the journal: the submit and the owner's per-job requests carry it;
    another key's request for the same id, refused as unknown, does not."""
    job_id = submit(client, vendor, OWNER)
    for method, template in vendor.job_requests:
        client.request(method, template.format(id=job_id), headers=vendor.headers(OWNER))
    assert_answers_as_unknown(client, vendor, OTHER, job_id)
    entries = client.get("/_emulator/journal", params={"job_id": job_id}).json()["entries"]
    assert [(e["method"], e["api_key"]) for e in entries] == (
        [("POST", OWNER)] + [(method, OWNER) for method, _ in vendor.job_requests])
    assert all(e["job_id"] == job_id for e in entries)
    others = client.get("/_emulator/journal", params={"api_key": OTHER}).json()["entries"]
    assert others and all(e["job_id"] is None for e in others)
