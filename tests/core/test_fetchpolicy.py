"""Input fetches: the address policy (no SSRF), redirects, the overall deadline.

Refused addresses are refused before any connection: the fetches that are refused here go
through an ``httpx.MockTransport`` that records every request it is given (none reaches a
network), and the real sockets used are on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from emulator.core.fetchpolicy import FetchPolicy, IPAddress, blocked_kind
from emulator.core.inputs import MAX_REDIRECTS, fetch_url
from emulator.errors import InputImageError
from tests.fetch_origin import PNG, FetchOrigin


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 (a port of its own)."""
    with FetchOrigin() as server:
        yield server.url


def _recording(answer: httpx.Response | None = None
               ) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer if answer is not None else httpx.Response(200, content=PNG)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), seen


def _fetch(url: str, client: httpx.AsyncClient, policy: FetchPolicy | None = None,
           *, deadline_s: float = 10.0) -> bytes:
    async def run() -> bytes:
        async with client:
            return await fetch_url(url, client, policy=policy or FetchPolicy(
                own_host="127.0.0.1", own_port=8000), max_bytes=10**6, timeout_s=5.0,
                deadline_s=deadline_s)
    return asyncio.run(run())


@pytest.mark.parametrize(("url", "address"), [
    ("http://10.0.0.1/x.png", "10.0.0.1"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254"),
    ("http://[::1]:9/x.png", "::1"),
    ("http://0.0.0.0:9/x.png", "0.0.0.0"),
    ("http://127.0.0.2:9/x.png", "127.0.0.2"),
    ("http://192.168.1.1/x.png", "192.168.1.1"),
    ("http://172.16.0.1/x.png", "172.16.0.1"),
    ("http://100.64.0.1/x.png", "100.64.0.1"),
    ("http://[::ffff:127.0.0.2]/x.png", "::ffff:127.0.0.2"),
    ("http://[::ffff:a9fe:a9fe]/x.png", "::ffff:a9fe:a9fe"),
])
def test_refused_addresses_are_refused_before_any_connection(url: str, address: str) -> None:
    client, seen = _recording()
    with pytest.raises(InputImageError, match="refused") as caught:
        _fetch(url, client)
    assert address in caught.value.message and "--allow-fetch" in caught.value.message
    assert caught.value.code == "fetch_failed"
    assert seen == []


def test_the_loopback_host_the_emulator_serves_on_stays_fetchable(origin: str) -> None:
    assert _fetch(origin + "/image.png", httpx.AsyncClient()) == PNG
    # localhost resolves to it too
    port = origin.rsplit(":", 1)[1]
    assert _fetch(f"http://localhost:{port}/image.png", httpx.AsyncClient()) == PNG


def test_the_emulators_own_port_is_never_fetched() -> None:
    client, seen = _recording()
    with pytest.raises(InputImageError, match="the emulator itself"):
        _fetch("http://127.0.0.1:8000/_emulator/jobs", client)
    assert seen == []


def test_a_redirect_to_a_refused_address_is_refused(origin: str) -> None:
    client, seen = _recording(httpx.Response(
        302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}))
    with pytest.raises(InputImageError, match=r"169\.254\.169\.254 is link-local"):
        _fetch("http://93.184.216.34/x.png", client)
    assert [str(r.url) for r in seen] == ["http://93.184.216.34/x.png"]
    # and through a real server on the allowed loopback host
    with pytest.raises(InputImageError, match=r"10\.0\.0\.1 is private"):
        _fetch(origin + "/redirect?to=http://10.0.0.1/x.png", httpx.AsyncClient())


def test_at_most_five_redirects() -> None:
    client, seen = _recording(httpx.Response(302, headers={"Location": "/again"}))
    with pytest.raises(InputImageError, match=f"more than {MAX_REDIRECTS} redirects"):
        _fetch("http://93.184.216.34/x.png", client)
    assert len(seen) == MAX_REDIRECTS + 1


