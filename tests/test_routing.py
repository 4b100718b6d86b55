"""DispatchRouter answers exactly as Starlette's Router, on the emulator's own route list and
on drawn requests against a route list with every kind of overlap."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Host, Mount, Route, Router

from emulator.app import create_app
from emulator.routing import DispatchRouter, first_segment, request_host
from emulator.settings import Settings


def _endpoint(name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(f"{name} {sorted(request.path_params.items())}")

    return endpoint


def _routes(router: type[Router] = Router) -> list[BaseRoute]:
    inner = router([Route("/a/{x}", _endpoint("host-a")), Route("/", _endpoint("host-root"))])
    mounted = router([Route("/a/{x}", _endpoint("mount-a"), methods=["GET"]),
                      Route("/b", _endpoint("mount-b"), methods=["POST"]),
                      Route("/{y}/b", _endpoint("mount-y-b"))])
    return [
        Host("one.example", app=inner),
        Host("{sub}.two.example", app=inner),
        Mount("/m", app=mounted),
        Route("/a/{x}", _endpoint("post-a"), methods=["POST"]),
        Route("/a/{x}", _endpoint("get-a"), methods=["GET"]),
        Route("/{anything}/z", _endpoint("wild-z")),
        Route("/a/b", _endpoint("a-b")),
        Route("/m", _endpoint("m-exact")),
        Route("/c/", _endpoint("c-slash")),
    ]


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


def test_helpers() -> None:
    assert first_segment("/v2/jobs/{id}") == "v2"
    assert first_segment("/{name}") is None
    assert first_segment("/") is None
    assert first_segment("/v{n}/x") is None
    assert request_host({"headers": [(b"host", b"Queue.Fal.Run:8000")]}) == "queue.fal.run"
    assert request_host({"headers": [(b"host", b"[::1]:80")]}) is None
    assert request_host({"headers": []}) is None


def test_candidates_skip_what_cannot_match() -> None:
    router = DispatchRouter(_routes())
    scope = {"type": "http", "path": "/a/1", "headers": [(b"host", b"127.0.0.1:80")]}
    names = [getattr(r, "name", None) or getattr(r, "host", "") for r in
             router.candidates(scope)]
    # the literal Host route and the routes under /m, /c and /m are ruled out
    assert "one.example" not in names
    assert names == ["{sub}.two.example", "endpoint", "endpoint", "endpoint", "endpoint"]
    scope["headers"] = [(b"host", b"one.example")]
    assert router.candidates(scope)[0] is router.routes[0]


def test_routes_added_later_are_seen() -> None:
    router = DispatchRouter(_routes())
    assert _call(router, "GET", "/late", None)[0] == 404
    router.routes.append(Route("/late", _endpoint("late")))
    assert _call(router, "GET", "/late", None)[1].startswith(b"late")


HOSTS = st.sampled_from([None, "one.example", "ONE.example:8000", "x.two.example",
                         "127.0.0.1:8000", "[::1]:80", "one.example:bad", "other"])
SEGMENTS = st.sampled_from(["a", "b", "m", "c", "z", "1", "", "A"])
PATHS = st.lists(SEGMENTS, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "POST", "PUT"]), path=PATHS, host=HOSTS)
def test_same_answer_as_starlette(method: str, path: str, host: str | None) -> None:
    assert _call(DispatchRouter(_routes(DispatchRouter)), method, path, host) == _call(
        Router(_routes(Router)), method, path, host)


def test_same_route_as_starlette_on_the_emulators_routes(monkeypatch: Any) -> None:
    async def which(self: Route, scope: Any, receive: Any, send: Any) -> None:
        # the route picked (and its path parameters), instead of running its endpoint
        await PlainTextResponse(f"{id(self)} {scope.get('path_params')}")(scope, receive, send)

    monkeypatch.setattr(Route, "handle", which)
    app = create_app(Settings(engine="grabcut"))
    routes = app.router.routes
    assert isinstance(app.router, DispatchRouter)
    plain, dispatch = Router(routes), DispatchRouter(routes)
    hosts = [None, "127.0.0.1:8000", *(f"{h}:8000" for h in app.state.emulator.host_names())]
    paths = set()
    for route in routes:
        for sub in getattr(getattr(route, "app", None), "routes", [route]):
            path = getattr(sub, "path", "/")
            prefix = route.path if isinstance(route, Mount) else ""
            paths.add(prefix + path.replace("{", "").replace("}", ""))
    assert len(paths) > 20
    for host in hosts:
        for path in sorted(paths):
            for method in ("GET", "POST", "DELETE"):
                assert _call(dispatch, method, path, host) == _call(plain, method, path, host), \
                    (method, path, host)
