"""The one way in: resolve the request once, apply fault rules, serve it inside the one error
boundary, journal it.

A pure ASGI middleware, outermost in the app (outside Starlette's own stack, which only serves
the lifespan here, so it sees the server's own ``send`` and can drop a connection). Every
``http`` request is first resolved, once, by the app's :class:`~emulator.context.RouteTable`
into a :class:`~emulator.context.RequestContext` stored on the scope (``scope["rmbg.ctx"]``):
vendor, operation, route, and the API key read at most once. Then, for each vendor request
(everything but ``/_emulator/*``; result files under ``/_emulator/files/{vendor}/`` count, as
the ``file`` operation of their vendor) it:

1. looks for per-request rules: the ``X-Emulator-Fault`` header and an API key starting with
   ``fault.``; with none of these and no stored rule live, it only serves and journals (the
   hot path: one scan of the header list, one journal entry);
2. otherwise asks :meth:`emulator.core.faults.FaultRules.plan` for the plan (on the context's
   vendor, operation and key), stores it on the context (``ctx.plan``: the adapter's submit
   hands it to the job engine, for job and image faults) and lets its request-stage effects
   act (:meth:`~emulator.core.faults.Plan.act_on_request`: latency, dropped connection,
   broken body, status answer; each a registered effect, :mod:`emulator.core.faults.effects`);
3. serves it with :func:`serve`, the one error boundary (below);
4. journals the final status (:class:`~emulator.core.journal.Journal`).

Before any of that, every request (the control plane's too) with a ``Content-Length`` over
``Settings.json_body_limit`` is answered 413 without its body being read (in the vendor's
error body, or ``{"detail": ...}`` under ``/_emulator``), and a body without one (chunked) is
read through :class:`~emulator.jsonbody.CappedReceive`, which stops past the limit.

Control-plane requests (``/_emulator/*`` but result files) skip the faults and the journal;
with an admin token set they first pass :class:`~emulator.admingate.AdminGate`, the one place
that checks it.

**The one error boundary.** Handlers (vendor endpoints, the guard, the control plane) raise;
nothing returns an error response by hand. :func:`serve` runs the route a
:class:`~emulator.context.RequestContext` resolved to and turns what escapes it into the
answer, in one place (:func:`render`):

* :class:`~emulator.errors.EmulatorError`: rendered by the context's adapter in its vendor's
  body for the context's operation (``VendorAdapter.error_response``: with ``Retry-After`` on
  a 429), or by the control plane as ``{"detail": message}``;
* Starlette's :class:`~starlette.exceptions.HTTPException` (a 405, with ``Allow``: every method
  the vendor host accepts on the path): the same, with its status and detail;
* anything else: logged, and answered as a 500 in the same shapes ("internal error in the
  emulator"), so a bad request never crashes the server.

An exception raised after the answer has started cannot be rendered: it propagates (the server
closes the connection), as under Starlette's own error middleware.

Dropping a connection needs the server's transport (:mod:`emulator.core.faults.asgi`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emulator.admingate import AdminGate
from emulator.context import CTX_KEY, UNREAD, RequestContext, RouteTable
from emulator.core.faults import (
    FaultRule,
    RequestAct,
    RuleError,
    drop_connection,
    fault_error,
    malformed,
    sleep_at_least,
)
from emulator.errors import AdminTokenRequired, EmulatorError
from emulator.jsonbody import BodyTooLarge, CappedReceive, body_framing
from emulator.vendors.base import VendorAdapter
from emulator.vendors.finalreads import FinalReadRoute

if TYPE_CHECKING:
    from emulator.app import Emulator

log = logging.getLogger("emulator.faults")
#: Where the error boundary logs an unexpected exception, with its traceback.
error_log = logging.getLogger("emulator")

ADMIN_PREFIX = "/_emulator/"
FILES_PREFIX = "/_emulator/files/"
FAULT_HEADER = b"x-emulator-fault"
FAULT_KEY_PREFIX = "fault."
#: Seconds to wait for the server to notice a connection we dropped.
DISCONNECT_WAIT_S = 5.0


INTERNAL_ERROR = "internal error in the emulator"


def control_plane_error(exc: EmulatorError) -> Response:
    """The control plane's error answer: ``{"detail": message}`` JSON with ``exc``'s status
    (and ``Retry-After`` in whole seconds, at least 1, when it has one; the admin token's
    ``WWW-Authenticate`` challenge on its 401)."""
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if isinstance(exc, AdminTokenRequired):
        headers["WWW-Authenticate"] = exc.challenge
    return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)


def render(ctx: RequestContext, exc: Exception) -> Response:
    """The answer for ``exc`` raised while serving ``ctx``'s request (see the module
    docstring); logs an unexpected exception with its traceback."""
    headers: dict[str, str] = {}
    if isinstance(exc, EmulatorError):
        error = exc
    elif isinstance(exc, HTTPException):
        error = EmulatorError(str(exc.detail), status=exc.status_code, code="http_error")
        headers.update(exc.headers or {})
        if exc.status_code == 405 and ctx.adapter is not None and ctx.allowed:
            headers["Allow"] = ", ".join(ctx.allowed)
    else:
        error_log.error("%s %s: unhandled error", ctx.vendor or "control plane",
                  ctx.operation or "-", exc_info=exc)
        error = EmulatorError(INTERNAL_ERROR, status=500)
    if ctx.adapter is not None:
        response = ctx.adapter.error_response(error, ctx.operation)
    else:
        response = control_plane_error(error)
    response.headers.update(headers)
    return response


async def serve(ctx: RequestContext, scope: Scope, receive: Receive, send: Send, *,
                refuse: EmulatorError | None = None) -> None:
    """Run the request ``ctx`` resolved to, inside the error boundary; or, with ``refuse``
    (a 413, a fault rule's status, a bad fault rule, the admin token), answer that error
    without running it.

    A status read of a final job whose answer the fast lane kept is answered from those
    bytes first (not on the fault path: :mod:`emulator.vendors.finalreads`). Otherwise a
    full match runs its route (Starlette's ``path_params``, ``endpoint`` and a prefix's
    ``root_path`` are set on the scope first, as Starlette's router does); a path matched
    with another method is a 405; a path that matches with its trailing slash added or
    removed is redirected (307); anything else is the vendor host's 404 (``no route for
    {path}``) or the control plane's (``no route for {method} {path}``).
    """
    started = False

    async def sender(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    try:
        if refuse is not None:
            raise refuse
        route = ctx.route
        if (type(route) is FinalReadRoute and ctx.plan is None and await route.lane.answer(
                ctx, scope, ctx.path_params[route.param], sender)):
            return  # a kept final read: sent before the route runs
        if ctx.child_scope:
            scope.update(ctx.child_scope)
        if route is not None:
            scope["route"] = route
            await route.handle(scope, receive, sender)
            return
        if ctx.partial is not None:
            scope["route"] = ctx.partial
            raise HTTPException(405, headers={"Allow": ", ".join(getattr(ctx.partial,
                                                                         "methods", ()))})
        if ctx.redirect_path is not None:
            url = URL(scope={**scope, "path": ctx.redirect_path})
            await RedirectResponse(url=str(url))(scope, receive, sender)
            return
        if ctx.adapter is not None:
            raise EmulatorError(f"no route for {scope['path']}", status=404, code="not_found")
        raise EmulatorError(f"no route for {scope['method']} {Request(scope).url.path}",
                            status=404, code="not_found")
    except Exception as exc:
        if started:
            raise
        await render(ctx, exc)(scope, receive, send)



class _Recorder:
    """``send`` wrapper noting the status, and a 429's ``Retry-After`` with the emulator-clock
    time its status line went out (``sent_at``: the earliest a client can have seen it, so
    the time its ``Retry-After`` counts from; the journal is written later, under load
    possibly after the client has already read the answer and started waiting)."""

    __slots__ = ("now", "retry_after", "send", "sent_at", "status")

    def __init__(self, send: Send, now: Callable[[], float]) -> None:
        self.send = send
        self.now = now
        self.status: int | None = None
        self.retry_after: float | None = None
        self.sent_at: float | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.status == 429:
                for name, value in message.get("headers", ()):
                    if name.lower() == b"retry-after":
                        with contextlib.suppress(ValueError):
                            self.retry_after = float(value)
                self.sent_at = self.now()
        await self.send(message)


class FaultMiddleware:
    """See the module docstring. ``app`` is Starlette's own stack (it serves the lifespan);
    ``table`` resolves every ``http`` request, once."""

    def __init__(self, app: ASGIApp, emulator: Emulator, table: RouteTable) -> None:
        self.app = app
        self.emulator = emulator
        self.table = table
        self.faults = emulator.faults
        self.journal = emulator.journal
        self.clock = emulator.clock
        self.traffic = emulator.traffic
        self.body_limit = emulator.settings.json_body_limit
        self.admin_gate = AdminGate(emulator.settings.admin_token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        traffic = self.traffic
        traffic.in_flight += 1
        try:
            await self._http(scope, receive, send)
        finally:
            traffic.in_flight -= 1
            traffic.served += 1
            traffic.last_end = time.monotonic()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = scope[CTX_KEY] = self.table.resolve(scope)
        path: str = scope["path"]
        limit = self.body_limit
        if path.startswith(ADMIN_PREFIX) and not path.startswith(FILES_PREFIX):
            refuse: EmulatorError | None = self.admin_gate.check(scope)
            length, chunked = body_framing(scope["headers"])
            if refuse is None and length is not None and length > limit:
                refuse = BodyTooLarge(limit, length)
            shared = self.emulator.jobs.shared
            if shared is not None and refuse is None:
                try:  # the rules as every process shares them (Redis)
                    await shared.sync_rules(ctx.path_params.values())
                except EmulatorError as exc:
                    refuse = exc
            await serve(ctx, scope, CappedReceive(receive, limit) if chunked else receive, send,
                        refuse=refuse)
            if shared is not None and refuse is None and scope["method"] not in ("GET", "HEAD"):
                with contextlib.suppress(EmulatorError):
                    await shared.publish_rules()
            return
        started = time.perf_counter()
        at = self.clock.now()
        header_text: str | None = None
        key_hint = False
        length = None
        chunked = False
        for name, value in scope["headers"]:
            if name == FAULT_HEADER:
                header_text = value.decode("latin-1")
            elif name == b"content-length":
                length = int(value) if value.isdigit() else None
            elif name == b"transfer-encoding":
                chunked = True
            elif b"fault." in value:
                key_hint = True
        recorder = _Recorder(send, self.clock.now)
        refuse = None
        if chunked:
            # No Content-Length: stop reading once past the limit.
            receive = CappedReceive(receive, limit)
        elif length is not None and length > limit:
            # Refused before a byte of the body is read (and before any fault rule), in the
            # vendor's own 413 body.
            refuse = BodyTooLarge(limit, length)
        if refuse is None and self.emulator.jobs.shared is not None:
            try:  # the rules and their hits as every process shares them (Redis)
                await self.emulator.jobs.shared.sync_rules(ctx.path_params.values())
            except EmulatorError as exc:
                refuse = exc
        if refuse is None and (header_text is not None or key_hint or self.faults.live):
            await self._with_faults(ctx, scope, receive, send, recorder, header_text, at,
                                    started)
            return
        # The hot path: no rule can apply; only journal.
        try:
            await serve(ctx, scope, receive, recorder, refuse=refuse)
        finally:
            self._record(ctx, scope, at, started, recorder)

    async def _with_faults(self, ctx: RequestContext, scope: Scope, receive: Receive,
                           send: Send, recorder: _Recorder, header_text: str | None, at: float,
                           started: float) -> None:
        key = ctx.api_key(scope)
        first: list[FaultRule] = []
        problem: str | None = None
        if header_text is not None:
            try:
                first.append(self.faults.parse_text(header_text, source="header"))
            except RuleError as exc:
                problem = f"X-Emulator-Fault: {exc}"
        if key is not None and key.startswith(FAULT_KEY_PREFIX) and problem is None:
            try:
                first.append(self.faults.parse_text(key[len(FAULT_KEY_PREFIX):], source="key"))
            except RuleError as exc:
                problem = f"fault API key: {exc}"
        recorded = False

        def record() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                self._record(ctx, scope, at, started, recorder)

        try:
            if problem is not None:
                await serve(ctx, scope, receive, recorder, refuse=EmulatorError(
                    problem, status=400, code="invalid_fault_rule"))
                return
            plan = ctx.plan = self.faults.plan(ctx.vendor, ctx.operation, key, first)
            shared = self.emulator.jobs.shared
            while shared is not None and plan.rule is not None and plan.rule.times is not None \
                    and plan.rule.source not in ("header", "key"):
                # a stored rule's times are global: the hit is taken on Redis, atomically
                try:
                    if await shared.take_hit(plan.rule):
                        break
                except EmulatorError as exc:
                    await serve(ctx, scope, receive, recorder, refuse=exc)
                    return
                self.faults.refresh()
                plan = ctx.plan = self.faults.plan(ctx.vendor, ctx.operation, key, first)
            if shared is not None and plan.pending:
                from emulator.core.state.hits import claim_job_rule

                try:  # a job rule's times are global too: its hit is taken before serving
                    await claim_job_rule(shared, plan)
                except EmulatorError as exc:
                    await serve(ctx, scope, receive, recorder, refuse=exc)
                    return
            if plan.empty:
                await serve(ctx, scope, receive, recorder)
                return
            # The request-stage effects act (latency, drop, broken body, status answer); the
            # job-stage ones ride on the plan, which the adapter's submit hands the job engine.
            act = RequestAct(receive=receive, send=recorder, raw_send=send, record=record,
                             conforms=self._conforms(ctx))
            if await plan.act_on_request(act):
                return
            await serve(ctx, scope, receive, act.send, refuse=act.refuse)
        finally:
            if ctx.plan is not None and ctx.plan.claimed is not None and (
                    self.emulator.jobs.shared is not None):
                from emulator.core.state.hits import give_back_job_rule

                await give_back_job_rule(self.emulator.jobs.shared, ctx.plan)
            record()

    def _conforms(self, ctx: RequestContext) -> Callable[[int, Any], bool] | None:
        """What the vendor may answer ``ctx``'s request (its contract operation's response
        schemas, for the ``vary`` fault), or ``None`` without a contract operation."""
        if ctx.vendor is None or ctx.operation is None:
            return None
        op = self.emulator.guard.operation(ctx.vendor, ctx.operation)
        return None if op is None else op.accepts_variant

    def _record(self, ctx: RequestContext, scope: Scope, at: float, started: float,
                recorder: _Recorder) -> None:
        try:
            key: str | None = None
            lookup = None
            adapter = ctx.adapter
            if ctx.key is not UNREAD:
                key = ctx.key
            elif adapter is not None:
                # Resolved when the journal is read (or at once where Retry-After needs it),
                # from a copy of what the key is read from: the journal keeps no request.
                mini = {"type": "http", "method": scope["method"], "path": scope["path"],
                        "headers": scope["headers"], "scheme": scope.get("scheme", "http"),
                        "server": scope.get("server"), "root_path": "",
                        "query_string": scope.get("query_string", b"")}
                lookup = partial(_detached_key, adapter, mini)
            plan = ctx.plan
            self.journal.record(
                at=at, method=scope["method"], path=scope["path"], vendor=ctx.vendor,
                operation=ctx.operation, api_key=key, key_lookup=lookup,
                status=recorder.status, latency_ms=(time.perf_counter() - started) * 1000.0,
                faults=plan.journal_json() if plan is not None else None,
                retry_after=recorder.retry_after,
                ended=recorder.sent_at if recorder.sent_at is not None else self.clock.now(),
                job_id=ctx.job_id,
            )
        except Exception:  # the journal must never break an answer
            log.exception("journal: could not record %s", scope.get("path"))


def _detached_key(adapter: VendorAdapter, scope: Scope) -> str | None:
    """``adapter``'s API key in ``scope`` (no request context: read afresh), or ``None``."""
    try:
        return adapter.api_key(Request(scope))
    except EmulatorError:
        return None
    except Exception:  # an adapter bug must not break the journal
        log.exception("%s: api_key() failed", adapter.slug)
        return None


__all__ = ["INTERNAL_ERROR", "FaultMiddleware", "control_plane_error", "drop_connection",
           "fault_error", "malformed", "render", "serve", "sleep_at_least"]
