"""The request journal: bounded, filtered, verified with near misses, Retry-After tracked."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest

from emulator.core.journal import Journal, parse_criteria


def _add(journal: Journal, at: float, status: int = 200, *, key: str | None = "k",
         operation: str = "submit", retry_after: float | None = None,
         vendor: str = "pixazo") -> None:
    journal.record(at=at, method="POST", path="/x", vendor=vendor, operation=operation,
                   api_key=key, status=status, latency_ms=5.0, retry_after=retry_after)


def test_bounded_oldest_dropped_first() -> None:
    journal = Journal(3)
    for i in range(5):
        _add(journal, float(i))
    assert [e.seq for e in journal.entries()] == [3, 4, 5]
    journal.clear()
    _add(journal, 9.0)
    assert [e.seq for e in journal.entries()] == [1]


def test_select_with_parsed_criteria() -> None:
    journal = Journal(10)
    _add(journal, 1.0, 202)
    _add(journal, 2.0, 429, retry_after=2.0)
    _add(journal, 3.0, 200, operation="status")
    journal.entries()[1].faults.append({"rule": "f1", "source": "admin",
                                        "applied": "status=429"})
    assert [e.seq for e in journal.select(parse_criteria({"status": "429"}))] == [2]
    assert [e.seq for e in journal.select(parse_criteria({"fault": "true"}))] == [2]
    assert [e.seq for e in journal.select(parse_criteria({"fault": "f1"}))] == [2]
    assert [e.seq for e in journal.select(parse_criteria({"fault": "false",
                                                          "operation": "status"}))] == [3]
    with pytest.raises(ValueError, match="unknown criterion 'colour'"):
        parse_criteria({"colour": "red"})
    with pytest.raises(ValueError, match="status must be an integer"):
        parse_criteria({"status": "x"})


def test_verify_counts_and_near_misses() -> None:
    journal = Journal(10)
    _add(journal, 1.0, 202)
    _add(journal, 2.0, 202, key="other")
    _add(journal, 3.0, 404, operation="status", vendor="apiframe")
    assert journal.verify({"status": 202}, count=2)["pass"]
    assert journal.verify({"status": 202})["pass"]  # at least one
    assert journal.verify({"status": 202}, minimum=1, maximum=2)["pass"]
    failed = journal.verify({"api_key": "other", "status": 404}, count=1)
    assert not failed["pass"] and failed["count"] == 0 and failed["expected"] == "exactly 1"
    misses = failed["near_misses"]
    assert [m["seq"] for m in misses] == [3, 2, 1]  # one field off first, newest first
    assert misses[0]["differs"] == ["api_key"] and misses[1]["differs"] == ["status"]
    assert sorted(misses[2]["differs"]) == ["api_key", "status"]
    assert journal.verify({"status": 202}, maximum=1)["pass"] is False


def test_early_retry_before_retry_after_passes() -> None:
    journal = Journal(10)
    _add(journal, 100.0, 429, retry_after=2.0)
    _add(journal, 101.0, 429, retry_after=2.0)   # came back after 1 s of 2: early
    _add(journal, 101.5, 200, operation="status")  # another operation: not a retry
    _add(journal, 101.5, 202, key="someone-else")
    _add(journal, 103.5, 202)                    # 2 s after the last 429: fine
    assert [e.early_retry for e in journal.entries()] == [False, True, False, False, False]


def test_retry_after_counts_from_the_end_of_the_answer() -> None:
    """Under a virtual clock the answer ends when it arrived (``ended``): a client that waits
    exactly Retry-After on that clock is on time; by default the real latency is added."""
    journal = Journal(10)
    journal.record(at=100.0, method="POST", path="/x", vendor="pixazo", operation="submit",
                   api_key="k", status=429, latency_ms=5.0, retry_after=3.0, ended=100.0)
    _add(journal, 103.0, 202)
    assert [e.early_retry for e in journal.entries()] == [False, False]
    journal.clear()
    _add(journal, 100.0, 429, retry_after=3.0)          # ended: 100.005
    _add(journal, 103.0, 202)
    assert [e.early_retry for e in journal.entries()] == [False, True]


def test_key_looked_up_lazily() -> None:
    journal = Journal(10)
    calls = []

    def lookup() -> str:
        calls.append(1)
        return "lazy-key"

    journal.record(at=1.0, method="GET", path="/x", vendor="pixazo", operation="status",
                   api_key=None, status=200, latency_ms=1.0, key_lookup=lookup)
    assert calls == []
    assert journal.select({"api_key": "lazy-key"})[0].api_key == "lazy-key"
    journal.select({})
    assert calls == [1]


def test_retry_after_counts_from_when_the_429_went_out() -> None:
    """A client that waits ``Retry-After`` from the moment it read the 429 is on time, even
    when the emulator finishes the answer (and writes its journal entry) later: the deadline
    counts from the 429's status line, not from the journal write (a false early_retry seen
    under load in a 200-example fuzz-client run)."""
    import asyncio
    import json

    from emulator.app import create_app
    from emulator.settings import Settings

    app = create_app(Settings(engine="grabcut", virtual_clock=True, progression="immediate"))
    emulator = app.state.emulator
    emulator.faults.add({"vendor": "pixazo", "operation": "submit", "status": 429,
                         "retry_after": 1, "times": 1})
    body = json.dumps({"image_url": "data:image/png;base64,AAAA"}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http",
             "path": "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request",
             "raw_path": b"/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"127.0.0.1:8000"), (b"ocp-apim-subscription-key", b"k"),
                         (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}

    async def call(slow_after_start: float) -> None:
        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                emulator.clock.advance(slow_after_start)  # the rest of the answer is slow

        await app(dict(scope), receive, send)

    async def run() -> None:
        await emulator.jobs.start()
        try:
            await call(0.5)               # the 429; its body ends 0.5 s after its status line
            emulator.clock.advance(0.6)   # the client waited 1 s from reading the 429 (+0.1)
            await call(0.0)
        finally:
            await emulator.jobs.stop()

    asyncio.run(run())
    first, second = emulator.journal.entries()
    assert (first.status, first.retry_after) == (429, 1.0)
    assert second.status != 429 and second.early_retry is False, second.to_json()
