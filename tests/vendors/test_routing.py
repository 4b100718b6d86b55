"""Every vendor on one port: no route shadows another, every host answers by its real name.

Vendors, hosts and prefixes come from the registry and the contracts, never from a list here,
so a new vendor (one module plus one contract) is checked with no edit;
``tests/test_sixth_vendor.py`` runs the ``check_*`` functions on a throwaway one."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from emulator import contracts
from emulator.app import EmulatorApp, create_app
from emulator.testing.server import EmulatorServer
from emulator.vendors import load_all
from emulator.vendors.base import VendorAdapter
from tests.conftest import emulator_settings
from tests.vendors.drivers import DRIVERS

APP = create_app(emulator_settings())
ADAPTERS: dict[str, VendorAdapter] = APP.state.emulator.adapters


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "abc-123", path)


def _scope(method: str, path: str, host: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "",
            "headers": [(b"host", host.encode())], "query_string": b""}


def _resolve(scope: dict[str, Any], app: EmulatorApp = APP) -> Route | None:
    """The endpoint route the app's route table picks for ``scope`` (the full match, else the
    partial one: a 405)."""
    ctx = app.table.resolve(scope)
    found = ctx.route or ctx.partial
    assert found is None or isinstance(found, Route)
    return found


def vendor_routes(adapters: list[VendorAdapter]) -> list[tuple[str, str, str, str, Route]]:
    """(vendor, host name, prefix, method, route) for every route of every host of
    ``adapters``."""
    out = []
    for adapter in adapters:
        per_host = adapter.routes()
        for spec in adapter.hosts:
            for route in per_host.get(spec.key, []):
                assert isinstance(route, Route)
                for method in sorted((route.methods or set()) - {"HEAD"}):
                    out.append((adapter.slug, spec.name, spec.prefix, method, route))
    return out


ROUTES = vendor_routes(list(ADAPTERS.values()))


def check_route(app: EmulatorApp, vendor: str, host: str, prefix: str, method: str,
                route: Route) -> None:
    """``route`` of ``vendor`` is reached on the one port (its host's ``prefix`` + path), and
    by its real ``host`` name without the prefix; nothing else answers either."""
    path = prefix + _concrete(route.path)
    found = _resolve(_scope(method, path, "127.0.0.1:8000"), app)
    assert found is not None, f"{method} {path} reaches nothing"
    assert (found.name, found.path) == (route.name, route.path), (
        f"{method} {path} of {vendor} is answered by {found.name} {found.path}")
    assert method in (found.methods or set())
    path = _concrete(route.path)
    found = _resolve(_scope(method, path, host), app)
    assert found is not None and (found.name, found.path) == (route.name, route.path)
    if prefix:
        # the prefixed form is the one port's, not the real host's
        assert _resolve(_scope(method, prefix + path, host), app) is None


def check_hosts(app: EmulatorApp, slug: str) -> None:
    """Vendor ``slug`` is served, its real host names are its contract's, each names it
    alone, and its prefixes on the one port are its contract's ``x-emulator`` servers'."""
    emulator = app.state.emulator
    adapter = emulator.adapters[slug]
    contract = contracts.for_vendor(slug)
    assert contract is not None, f"{slug} has no contract"
    names = {spec.name for spec in adapter.hosts}
    assert names == contract.real_hosts()
    assert names <= set(emulator.host_names())
    others = {spec.name for a in emulator.adapters.values() if a is not adapter
              for spec in a.hosts}
    assert not names & others, f"{slug} shares a host name: {sorted(names & others)}"
    prefixes = {spec.prefix for spec in adapter.hosts}
    assert len(prefixes) == len(adapter.hosts), f"{slug}: two hosts share a prefix"
    # the contract's x-emulator server paths are a host's prefix, or below it (fal's
    # "/queue/fal-ai/bria"); every prefix serves some operation
    served = {p for op in contract.operations.values() for p in op.prefixes}

    def under(path: str, prefix: str) -> bool:
        return path == prefix or (prefix != "" and path.startswith(prefix + "/"))

    assert all(any(under(p, prefix) for prefix in prefixes) for p in served), served
    assert all(any(under(p, prefix) for p in served) for prefix in prefixes), prefixes


def check_prefixes(app: EmulatorApp) -> None:
    """No host prefix collides with another vendor's, with a root route, or with the
    control plane."""
    adapters = app.state.emulator.adapters.values()
    prefixes = [spec.prefix for a in adapters for spec in a.hosts if spec.prefix]
    assert len(prefixes) == len(set(prefixes)), prefixes
    root_paths = [r.path for a in adapters for spec in a.hosts if not spec.prefix
                  for r in a.routes().get(spec.key, []) if isinstance(r, Route)]
    for prefix in prefixes:
        assert not prefix.startswith("/_emulator"), prefix
    for path in root_paths:
        assert not any(path == p or path.startswith(p + "/") for p in prefixes), path
        assert not path.startswith("/_emulator")


def test_every_registered_vendor_and_host_is_served() -> None:
    assert set(ADAPTERS) == set(load_all())
    assert APP.state.emulator.host_names() == sorted(
        spec.name for cls in load_all().values() for spec in cls.hosts)


def test_every_registered_vendor_has_a_driver() -> None:
    """The end-to-end, fault and key-scoping tests run once per driver: a vendor without one
    would be skipped silently, so it fails here instead."""
    slugs = [d.slug for d in DRIVERS]
    assert len(slugs) == len(set(slugs))
    missing = sorted(set(load_all()) - set(slugs))
    assert not missing, f"no driver in tests/vendors/drivers.py for {missing}"
    assert set(slugs) <= set(load_all())


@pytest.mark.parametrize("slug", sorted(ADAPTERS))
def test_hosts_and_prefixes_are_the_contracts(slug: str) -> None:
    check_hosts(APP, slug)


@pytest.mark.parametrize(("vendor", "host", "prefix", "method", "route"), ROUTES,
                         ids=[f"{v}-{m}-{h}{p}{r.path}" for v, h, p, m, r in ROUTES])
def test_every_route_answers_on_the_one_port_and_by_its_real_host_name(
        vendor: str, host: str, prefix: str, method: str, route: Route) -> None:
    check_route(APP, vendor, host, prefix, method, route)


def test_prefixes_do_not_collide_with_root_routes() -> None:
    check_prefixes(APP)


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
