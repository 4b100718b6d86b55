"""The one error boundary, and the dispatch of a resolved request to its route.

Handlers (vendor endpoints, the guard, the control plane) raise; nothing returns an error
response by hand. :func:`serve` runs the route a :class:`~emulator.context.RequestContext`
resolved to and turns what escapes it into the answer, in one place (:func:`render`):

* :class:`~emulator.errors.EmulatorError`: rendered by the context's adapter in its vendor's
  body for the context's operation (``VendorAdapter.error_response``: with ``Retry-After`` on
  a 429), or by the control plane as ``{"detail": message}``;
* Starlette's :class:`~starlette.exceptions.HTTPException` (a 405, with ``Allow``: every method
  the vendor host accepts on the path): the same, with its status and detail;
* anything else: logged, and answered as a 500 in the same shapes ("internal error in the
  emulator"), so a bad request never crashes the server.

An exception raised after the answer has started cannot be rendered: it propagates (the server
closes the connection), as under Starlette's own error middleware.
"""

from __future__ import annotations

import logging

from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import Message, Receive, Scope, Send

from emulator.context import RequestContext
from emulator.errors import AdminTokenRequired, EmulatorError
from emulator.vendors.finalreads import FinalReadRoute

log = logging.getLogger("emulator")

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
        log.error("%s %s: unhandled error", ctx.vendor or "control plane",
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


__all__ = ["INTERNAL_ERROR", "control_plane_error", "render", "serve"]
