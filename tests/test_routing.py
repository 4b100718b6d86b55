"""The route table resolves as Starlette's Router routes: on the emulator's own routes (every
path on every host) and on drawn requests against a route list with every kind of overlap."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, Router
from starlette.types import Receive, Scope, Send

from emulator.app import create_app
from emulator.context import CTX_KEY, RouteTable
from emulator.middleware import serve
from emulator.settings import Settings
from emulator.vendors.base import HostSpec, VendorAdapter


def _endpoint(name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(f"{name} {sorted(request.path_params.items())}")

    return endpoint


class _One(VendorAdapter):
    """Adapters of a drawn route list (not registered: no ``slug`` at class level)."""

    def __init__(self, slug: str, hosts: tuple[HostSpec, ...],
                 routes: dict[str, list[BaseRoute]]) -> None:
        self.slug = slug  # type: ignore[misc]
        self.hosts = hosts  # type: ignore[misc]
        self._routes = routes

    def routes(self) -> dict[str, list[BaseRoute]]:
        return self._routes

    def render_error(self, exc: Any) -> Response:
        return PlainTextResponse(f"{self.slug} {exc.status} {exc.message}",
                                 status_code=exc.status)


def _table() -> RouteTable:
    one = _One("one", (HostSpec("one.example", "", "api"), HostSpec("m.example", "/m", "m")), {
        "api": [Route("/a/{x}", _endpoint("post-a"), methods=["POST"]),
                Route("/a/{x}", _endpoint("get-a"), methods=["GET"]),
                Route("/{anything}/z", _endpoint("wild-z")),
                Route("/a/b", _endpoint("a-b")),
                Route("/c/", _endpoint("c-slash"))],
        "m": [Route("/a/{x}", _endpoint("mount-a"), methods=["GET"]),
              Route("/b", _endpoint("mount-b"), methods=["POST"]),
              Route("/{y}/b", _endpoint("mount-y-b"))],
    })
    two = _One("two", (HostSpec("two.example", "", "api"),), {
        "api": [Route("/", _endpoint("two-root")), Route("/m", _endpoint("m-exact"))]})
    files = Route("/_emulator/files/{vendor}/{name}", _endpoint("file"), methods=["GET"])
    control = [Route("/_emulator/x", _endpoint("control"), methods=["GET", "DELETE"])]
    return RouteTable([one, two], files, control)


def _not_found(adapter: VendorAdapter) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse(f"{adapter.slug} 404 no route for {scope['path']}",
                                status_code=404)(scope, receive, send)

    return app


class _TableApp:
    """The table and the boundary, as the emulator's middleware serves a request."""

    def __init__(self, table: RouteTable) -> None:
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = scope[CTX_KEY] = self.table.resolve(scope)
        await serve(ctx, scope, receive, send)


def _plain(table: RouteTable) -> Starlette:
    """Starlette's own routing over the same routes, answering the table's error shapes."""

    async def http_error(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("405", status_code=405)

    return Starlette(routes=table.starlette_routes(_not_found),
                     exception_handlers={405: http_error})


def _call(app: Any, method: str, path: str, host: str | None) -> tuple[int, bytes, str]:
    headers = [] if host is None else [(b"host", host.encode("latin-1"))]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    location = ""
    for name, value in sent[0].get("headers", []):
        if name == b"location":
            location = value.decode()
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), location


HOSTS = st.sampled_from([None, "one.example", "ONE.example:8000", "m.example", "two.example",
                         "127.0.0.1:8000", "[::1]:80", "one.example:bad", "other"])
SEGMENTS = st.sampled_from(["a", "b", "m", "c", "z", "1", "", "A", "_emulator", "x", "files"])
PATHS = st.lists(SEGMENTS, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "POST", "PUT"]), path=PATHS, host=HOSTS)
def test_same_answer_as_starlette(method: str, path: str, host: str | None) -> None:
    table = _table()
    mine = _call(_TableApp(table), method, path, host)
    theirs = _call(_plain(table), method, path, host)
    if theirs[0] == 404 and not theirs[1].startswith((b"one", b"two")):
        # the root's 404 is the control plane's own body
        assert mine[0] == 404 and mine[1].startswith(b'{"detail":"no route for ')
    elif theirs[0] == 405:
        # the same route matched with another method; its body is the vendor's (tests/vendors)
        assert mine[0] == 405
    else:
        assert mine == theirs


def test_same_route_as_starlette_on_the_emulators_routes(monkeypatch: Any) -> None:
    async def which(self: Route, scope: Any, receive: Any, send: Any) -> None:
        # the route picked (and its path parameters), instead of running its endpoint
        await PlainTextResponse(f"{id(self)} {scope.get('path_params')}")(scope, receive, send)

    app = create_app(Settings(engine="grabcut"))
    table: RouteTable = app.table
    plain = Router(table.starlette_routes(_not_found))
    monkeypatch.setattr(Route, "handle", which)
    hosts = [None, "127.0.0.1:8000", *(f"{h}:8000" for h in table.host_names())]
    paths = set()
    for route in plain.routes:
        for sub in getattr(getattr(route, "app", None), "routes", [route]):
            path = getattr(sub, "path", "/")
            prefix = route.path if hasattr(route, "path") and sub is not route else ""
            paths.add(prefix + path.replace("{", "").replace("}", ""))
    assert len(paths) > 20
    for host in hosts:
        for path in sorted(paths):
            for method in ("GET", "POST", "DELETE"):
                ctx = table.resolve(_scope(method, path, host))
                status, body, location = _call(plain, method, path, host)
                if ctx.route is not None:
                    assert body.split(b" ")[0] == str(id(ctx.route)).encode(), \
                        (method, path, host)
                elif ctx.partial is not None:
                    assert body.split(b" ")[0] == str(id(ctx.partial)).encode(), \
                        (method, path, host)
                elif ctx.redirect_path is not None:
                    assert status == 307 and location.endswith(ctx.redirect_path)
                else:
                    assert status == 404, (method, path, host, status, body)


def _scope(method: str, path: str, host: str | None) -> dict[str, Any]:
    headers = [] if host is None else [(b"host", host.encode("latin-1"))]
    return {"type": "http", "method": method, "path": path, "root_path": "",
            "headers": headers, "query_string": b""}
