"""The fast lane of status reads: a finished job's rendered answer, kept and sent again.

A status read of a job that shows its final status renders the same bytes every time until
the job changes: the engine bumps ``Job.version`` on every change
(:meth:`emulator.core.jobs.JobEngine` ``_touch``), and when the job leaves the store (reset,
eviction, a withdrawn submit). So a status route
(:meth:`emulator.vendors.base.VendorAdapter.route` with ``final_read=``, a
:class:`FinalReadRoute`) keeps, per job, the answer it rendered (status, headers, body) with
the job's version, the API key it was rendered for and the request's *fingerprint*
(:func:`fingerprint`: method, path, query string, scheme, server address and every header,
byte for byte), and the error boundary (:func:`emulator.middleware.serve`) answers a later read
with the same fingerprint and version from those bytes, before Starlette's
``Request``/``request_response`` wrapper, the guard and the handler
(:meth:`FinalReads.answer`).

Why a fingerprint is enough:

* everything the answer is rendered from besides the job (origin, path, query) is in it;
* the API key is a function of the headers, so a read with the same fingerprint is made with
  the same key as the read that was answered (the job's owner): another key, or none, has
  another fingerprint and takes the slow path (the unknown id's 404, the 401);
* the contract guard's verdict is a function of the path, query, headers and body: only an
  answer to a request the guard found to obey its contract
  (:attr:`~emulator.context.RequestContext.obeys`) and without a body is kept, so a read sent
  from kept bytes would have passed the guard (and recorded nothing) again.

What still runs on every read: the journal entry (with the ``job_id`` and key, set on the
request's context). What skips the lane: a request on the fault path (a fault header, a
``fault.`` key, or any stored rule live: the middleware then sets ``RequestContext.plan``),
a job not final, an answer that is not a plain 200 under :data:`MAX_BODY` bytes (``sync_mode``
data URIs), a request with a body, and a shared store (``--store redis://``: another process
may change the job; those routes are plain).

Bounded: :data:`MAX_ENTRIES` jobs' answers, the oldest dropped first (one entry per job, the
last fingerprint read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope, Send

from emulator.jsonbody import body_framing

if TYPE_CHECKING:
    from emulator.context import RequestContext
    from emulator.core.jobs import Job

#: Jobs whose answer is kept (about 1 KiB each with its fingerprint: under 10 MiB).
MAX_ENTRIES = 8192
#: Answers larger than this (bytes) are not kept.
MAX_BODY = 16384

Fingerprint = tuple[Any, ...]


def fingerprint(scope: Scope) -> Fingerprint:
    """What a status read's answer, its key and its contract verdict depend on besides the
    job: ``(method, path, query string, scheme, server, headers)``, the headers as the
    request sent them (name and value bytes, in order)."""
    return (scope["method"], scope["path"], scope.get("query_string", b""),
            scope.get("scheme", "http"), scope.get("server"), tuple(scope["headers"]))


class _Entry(NamedTuple):
    job: Job
    version: int
    fingerprint: Fingerprint
    api_key: str | None
    start: dict[str, Any]
    body: dict[str, Any]


class FinalReads:
    """The kept answers of final status reads, by job id (see the module docstring).
    Event-loop only."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max(1, max_entries)
        self._entries: dict[str, _Entry] = {}
        #: Answers sent from kept bytes.
        self.hits = 0

    def lookup(self, job_id: str, scope: Scope) -> _Entry | None:
        """The kept answer for job ``job_id`` when it is still current (the job's version
        unchanged) and was rendered for a request with ``scope``'s fingerprint, else
        ``None``."""
        entry = self._entries.get(job_id)
        if (entry is None or entry.version != entry.job.version
                or entry.fingerprint != fingerprint(scope)):
            return None
        return entry

    async def answer(self, ctx: RequestContext, scope: Scope, job_id: str,
                     send: Send) -> bool:
        """Send the kept answer of ``job_id`` for the request ``ctx`` resolved (not on the
        fault path: ``ctx.plan`` is ``None``) and note its job and key on ``ctx`` for the
        journal; ``False`` (nothing sent) when there is none (:meth:`lookup`)."""
        entry = self.lookup(job_id, scope)
        if entry is None:
            return False
        self.hits += 1
        ctx.key, ctx.job_id = entry.api_key, entry.job.id
        await send(entry.start)
        await send(entry.body)
        return True

    def keep(self, job: Job, scope: Scope, api_key: str | None, response: Response) -> None:
        """Keep ``response`` (just rendered for ``job``, the request in ``scope`` made with
        ``api_key`` and found by the guard to obey its contract) when the job shows its
        final status, the request has no body and the answer is a plain 200 of at most
        :data:`MAX_BODY` bytes."""
        if (not job.status.terminal or response.status_code != 200
                or response.background is not None or type(response).__call__
                is not Response.__call__):
            return
        body = getattr(response, "body", None)
        if not isinstance(body, bytes) or len(body) > MAX_BODY:
            return
        length, chunked = body_framing(scope["headers"])
        if chunked or length:
            return
        entries = self._entries
        if job.id not in entries and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[job.id] = _Entry(
            job, job.version, fingerprint(scope), api_key,
            {"type": "http.response.start", "status": 200,
             "headers": list(response.raw_headers)},
            {"type": "http.response.body", "body": body})

    def clear(self) -> None:
        """Forget every kept answer."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class FinalReadRoute(Route):
    """A status read's route: a plain :class:`~starlette.routing.Route` (it matches as one)
    that names its lane (``lane``) and the path parameter holding the job id (``param``), so
    the error boundary can answer a kept read before the route runs."""

    def __init__(self, path: str, endpoint: Any, *, methods: list[str], name: str,
                 lane: FinalReads, param: str) -> None:
        super().__init__(path, endpoint, methods=methods, name=name)
        self.lane = lane
        self.param = param


__all__ = ["MAX_BODY", "MAX_ENTRIES", "FinalReadRoute", "FinalReads", "Fingerprint",
           "fingerprint"]
