"""The fast lane of status reads: a finished job's rendered answer, kept and sent again.

A status read of a job that shows its final status renders the same bytes every time until
the job changes: the engine bumps ``Job.version`` on every change
(:meth:`emulator.core.jobs.JobEngine` ``_touch``). So the route layer
(:meth:`emulator.vendors.base.VendorAdapter.route` with ``final_read=``) keeps, per job, the
answer it rendered (status, headers, body) with the job's version and the request's
*variant* (origin, path, query string: everything a status body is rendered from besides the
job), and answers a later read with the same variant and version from those bytes.

What still runs on every read: the contract guard (and its memo), the API key check (a job
of another key is still an unknown id: the lookup is scoped as ``caller_job``'s), the
journal entry (with its ``job_id``). What skips the lane: a request on the fault path (a
fault header, a ``fault.`` key, or any stored rule live: the middleware then sets
``RequestContext.plan``), a job not final, an answer that is not a plain 200 under
:data:`MAX_BODY` bytes (``sync_mode`` data URIs).

Bounded: :data:`MAX_ENTRIES` jobs' answers, the oldest dropped first (one entry per job, the
last variant read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from starlette.responses import Response

if TYPE_CHECKING:
    from emulator.core.jobs import Job

#: Jobs whose answer is kept (about 0.6 KiB each: a few MiB at most).
MAX_ENTRIES = 8192
#: Answers larger than this (bytes) are not kept.
MAX_BODY = 16384


class Variant(NamedTuple):
    """What a status body depends on besides the job: origin (``scheme://host[:port]``),
    path and raw query string."""

    origin: str
    path: str
    query: bytes


class _Entry(NamedTuple):
    job: Job
    version: int
    variant: Variant
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class CachedResponse(Response):
    """An answer sent again from kept bytes (no rendering, no encoding)."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.raw_headers = headers
        self.body = body
        self.background = None


class FinalReads:
    """The kept answers of final status reads, by job id (see the module docstring).
    Event-loop only."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max(1, max_entries)
        self._entries: dict[str, _Entry] = {}
        #: Answers sent from kept bytes.
        self.hits = 0

    def lookup(self, job: Job, variant: Variant) -> CachedResponse | None:
        """The kept answer for ``job`` at its current version read as ``variant``, or
        ``None``."""
        entry = self._entries.get(job.id)
        if (entry is None or entry.job is not job or entry.version != job.version
                or entry.variant != variant):
            return None
        self.hits += 1
        return CachedResponse(entry.status, list(entry.headers), entry.body)

    def keep(self, job: Job, variant: Variant, response: Response) -> None:
        """Keep ``response`` (just rendered for ``job`` read as ``variant``) when the job
        shows its final status and the answer is a plain 200 of at most :data:`MAX_BODY`
        bytes."""
        if (not job.status.terminal or response.status_code != 200
                or response.background is not None or type(response).__call__
                is not Response.__call__):
            return
        body = getattr(response, "body", None)
        if not isinstance(body, bytes) or len(body) > MAX_BODY:
            return
        entries = self._entries
        if job.id not in entries and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[job.id] = _Entry(job, job.version, variant, 200, list(response.raw_headers),
                                 body)

    def clear(self) -> None:
        """Forget every kept answer."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["MAX_BODY", "MAX_ENTRIES", "CachedResponse", "FinalReads", "Variant"]
