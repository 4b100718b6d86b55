"""The fast lane of status reads (emulator/vendors/finalreads.py), on every vendor.

A status read of a final job answers kept bytes, and keeps every semantic: the bytes are the
slow path's, a fault rule added afterwards still applies, another key still gets the unknown
id's 404, the journal still records the read with its job id.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.responses import Response

from emulator.core.jobs import Job, Task
from emulator.testing.server import EmulatorServer
from emulator.vendors.finalreads import FinalReads
from tests.conftest import checked_client, emulator_settings, png_bytes
from tests.vendors.drivers import DRIVERS, Driver

OWNER = "lane-owner-key"
OTHER = "lane-other-key"
#: A fault header whose rule does nothing visible: the request takes the fault path (the
#: slow lane, rendered afresh).
SLOW = {"X-Emulator-Fault": "latency=0"}

by_vendor = pytest.mark.parametrize("vendor", DRIVERS, ids=[d.slug for d in DRIVERS])


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(emulator_settings()) as s:
        yield s


@pytest.fixture()
def client(server: EmulatorServer) -> Iterator[httpx.Client]:
    with checked_client(server.url) as c:
        c.post("/_emulator/reset").raise_for_status()
        c.delete("/_emulator/faults").raise_for_status()
        yield c


def tiny_png_uri() -> str:
    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[2:6, 3:9] = (200, 30, 30)
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode()


def finished(client: httpx.Client, vendor: Driver) -> tuple[str, str]:
    """A job of ``vendor`` by :data:`OWNER` that shows its final status: ``(id, status
    path)``."""
    response = vendor.submit(client, tiny_png_uri(), key=OWNER)
    assert response.status_code == vendor.submit_status, response.text
    job_id = vendor.job_id(response)
    path = vendor.job_requests[0][1].format(id=job_id)
    first = client.get(path, headers=vendor.headers(OWNER))
    assert first.status_code == 200, first.text
    assert vendor.status(first.json()) == vendor.status_words["succeeded"], first.text
    return job_id, path


def hits(server: EmulatorServer, vendor: Driver) -> int:
    return server.emulator.adapters[vendor.slug]._final_reads.hits


@by_vendor
def test_a_final_read_answers_kept_bytes_equal_to_the_slow_paths(
        server: EmulatorServer, client: httpx.Client, vendor: Driver) -> None:
    _, path = finished(client, vendor)
    slow = client.get(path, headers={**vendor.headers(OWNER), **SLOW})
    before = hits(server, vendor)
    fast = [client.get(path, headers=vendor.headers(OWNER)) for _ in range(3)]
    assert hits(server, vendor) >= before + 2  # the last reads came from kept bytes
    for response in fast:
        assert response.status_code == slow.status_code == 200
        assert response.content == slow.content
        assert response.headers["content-type"] == slow.headers["content-type"]
        assert response.headers["content-length"] == slow.headers["content-length"]
    # Another origin (a Host header) is another variant: its URLs follow it.
    other_host = client.get(path, headers={**vendor.headers(OWNER), "Host": "elsewhere:9"})
    slow_other = client.get(path, headers={**vendor.headers(OWNER), "Host": "elsewhere:9",
                                           **SLOW})
    assert other_host.content == slow_other.content


@by_vendor
def test_a_rule_added_afterwards_still_applies(server: EmulatorServer, client: httpx.Client,
                                               vendor: Driver) -> None:
    _, path = finished(client, vendor)
    kept = client.get(path, headers=vendor.headers(OWNER))
    client.get(path, headers=vendor.headers(OWNER))
    added = client.post("/_emulator/faults", json={
        "vendor": vendor.slug, "operation": vendor_status_operation(server, vendor, path),
        "status": 503, "times": 1})
    assert added.status_code in (200, 201), added.text
    with httpx.Client(base_url=server.url) as unchecked:  # 503 is not in every contract
        refused = unchecked.get(path, headers=vendor.headers(OWNER))
    assert refused.status_code == 503, refused.text
    again = client.get(path, headers=vendor.headers(OWNER))
    assert again.status_code == 200 and again.content == kept.content


def vendor_status_operation(server: EmulatorServer, vendor: Driver, path: str) -> str:
    journal = server.emulator.journal.select({"path": path})
    assert journal
    operation = journal[-1].operation
    assert operation is not None
    return operation


@by_vendor
def test_another_key_still_gets_the_unknown_ids_404(server: EmulatorServer,
                                                    client: httpx.Client,
                                                    vendor: Driver) -> None:
    _, path = finished(client, vendor)
    client.get(path, headers=vendor.headers(OWNER))
    client.get(path, headers=vendor.headers(OWNER))
    theirs = client.get(path, headers=vendor.headers(OTHER))
    assert theirs.status_code == 404, theirs.text
    nobody = client.get(path, headers=vendor.headers(None))
    assert nobody.status_code in (401, 403), nobody.text


@by_vendor
def test_the_journal_still_records_every_read_with_its_job(
        server: EmulatorServer, client: httpx.Client, vendor: Driver) -> None:
    job_id, path = finished(client, vendor)
    for _ in range(4):
        assert client.get(path, headers=vendor.headers(OWNER)).status_code == 200
    entries = server.emulator.journal.select({"path": path, "method": "GET"})
    assert len(entries) == 5  # the first read and four more
    assert {(e.job_id, e.status, e.api_key) for e in entries} == {(job_id, 200, OWNER)}


def _job(job_id: str = "j1") -> Job:
    return Job(id=job_id, vendor="v", operation="submit", api_key="k",
               task=Task("remove", ()), created_at=0.0, price_usd=0)  # type: ignore[arg-type]


def _scope(host: bytes = b"h", query: bytes = b"", key: bytes = b"k",
           extra: tuple[tuple[bytes, bytes], ...] = ()) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/p", "query_string": query,
            "scheme": "http", "server": ("127.0.0.1", 80),
            "headers": [(b"host", host), (b"x-key", key), *extra]}


def test_kept_answers_follow_the_job_version_fingerprint_and_store() -> None:
    from emulator.core.jobs import JobStatus

    reads = FinalReads(max_entries=2)
    job = _job()
    scope = _scope()
    reads.keep(job, scope, "k", Response(b"{}", media_type="application/json"))
    assert reads.lookup(job.id, scope) is None  # not final: not kept
    job.status = JobStatus.SUCCEEDED
    reads.keep(job, scope, "k", Response(b"{}", media_type="application/json"))
    kept = reads.lookup(job.id, _scope())
    assert kept is not None and kept.body["body"] == b"{}" and kept.start["status"] == 200
    assert kept.api_key == "k"
    assert reads.lookup(job.id, _scope(host=b"other")) is None  # another origin
    assert reads.lookup(job.id, _scope(query=b"logs=1")) is None
    assert reads.lookup(job.id, _scope(key=b"k2")) is None  # another key
    assert reads.lookup(job.id, _scope(extra=((b"x-more", b"1"),))) is None
    job.version += 1
    assert reads.lookup(job.id, scope) is None  # changed (or left the store) since
    reads.keep(job, scope, "k", Response(b"x", status_code=503))
    assert reads.lookup(job.id, scope) is None  # only a 200 is kept
    with_body = _scope(extra=((b"content-length", b"2"),))
    reads.keep(job, with_body, "k", Response(b"{}"))
    assert reads.lookup(job.id, with_body) is None  # a request with a body is not kept
    for name in ("a", "b", "c"):
        other = _job(name)
        other.status = JobStatus.SUCCEEDED
        reads.keep(other, scope, "k", Response(b"{}"))
    assert len(reads) == 2  # bounded, oldest dropped


class _CountingGuard:
    """Counts the contract checks the guard makes (the route's wrapper calls it first)."""

    def __init__(self, server: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
        guard = server.emulator.guard
        self.calls = 0
        check = guard.check

        async def counted(*args: Any, **kwargs: Any) -> None:
            self.calls += 1
            await check(*args, **kwargs)

        monkeypatch.setattr(guard, "check", counted)


@by_vendor
def test_a_kept_read_is_answered_before_the_route_runs_and_keeps_every_semantic(
        server: EmulatorServer, client: httpx.Client, vendor: Driver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    job_id, path = finished(client, vendor)
    kept = client.get(path, headers=vendor.headers(OWNER))  # rendered, and kept
    guard = _CountingGuard(server, monkeypatch)
    before = hits(server, vendor)
    fast = client.get(path, headers=vendor.headers(OWNER))
    assert fast.status_code == 200 and fast.content == kept.content
    assert hits(server, vendor) == before + 1
    assert guard.calls == 0  # sent by the error boundary: no route, no guard, no handler
    last = server.emulator.journal.select({"path": path, "method": "GET"})[-1]
    assert (last.job_id, last.api_key, last.status) == (job_id, OWNER, 200)
    # A fault header renders afresh (and its rule is journalled).
    faulted = client.get(path, headers={**vendor.headers(OWNER), **SLOW})
    assert faulted.status_code == 200 and faulted.content == kept.content
    assert guard.calls == 1 and hits(server, vendor) == before + 1
    last = server.emulator.journal.select({"path": path, "method": "GET"})[-1]
    assert last.faults and last.job_id == job_id
    # Another key is still an unknown id, however often the owner's read was kept.
    assert client.get(path, headers=vendor.headers(OTHER)).status_code == 404
    assert hits(server, vendor) == before + 1


@by_vendor
def test_a_reset_or_an_eviction_ends_a_kept_answer(server: EmulatorServer, client: httpx.Client,
                                                   vendor: Driver,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = finished(client, vendor)
    client.get(path, headers=vendor.headers(OWNER))  # kept
    client.post("/_emulator/reset").raise_for_status()
    assert client.get(path, headers=vendor.headers(OWNER)).status_code == 404
    _, path = finished(client, vendor)
    client.get(path, headers=vendor.headers(OWNER))  # kept
    monkeypatch.setattr(server.emulator.jobs.store, "_max", 1)
    finished(client, vendor)  # the first job is evicted
    assert client.get(path, headers=vendor.headers(OWNER)).status_code == 404


@by_vendor
def test_a_read_the_guard_did_not_pass_is_never_kept(server: EmulatorServer,
                                                     client: httpx.Client, vendor: Driver,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that breaks its contract (recorded, not refused: the guard does not note it
    as obeying) is checked on every read, never answered from kept bytes."""
    seen: list[str] = []

    async def recording(adapter: Any, operation: str, request: Any) -> None:
        seen.append(request.url.path)  # a violation recorded; ctx.obeys stays False

    monkeypatch.setattr(server.emulator.guard, "check", recording)
    before = hits(server, vendor)
    _, path = finished(client, vendor)  # its first read is not kept
    for _ in range(3):
        assert client.get(path, headers=vendor.headers(OWNER)).status_code == 200
    assert seen.count(path) == 4 and hits(server, vendor) == before
