"""The top-level router: Starlette's, with the routes that cannot match skipped up front.

Starlette's :class:`~starlette.routing.Router` tries every route in order; the emulator's app
has eight ``Host`` routes (each re-parsing the ``Host`` header), three ``Mount`` prefixes, a dozen
vendor routes at the root and the control plane, so a status poll used to pay for about twenty
``matches`` calls (21% of a poll's CPU in the profile of ``benchmarks/http_load.py``).

:class:`DispatchRouter` keeps Starlette's semantics exactly (first full match in route order
wins, else the first partial match, else slash redirect, else the default) but only tries the
candidates: a route whose path starts with a literal segment can only match a request whose
path starts with the same segment, and a ``Host`` route with a literal host name only a request
for that host. The candidates for each (host, first segment) pair are worked out once from the
route list. Anything it cannot rule out (a pattern in a host or a first segment) is always
tried, in its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Host, Match, Mount, Route, Router
from starlette.types import Receive, Scope, Send

#: Distinct (host, segment) pairs whose candidate lists are kept (unknown segments share one).
_CACHE_LIMIT = 4096


def first_segment(path: str) -> str | None:
    """The first path segment when it is literal (``"/v2/jobs/{id}"`` -> ``"v2"``), else
    ``None`` (``"/{name}"``, ``"/"``)."""
    segment = path.lstrip("/").split("/", 1)[0]
    if not segment or "{" in segment:
        return None
    return segment


def request_host(scope: Scope) -> str | None:
    """The lower-cased host name of the ``Host`` header without its port, or ``None``
    (missing, or an IPv6 literal, which no vendor host name can be)."""
    for name, value in scope["headers"]:
        if name == b"host":
            text = value.decode("latin-1")
            if text.startswith("["):
                return None
            host: str = text.split(":", 1)[0].lower()
            return host
    return None


_Candidates = tuple[tuple[BaseRoute, "str | None"], ...]


def _literal(route: BaseRoute) -> str | None:
    """A plain ``Route``'s path when it has no parameter (it matches that path only), else
    ``None``."""
    if type(route) is Route and "{" not in route.path:
        return route.path
    return None


class DispatchRouter(Router):
    """A :class:`~starlette.routing.Router` that tries only the routes that can match.

    Same constructor as Starlette's. Routes added after construction (``app.add_route``,
    ``routes.append``) are taken into account: the candidate lists are rebuilt when the route
    list is replaced or its length changes.
    """

    def __init__(self, routes: Sequence[BaseRoute] | None = None, **kwargs: Any) -> None:
        super().__init__(routes, **kwargs)
        self._built_for: tuple[int, int] = (0, -1)
        self._hosts: dict[str, Host] = {}
        self._keys: list[tuple[BaseRoute, str | None, str | None, bool]] = []
        self._candidates: dict[tuple[str | None, str | None], _Candidates] = {}
        self._segments: frozenset[str] = frozenset()

    def _build(self) -> None:
        """Work out, for each route, the host and first segment it needs (``None``: any)."""
        keys: list[tuple[BaseRoute, str | None, str | None, bool]] = []
        hosts: dict[str, Host] = {}
        for route in self.routes:
            host: str | None = None
            segment: str | None = None
            is_host = isinstance(route, Host)
            if is_host:
                assert isinstance(route, Host)
                if "{" not in route.host:
                    host = route.host.lower()
                    hosts.setdefault(host, route)
            elif isinstance(route, (Route, Mount)):
                segment = first_segment(route.path)
            keys.append((route, host, segment, is_host))
        self._keys = keys
        self._hosts = hosts
        self._segments = frozenset(s for _, _, s, _ in keys if s is not None)
        self._candidates = {}
        self._built_for = (id(self.routes), len(self.routes))

    def candidates(self, scope: Scope) -> tuple[BaseRoute, ...]:
        """The routes, in order, that may match ``scope`` (an ``http`` or ``websocket`` one)."""
        return tuple(route for route, _ in self._lookup(scope, get_route_path(scope)))

    def _lookup(self, scope: Scope, path: str) -> _Candidates:
        """:meth:`candidates`, each with its path when the path has no parameter (such a
        route can only match that very path: a string comparison, not a regex)."""
        if self._built_for != (id(self.routes), len(self.routes)):
            self._build()
        host = request_host(scope)
        if host not in self._hosts:
            host = None
        segment = path[1:].split("/", 1)[0] if path.startswith("/") else None
        if segment not in self._segments:
            segment = None
        key = (host, segment)
        found = self._candidates.get(key)
        if found is None:
            found = tuple(
                (route, _literal(route)) for route, need_host, need_segment, is_host in self._keys
                if (need_host == host if is_host and need_host is not None else True)
                and (need_segment is None or need_segment == segment)
            )
            if len(self._candidates) < _CACHE_LIMIT:
                self._candidates[key] = found
        return found

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Starlette's routing over :meth:`candidates`; what finds no full match there goes
        through Starlette's own loop (405 partial matches, slash redirects, the default),
        which finds the same partial match since the routes skipped cannot match at all."""
        if scope["type"] == "http":
            if "router" not in scope:
                scope["router"] = self
            path = get_route_path(scope)
            for route, literal in self._lookup(scope, path):
                if literal is not None and literal != path:
                    continue
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)


__all__ = ["DispatchRouter", "first_segment", "request_host"]
