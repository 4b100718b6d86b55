"""The request context and the one route table: every request is resolved once.

:class:`RouteTable` is built once at start-up from every adapter's routes (per
:class:`~emulator.vendors.base.HostSpec`: by its real host name through the ``Host`` header,
under its path prefix such as ``/queue``, or at the root), the result-files route and the
control-plane routes. :meth:`RouteTable.resolve` turns a request's scope into a
:class:`RequestContext` (adapter, host, operation, the matched route and its path parameters,
the API key read at most once), which the outermost middleware stores on the scope under
:data:`CTX_KEY`; the fault rules, the guard, the handler, the error boundary and the journal
all read it there. Nothing matches a route a second time.

The table answers as Starlette's :class:`~starlette.routing.Router` would on the equivalent
``Host`` / ``Mount`` / ``Route`` tree (:meth:`RouteTable.starlette_routes`, which the tests
compare it with): the first full match in route order wins; a path match with another method
is a 405 whose ``Allow`` lists the methods of every route of that vendor host matching the
path; a path that would match with its trailing slash added or removed is redirected (307);
anything else is the vendor host's own 404, or the control plane's at the root. Only the
routes that can match are tried: a route whose path starts with a literal segment can only
match a request whose path starts with the same segment, and a parameterless path is compared
as a string.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Host, Match, Mount, Route, Router
from starlette.types import ASGIApp, Scope

from emulator.core.faults import FILE_OPERATION
from emulator.errors import EmulatorError

if TYPE_CHECKING:
    from emulator.core.faults import Plan
    from emulator.vendors.base import HostSpec, VendorAdapter

log = logging.getLogger("emulator")

#: The scope key holding the request's :class:`RequestContext`.
CTX_KEY = "rmbg.ctx"
#: Result files: ``/_emulator/files/{vendor}/{name}``, the ``file`` operation of their vendor.
FILES_PREFIX = "/_emulator/files/"
#: Distinct (area, segment) pairs whose candidate lists are kept (unknown segments share one).
_CACHE_LIMIT = 4096
#: :attr:`RequestContext.key` before the key is read.
UNREAD: Any = object()


@dataclass(slots=True, eq=False)
class RequestContext:
    """One request, resolved once (:meth:`RouteTable.resolve`).

    Attributes:
        adapter: the vendor adapter that renders this request's errors; ``None`` for the
            control plane (``{"detail": ...}`` bodies).
        vendor: the vendor slug for the journal and fault rules (for a result file, the
            vendor in its path), or ``None``.
        host: the vendor host the request came under, or ``None`` (the control plane).
        prefix: the path prefix it came under (``""`` or ``"/queue"``, ...).
        operation: the operation name (route names are ``"{slug}.{operation}"``), or ``None``
            (no route matched, or only with another method).
        route: the route that fully matched, or ``None``.
        partial: when no route matched fully, the first that matched the path with another
            method (a 405), else ``None``.
        allowed: the 405's ``Allow`` methods: every method of the vendor host's routes that
            match the path, sorted (empty: the partial route's own methods).
        path_params: the matched route's path parameters.
        child_scope: what routing adds to the scope before the route runs (Starlette's
            ``path_params``, ``endpoint``, and a prefix's ``root_path``).
        redirect_path: the path to redirect to (a 307, as Starlette's ``redirect_slashes``),
            or ``None``.
        plan: the fault plan of the request, once worked out (the fault middleware).
        key: the API key once read (:data:`UNREAD` before; ``None`` when refused).
        key_error: the error reading the key raised (``Unauthorized``), if it did.
        job_id: the job the request made or named, once the vendor's handler has it (see
            :meth:`emulator.vendors.base.VendorAdapter.caller_job` and ``submit_job``), for the
            journal; ``None`` before.
        obeys: whether the contract guard found the request to obey its contract (or it has
            none; :meth:`emulator.guard.RequestGuard.check`); only such a read's answer is
            kept by the fast lane (:mod:`emulator.vendors.finalreads`).
    """

    adapter: VendorAdapter | None
    vendor: str | None
    host: HostSpec | None
    prefix: str
    operation: str | None
    route: BaseRoute | None
    partial: BaseRoute | None = None
    allowed: tuple[str, ...] = ()
    path_params: dict[str, Any] = field(default_factory=dict)
    child_scope: dict[str, Any] = field(default_factory=dict)
    redirect_path: str | None = None
    plan: Plan | None = None
    key: Any = UNREAD
    key_error: EmulatorError | None = None
    job_id: str | None = None
    obeys: bool = False

    def api_key(self, scope: Scope) -> str | None:
        """The API key, or ``None``: no adapter, or no acceptable key.

        ``adapter.api_key`` runs at most once per request: it keeps what it finds on the
        context (:attr:`key`, or the ``Unauthorized`` it raised in :attr:`key_error`; see
        :func:`emulator.vendors.base.VendorAdapter.api_key`), and whoever asks later (the
        handler, the guard, the journal) gets that.
        """
        if self.adapter is None:
            return None
        if self.key is UNREAD:
            try:
                self.adapter.api_key(Request(scope))
            except EmulatorError:
                return None
            except Exception:  # an adapter bug must not break every request
                log.exception("%s: api_key() failed", self.adapter.slug)
                return None
        if self.key_error is not None:
            return None
        key: str | None = self.key
        return key


def context_of(scope: Scope) -> RequestContext | None:
    """The context the outermost middleware stored on ``scope``, or ``None``."""
    ctx: RequestContext | None = scope.get(CTX_KEY)
    return ctx


def _first_segment(path: str) -> str | None:
    """The first path segment when it is literal (``"/v2/jobs/{id}"`` -> ``"v2"``), else
    ``None`` (``"/{name}"``, ``"/"``)."""
    segment = path.lstrip("/").split("/", 1)[0]
    if not segment or "{" in segment:
        return None
    return segment


def _route_path(path: str, root_path: str) -> str:
    """The path routes match (Starlette's: ``path`` less a ``root_path`` it starts with)."""
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    if path[len(root_path)] == "/":
        return path[len(root_path):]
    return path


def _host_name(scope: Scope) -> str | None:
    """The lower-cased host name of the ``Host`` header without its port, or ``None``
    (missing, or an IPv6 literal, which no vendor host name can be). A quick filter: the
    host's own :class:`~starlette.routing.Host` route confirms it."""
    for name, value in scope["headers"]:
        if name == b"host":
            text = value.decode("latin-1")
            if text.startswith("["):
                return None
            host: str = text.split(":", 1)[0].lower()
            return host
    return None


def _operation(route: BaseRoute) -> str | None:
    name: str = getattr(route, "name", None) or ""
    _, sep, operation = name.partition(".")
    return operation if sep else None


_ROUTE_MATCHES = Route.matches

_Candidates = tuple[tuple[Route, "str | None", "VendorAdapter | None", "str | None"], ...]


class _Area:
    """The routes a request can reach once its host (or prefix) is known, in order, each
    with its owning adapter (``None``: the files route and the control plane)."""

    def __init__(self, adapter: VendorAdapter | None, spec: HostSpec | None, prefix: str,
                 routes: Sequence[tuple[Route, VendorAdapter | None]]) -> None:
        self.adapter = adapter
        self.spec = spec
        self.prefix = prefix
        self.routes = list(routes)
        self._keys = [(route, owner, _first_segment(route.path)) for route, owner in routes]
        self._segments = frozenset(s for _, _, s in self._keys if s is not None)
        self._candidates: dict[str | None, _Candidates] = {}

    def candidates(self, path: str) -> _Candidates:
        """The routes, in order, that may match ``path``: each with its path when it has no
        parameter (it matches that very path only), and its owner."""
        segment = path[1:].split("/", 1)[0] if path.startswith("/") else None
        if segment not in self._segments:
            segment = None
        found = self._candidates.get(segment)
        if found is None:
            found = tuple((route, route.path if "{" not in route.path else None, owner,
                           _operation(route))
                          for route, owner, need in self._keys
                          if need is None or need == segment)
            if len(self._candidates) < _CACHE_LIMIT:
                self._candidates[segment] = found
        return found

    def any_match(self, path: str) -> bool:
        """Whether a route of the area matches ``path`` with any method."""
        view = {"type": "http", "path": path, "method": "GET"}
        for route, literal, _, _ in self.candidates(path):
            if literal is not None:
                if literal == path or literal + "\n" == path:
                    return True
            elif route.matches(view)[0] is not Match.NONE:
                return True
        return False


def _match(route: Route, path: str, method: str) -> tuple[Match, dict[str, Any]]:
    """:meth:`starlette.routing.Route.matches` for an ``http`` request on ``path`` (already
    relative to any prefix) with no outer path parameters: the match and the path
    parameters, converted by the route's convertors."""
    found = route.path_regex.match(path)
    if found is None:
        return Match.NONE, {}
    params = found.groupdict()
    for key, value in params.items():
        params[key] = route.param_convertors[key].convert(value)
    methods = route.methods
    return (Match.FULL if not methods or method in methods else Match.PARTIAL), params


class RouteTable:
    """Every route of the emulator, built once; resolves each request once.

    Args:
        adapters: the vendor adapters, in the order their hosts are tried.
        files: the result-files route (``/_emulator/files/{vendor}/{name}``), served at the
            root and on every vendor host name.
        control: the control plane's routes (``/_emulator/...``), at the root.
    """

    def __init__(self, adapters: Sequence[VendorAdapter], files: Route,
                 control: Sequence[BaseRoute]) -> None:
        self.adapters = {a.slug: a for a in adapters}
        self.files = files
        self.control = [r for r in control if isinstance(r, Route)]
        self._hosts: dict[str, tuple[_Area, Host]] = {}
        self._mounts: list[tuple[Mount, _Area]] = []
        root: list[tuple[Route, VendorAdapter | None]] = []
        for adapter in adapters:
            per_host = adapter.routes()
            for spec in adapter.hosts:
                routes = [(r, adapter) for r in per_host.get(spec.key, [])
                          if isinstance(r, Route)]
                area = _Area(adapter, spec, "", [*routes, (files, None)])
                self._hosts.setdefault(spec.name.lower(), (area, Host(spec.name, app=_nothing)))
                if spec.prefix:
                    if "{" in spec.prefix:  # resolve() matches prefixes as literal text
                        raise ValueError(f"{adapter.slug}: a host prefix has no parameters, "
                                         f"not {spec.prefix!r}")
                    self._mounts.append((Mount(spec.prefix, app=_nothing),
                                         _Area(adapter, spec, spec.prefix, routes)))
                else:
                    root.extend(routes)
        self._root = _Area(None, None, "", [*root, (files, None),
                                            *((r, None) for r in self.control)])

    # -- resolution -------------------------------------------------------------------------
    def resolve(self, scope: Scope) -> RequestContext:
        """The :class:`RequestContext` of an ``http`` scope (its ``path``, ``method``,
        ``headers`` and ``root_path``); does not change the scope."""
        root_path: str = scope.get("root_path", "")
        path = _route_path(scope["path"], root_path)
        area: _Area | None = None
        child: dict[str, Any] = {}
        name = _host_name(scope)
        named = self._hosts.get(name) if name is not None else None
        if named is not None:
            match, host_child = named[1].matches(scope)
            if match is Match.FULL:
                area = named[0]
                child = {"path_params": host_child["path_params"]}
        rel = path
        if area is None:
            for mount, mounted in self._mounts:
                if path.startswith(mounted.prefix + "/"):
                    if "\n" in path:  # Starlette's pattern stops at a newline: it decides
                        match, mounted_child = mount.matches(scope)
                        if match is not Match.FULL:
                            continue
                        child = {k: v for k, v in mounted_child.items() if k != "endpoint"}
                    else:  # what Mount.matches answers for a literal prefix, without its regex
                        child = {"path_params": dict(scope.get("path_params", {})),
                                 "app_root_path": scope.get("app_root_path", root_path),
                                 "root_path": root_path + mounted.prefix}
                    area, rel = mounted, _route_path(scope["path"], child["root_path"])
                    break
        if area is None:
            area = self._root
        return self._in_area(area, scope, path, rel, child)

    def _in_area(self, area: _Area, scope: Scope, path: str, rel: str,
                 child: dict[str, Any]) -> RequestContext:
        method: str = scope["method"]
        partial: tuple[Route, VendorAdapter | None] | None = None
        allowed: set[str] = set()
        for route, literal, owner, operation in area.candidates(rel):
            if literal is not None:
                if literal != rel and literal + "\n" != rel:  # the regex's "$" allows it
                    continue
                methods = route.methods
                match = Match.FULL if not methods or method in methods else Match.PARTIAL
                params: dict[str, Any] = {}
            elif type(route).matches is _ROUTE_MATCHES:  # Route, or a subclass matching as one
                match, params = _match(route, rel, method)
                if match is Match.NONE:
                    continue
            else:  # a subclass may match otherwise: ask it
                match, matched = route.matches({"type": "http", "path": rel, "method": method})
                if match is Match.NONE:
                    continue
                params = dict(matched["path_params"])
            if match is Match.FULL:
                adapter: VendorAdapter | None
                vendor: str | None
                if owner is not None:
                    adapter, vendor = owner, owner.slug
                else:
                    adapter = area.adapter
                    vendor, operation = self._unowned(route, area, path)
                child_scope = {"endpoint": route.endpoint, "path_params": params}
                if child:
                    child_scope = {**child, **child_scope}
                return RequestContext(adapter, vendor, area.spec, area.prefix, operation,
                                      route, None, (), params, child_scope)
            if partial is None:
                partial = (route, owner)
            if owner is not None and owner is (partial[1] or area.adapter) and route.methods:
                allowed |= route.methods
        if partial is not None:
            first, first_owner = partial
            renderer = first_owner or area.adapter
            return RequestContext(
                adapter=renderer, vendor=renderer.slug if renderer is not None else None,
                host=area.spec, prefix=area.prefix,
                operation=None, route=None, partial=first, allowed=tuple(sorted(allowed)),
                child_scope=child)
        return RequestContext(adapter=area.adapter,
                              vendor=area.adapter.slug if area.adapter is not None else None,
                              host=area.spec,
                              prefix=area.prefix, operation=None, route=None,
                              child_scope=child,
                              redirect_path=self._redirect(area, scope, path, rel))

    def _unowned(self, route: Route, area: _Area, path: str) -> tuple[str | None, str | None]:
        """``(vendor, operation)`` of a full match of a route no adapter owns: for a result
        file the vendor in its path (unknown: the host's vendor, no operation)."""
        if route is self.files:
            vendor = path[len(FILES_PREFIX):].split("/", 1)[0]
            if vendor in self.adapters:
                return vendor, FILE_OPERATION
        return (area.adapter.slug if area.adapter is not None else None), None

    def _redirect(self, area: _Area, scope: Scope, path: str, rel: str) -> str | None:
        """Starlette's ``redirect_slashes``: the full path with its trailing slash added (or
        removed) when a route of the area (at the root: or a prefix) matches it."""
        if rel == "/":
            return None
        full: str = scope["path"]
        other = full.rstrip("/") if rel.endswith("/") else full + "/"
        root_path: str = scope.get("root_path", "") + area.prefix
        other_rel = _route_path(other, root_path)
        if area.any_match(other_rel):
            return other
        if area is self._root:
            moved = {**scope, "path": other}
            for mount, _ in self._mounts:
                if mount.matches(moved)[0] is not Match.NONE:
                    return other
        return None

    # -- for the tests and tools ------------------------------------------------------------
    def host_names(self) -> list[str]:
        """Every vendor host's real name, sorted."""
        return sorted(self._hosts)

    def starlette_routes(self, default: Callable[[VendorAdapter], ASGIApp]
                         ) -> list[BaseRoute]:
        """The same routes as a tree for Starlette's :class:`~starlette.routing.Router`
        (``Host`` per vendor host name, ``Mount`` per prefix, then the root's routes): what
        this table must answer like. ``default(adapter)`` is a vendor host's not-found app."""
        hosts: list[BaseRoute] = []
        mounts: list[BaseRoute] = []
        for area, host in self._hosts.values():
            assert area.adapter is not None
            hosts.append(Host(host.host, app=Router([r for r, _ in area.routes],
                                                    default=default(area.adapter))))
        for mount, area in self._mounts:
            assert area.adapter is not None
            mounts.append(Mount(mount.path, app=Router([r for r, _ in area.routes],
                                                   default=default(area.adapter))))
        return [*hosts, *mounts, *(r for r, _ in self._root.routes)]


async def _nothing(scope: Scope, receive: Any, send: Any) -> None:  # pragma: no cover
    """The app behind the table's ``Host`` routes, which only check host names."""


__all__ = [
    "CTX_KEY",
    "FILES_PREFIX",
    "FILE_OPERATION",
    "RequestContext",
    "RouteTable",
    "context_of",
]