def test_dns_rebinding_is_checked_on_the_resolved_address(origin: str) -> None:
    answers = {"rebind.test": "10.0.0.5", "images.test": "127.0.0.1"}

    async def resolver(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(answers[host])]

    policy = FetchPolicy(own_host="127.0.0.1", own_port=8000, resolver=resolver)
    client, seen = _recording()
    with pytest.raises(InputImageError, match=r"10\.0\.0\.5 is private"):
        _fetch("http://rebind.test/x.png", client, policy)
    assert seen == []
    # the connection goes to the address checked, under the original Host header
    port = origin.rsplit(":", 1)[1]
    FetchOrigin.hosts.clear()
    assert _fetch(f"http://images.test:{port}/image.png", httpx.AsyncClient(), policy) == PNG
    assert FetchOrigin.hosts == [f"images.test:{port}"]


def test_allow_fetch_widens_the_policy() -> None:
    client, seen = _recording()
    assert _fetch("http://10.0.0.1/x.png", client,
                  FetchPolicy(["10.0.0.0/8"], own_host="127.0.0.1")) == PNG
    assert [r.url.host for r in seen] == ["10.0.0.1"]
    cidr = FetchPolicy(["10.0.0.0/8"])
    ip = ipaddress.ip_address
    assert cidr.refusal("a", ip("10.9.9.9"), 80) is None
    assert cidr.refusal("a", ip("192.168.0.1"), 80) is not None
    named = FetchPolicy(["images.internal"])
    assert named.refusal("images.internal", ip("10.1.1.1"), 80) is None
    assert named.refusal("other.internal", ip("10.1.1.1"), 80) is not None
    anything = FetchPolicy(["any"], own_host="127.0.0.1", own_port=8000)
    assert anything.refusal("a", ip("169.254.169.254"), 80) is None
    assert anything.refusal("a", ip("127.0.0.1"), 8000) is not None  # still never itself
    with pytest.raises(ValueError, match="bad host!"):
        FetchPolicy(["bad host!"])


def test_serving_on_all_interfaces_allows_no_loopback_by_default() -> None:
    policy = FetchPolicy(own_host="0.0.0.0", own_port=8000)
    assert policy.refusal("a", ipaddress.ip_address("127.0.0.1"), 9) is not None
    assert "emulator itself" in (policy.refusal(
        "a", ipaddress.ip_address("127.0.0.1"), 8000) or "")


@pytest.mark.parametrize(("address", "kind"), [
    ("8.8.8.8", None), ("2606:4700:4700::1111", None), ("224.0.0.1", "multicast"),
    ("fe80::1", "link-local"), ("fc00::1", "private"), ("::", "unspecified"),
    ("2002:7f00:1::", "loopback (as 2002:7f00:1::)"), ("64:ff9b::a00:1", "private (as"),
])
def test_blocked_kinds(address: str, kind: str | None) -> None:
    found = blocked_kind(ipaddress.ip_address(address))
    assert found == kind if kind is None else (found or "").startswith(kind)


def test_a_trickling_origin_meets_the_overall_deadline(origin: str) -> None:
    started = time.monotonic()
    with pytest.raises(InputImageError, match="deadline of 1 s") as caught:
        _fetch(origin + "/trickle", httpx.AsyncClient(), deadline_s=1.0)
    assert time.monotonic() - started < 10  # does not hang (each read alone is quick)
    assert caught.value.code == "fetch_failed"


def test_an_unresolvable_name_is_named() -> None:
    async def resolver(host: str, port: int) -> list[IPAddress]:
        raise socket.gaierror("Name or service not known")

    client, seen = _recording()
    with pytest.raises(InputImageError, match="does not resolve"):
        _fetch("http://nowhere.test/x.png", client,
               FetchPolicy(own_host="127.0.0.1", resolver=resolver))
    assert seen == []
