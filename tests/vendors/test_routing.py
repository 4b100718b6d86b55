"""All five vendors on one port: no route shadows another, every host answers by its real name."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from emulator.app import create_app
from emulator.testing.server import EmulatorServer
from emulator.vendors.base import VendorAdapter
from tests.conftest import emulator_settings

APP = create_app(emulator_settings())
ADAPTERS: dict[str, VendorAdapter] = APP.state.emulator.adapters


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "abc-123", path)


def _scope(method: str, path: str, host: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "",
            "headers": [(b"host", host.encode())], "query_string": b""}


def _resolve(scope: dict[str, Any]) -> Route | None:
    """The endpoint route the app's route table picks for ``scope`` (the full match, else the
    partial one: a 405)."""
    ctx = APP.table.resolve(scope)
    found = ctx.route or ctx.partial
    assert found is None or isinstance(found, Route)
    return found


def _every_vendor_route() -> list[tuple[str, str, str, str, Route]]:
    """(vendor, host name, prefix, method, route) for every route of every vendor host."""
    out = []
    for adapter in ADAPTERS.values():
        per_host = adapter.routes()
        for spec in adapter.hosts:
            for route in per_host.get(spec.key, []):
                assert isinstance(route, Route)
                for method in sorted((route.methods or set()) - {"HEAD"}):
                    out.append((adapter.slug, spec.name, spec.prefix, method, route))
    return out


ROUTES = _every_vendor_route()


def test_five_vendors_and_their_hosts_are_registered() -> None:
    assert set(ADAPTERS) == {"apiframe", "pixazo", "gmicloud", "fal", "runflow"}
    assert APP.state.emulator.host_names() == sorted([
        "api.apiframe.ai", "gateway.pixazo.ai", "console.gmicloud.ai", "fal.run",
        "queue.fal.run", "rest.fal.ai", "v3.fal.media", "api.runflow.io"])


@pytest.mark.parametrize(("vendor", "host", "prefix", "method", "route"), ROUTES,
                         ids=[f"{v}-{m}-{p}{r.path}" for v, _, p, m, r in ROUTES])
def test_no_route_is_shadowed_on_the_one_port(vendor: str, host: str, prefix: str,
                                              method: str, route: Route) -> None:
    path = prefix + _concrete(route.path)
    found = _resolve(_scope(method, path, "127.0.0.1:8000"))
    assert found is not None, f"{method} {path} reaches nothing"
    assert (found.name, found.path) == (route.name, route.path), (
        f"{method} {path} of {vendor} is answered by {found.name} {found.path}")
    assert method in (found.methods or set())


@pytest.mark.parametrize(("vendor", "host", "prefix", "method", "route"), ROUTES,
                         ids=[f"{v}-{m}-{h}{r.path}" for v, h, _, m, r in ROUTES])
def test_every_route_answers_by_its_real_host_name(vendor: str, host: str, prefix: str,
                                                   method: str, route: Route) -> None:
    path = _concrete(route.path)
    found = _resolve(_scope(method, path, host))
    assert found is not None and (found.name, found.path) == (route.name, route.path)
    if prefix:
        # the prefixed form is the one port's, not the real host's
        assert _resolve(_scope(method, prefix + path, host)) is None


def test_prefixes_do_not_collide_with_root_routes() -> None:
    prefixes = {spec.prefix for a in ADAPTERS.values() for spec in a.hosts if spec.prefix}
    root_paths = [r.path for _, _, prefix, _, r in ROUTES if not prefix]
    assert prefixes == {"/queue", "/rest", "/cdn"}
    for path in root_paths:
        assert not any(path == p or path.startswith(p + "/") for p in prefixes), path
        assert not path.startswith("/_emulator")


@pytest.mark.parametrize(("host", "method", "path", "status", "key"), [
    ("api.apiframe.ai", "GET", "/v2/jobs/x", 401, "message"),
    ("gateway.pixazo.ai", "GET", "/v2/requests/status/x", 401, "message"),
    ("console.gmicloud.ai", "GET", "/api/v1/ie/requestqueue/apikey/requests", 401, "error"),
    ("fal.run", "POST", "/fal-ai/bria/background/remove", 401, "detail"),
    ("queue.fal.run", "GET", "/fal-ai/bria/requests/x/status", 401, "detail"),
    ("rest.fal.ai", "POST", "/storage/auth/token", 401, "detail"),
    ("v3.fal.media", "GET", "/files/tiger/nothing.png", 404, "detail"),
    ("api.runflow.io", "GET", "/v1/runs/x", 401, "detail"),
    ("api.runflow.io", "GET", "/no/such/route", 404, "detail"),
])
def test_real_host_names_reach_their_vendor(client: httpx.Client, host: str, method: str,
                                            path: str, status: int, key: str) -> None:
    response = client.request(method, path, headers={"Host": host})
    assert response.status_code == status, response.text
    assert response.json()[key]


def test_fal_urls_follow_real_host_names(emulator: EmulatorServer) -> None:
    """By Host header, fal hands out URLs on its other hosts; a job reads them in-process."""
    port = emulator.settings.port
    key = {"Authorization": "Key routing"}
    with httpx.Client(base_url=emulator.url, timeout=60) as client:
        token = client.post("/storage/auth/token", headers={**key, "Host": f"rest.fal.ai:{port}"},
                            json={}).json()
        assert token["base_url"] == f"http://v3.fal.media:{port}"
        photo = client.get("/_emulator/samples/chelsea.jpg").content
        upload = client.post("/files/upload", content=photo, headers={
            "Host": f"v3.fal.media:{port}", "Authorization": f"Bearer {token['token']}",
            "Content-Type": "image/jpeg", "X-Fal-File-Name": "cat.jpg"}).json()
        assert upload["access_url"].startswith(f"http://v3.fal.media:{port}/files/")
        submitted = client.post("/fal-ai/bria/background/remove",
                                headers={**key, "Host": f"queue.fal.run:{port}"},
                                json={"image_url": upload["access_url"]}).json()
        assert submitted["status_url"].startswith(f"http://queue.fal.run:{port}/fal-ai/bria/")
        status = client.get(f"/fal-ai/bria/requests/{submitted['request_id']}/status",
                            headers={**key, "Host": f"queue.fal.run:{port}"}).json()
        assert status["status"] == "COMPLETED" and "error" not in status, status
        result = client.get(f"/fal-ai/bria/requests/{submitted['request_id']}",
                            headers={**key, "Host": f"queue.fal.run:{port}"}).json()
        url = result["image"]["url"]
        assert url.startswith(f"http://v3.fal.media:{port}/files/")
        path = url.split(f":{port}", 1)[1]
        served = client.get(path, headers={"Host": "v3.fal.media"})
        assert served.status_code == 200 and served.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.get("/cdn" + path).content == served.content
