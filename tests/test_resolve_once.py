"""Resolve once, one error boundary: a request is matched against the routes once, its API key
is read once, and error answers are built in one module."""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from starlette.routing import BaseRoute, Host, Match, Mount, Route

from emulator.app import create_app
from emulator.context import RouteTable
from emulator.settings import Settings
from emulator.vendors import load_all
from emulator.vendors.base import VendorAdapter

PACKAGE = Path(__file__).resolve().parents[1] / "emulator"
KEY = "once-key"


def _image_uri() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 40, 40)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture()
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts of ``RouteTable.resolve``, every route's ``matches`` and every adapter's
    ``api_key`` calls."""
    calls: Counter[str] = Counter()
    resolve = RouteTable.resolve

    def counting_resolve(self: RouteTable, scope: Any) -> Any:
        calls["resolve"] += 1
        return resolve(self, scope)

    monkeypatch.setattr(RouteTable, "resolve", counting_resolve)
    for cls in (Route, Host, Mount, BaseRoute):
        original = cls.matches

        def counting_matches(self: Any, scope: Any, _original: Any = original) -> Any:
            calls["matches"] += 1
            calls[f"matches {id(self)}"] += 1
            return _original(self, scope)

        monkeypatch.setattr(cls, "matches", counting_matches)
    for adapter_cls in (VendorAdapter, *load_all().values()):  # the base reads key_header
        if "api_key" in adapter_cls.__dict__:
            key_of = adapter_cls.__dict__["api_key"].__wrapped__

            def counting_key(self: Any, request: Any, _key_of: Any = key_of) -> str:
                calls["api_key"] += 1
                result: str = _key_of(self, request)
                return result

            # re-wrapped by the same decorator the class applies (context cache)
            from emulator.vendors.base import _noting_key

            monkeypatch.setattr(adapter_cls, "api_key", _noting_key(counting_key))
    return calls


def test_a_status_poll_and_a_faulted_submit_resolve_once(counted: Counter[str]) -> None:
    asyncio.run(_poll_and_submit(counted))


def _each_route_matched_at_most_once(counted: Counter[str]) -> bool:
    per_route = [n for name, n in counted.items() if name.startswith("matches ")]
    return max(per_route, default=0) <= 1


async def _poll_and_submit(counted: Counter[str]) -> None:
    app = create_app(Settings(progression="immediate", engine="grabcut"))
    emulator = app.state.emulator
    await emulator.jobs.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            pixazo = {"Ocp-Apim-Subscription-Key": KEY}
            submitted = await c.post("/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request",
                                     json={"image_url": _image_uri()}, headers=pixazo)
            assert submitted.status_code == 202, submitted.text
            poll = "/v2/requests/status/" + submitted.json()["request_id"]

            counted.clear()
            answer = await c.get(poll, headers=pixazo)
            assert answer.status_code == 200, answer.text
            assert counted["resolve"] == 1
            assert _each_route_matched_at_most_once(counted)
            assert counted["api_key"] == 1

            counted.clear()
            answer = await c.post("/queue/fal-ai/bria/background/remove",
                                  json={"image_url": _image_uri()},
                                  headers={"Authorization": f"Key {KEY}",
                                           "X-Emulator-Fault": "latency=0.001"})
            assert answer.status_code == 200, answer.text
            assert counted["resolve"] == 1
            assert _each_route_matched_at_most_once(counted)
            assert counted["api_key"] == 1  # read for the fault key check, then remembered

            entries = (await c.get("/_emulator/journal")).json()["entries"]
            assert [(e["vendor"], e["operation"], e["api_key"]) for e in entries[-2:]] == [
                ("pixazo", "status", KEY), ("fal", "submit.remove", KEY)]
    finally:
        await emulator.jobs.stop()


def test_an_exception_is_the_vendors_500_and_is_journaled(monkeypatch: Any) -> None:
    asyncio.run(_exceptions(monkeypatch))


async def _exceptions(monkeypatch: Any) -> None:
    app = create_app(Settings(progression="immediate", engine="grabcut"))
    emulator = app.state.emulator

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(emulator.jobs, "find", broken)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
        answer = await c.get("/v2/requests/status/x", headers={"Ocp-Apim-Subscription-Key": KEY})
        assert answer.status_code == 500
        assert "internal error in the emulator" in answer.text
        monkeypatch.setattr(emulator.guard, "violations", broken)
        control = await c.get("/_emulator/violations")
        assert control.status_code == 500
        assert control.json() == {"detail": "internal error in the emulator"}
        entries = (await c.get("/_emulator/journal")).json()["entries"]
        assert [(e["vendor"], e["status"]) for e in entries] == [("pixazo", 500)]


def _calls(pattern: str) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            if re.search(pattern, line) and not line.lstrip().startswith(("#", "def ")):
                found.append(f"{path.relative_to(PACKAGE)}:{number}")
    return found


def test_error_answers_are_built_in_one_place() -> None:
    # every {"detail": ...} error body of the control plane, and every vendor error body
    # asked of an adapter, is built in emulator/middleware.py (the one error boundary)
    detail = [f for f in _calls(r"""JSONResponse\(\{["']detail["']""")]
    assert detail and all(f.startswith("middleware.py:") for f in detail), detail
    asked = [f for f in _calls(r"\.error_response\(") if not f.startswith("middleware.py:")]
    assert asked == []
    assert _calls(r"exception_handlers") == []  # no Starlette handler renders errors
    assert _calls(r"starlette\._utils|from starlette\._") == []


def _prefixed_table() -> RouteTable:
    app = create_app(Settings(progression="immediate", engine="grabcut"))
    table: RouteTable = app.table
    return table


@pytest.mark.parametrize(("path", "root_path"), [
    ("/queue/fal-ai/bria/requests/abc/status", ""),
    ("/queue/fal-ai/bria/background/remove", ""),
    ("/api/queue/fal-ai/bria/requests/abc/status", "/api"),
    ("/queue/", ""),
    ("/rest/storage/auth/token", ""),
    ("/queue/fal-ai/bria/requests/a\nb/status", ""),
])
def test_a_prefixed_path_resolves_as_starlettes_mount_would(path: str, root_path: str) -> None:
    """The table matches a host prefix (fal's ``/queue``) as literal text; the child scope
    (path parameters, root paths) and route are those Starlette's ``Mount`` gives."""
    table = _prefixed_table()
    request = {"type": "http", "method": "GET", "path": path, "root_path": root_path,
               "headers": [(b"host", b"127.0.0.1:8000")], "query_string": b""}
    ctx = table.resolve(request)
    prefix = "/" + path[len(root_path):].split("/")[1]
    match, child = Mount(prefix, routes=[]).matches(request)
    if "\n" in path:
        assert match is not Match.FULL and ctx.prefix == ""  # the root area answers it
        return
    assert match is Match.FULL
    assert ctx.prefix == prefix
    for name in ("root_path", "app_root_path"):
        assert ctx.child_scope[name] == child[name], name


def test_a_prefixed_status_poll_needs_no_mount_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    """fal's queue poll (``/queue/...``) is resolved without Starlette's ``Mount.matches``
    (its regex and child-scope building were 13 % of the poll's CPU, docs/PERFORMANCE.md)."""
    table = _prefixed_table()

    def refuse(self: Mount, scope: Any) -> Any:
        raise AssertionError("Mount.matches called")

    monkeypatch.setattr(Mount, "matches", refuse)
    ctx = table.resolve({"type": "http", "method": "GET", "root_path": "",
                         "path": "/queue/fal-ai/bria/requests/abc/status", "query_string": b"",
                         "headers": [(b"host", b"127.0.0.1:8000")]})
    assert (ctx.vendor, ctx.operation, ctx.path_params) == ("fal", "status",
                                                            {"request_id": "abc"})
    assert ctx.child_scope["root_path"] == "/queue"
