"""Webhook deliveries go through the same address policy as input fetches: a callback URL is
a URL the client gave, so a private, link-local or metadata address is refused before any
connection, and never retried; allowed addresses get the request at the checked IP."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest

from emulator.core.clock import Clock
from emulator.core.fetchpolicy import FetchPolicy, IPAddress, Resolver
from emulator.core.webhooks import Delivery, RetryPolicy, WebhookMessage, WebhookOutbox


def _resolver(answers: dict[str, str]) -> Resolver:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(answers.get(host, host))]

    return resolve


async def _deliver(url: str, policy: FetchPolicy) -> tuple[list[httpx.Request], Delivery]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    outbox = WebhookOutbox(Clock())
    outbox.policy = policy
    await outbox.start()
    assert outbox._client is not None
    await outbox._client.aclose()
    outbox._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    message = WebhookMessage(url=url, body=b"{}", headers={},
                             policy=RetryPolicy(delays_s=(0.01, 0.01)))
    [delivery] = outbox.enqueue(message, job_id="j1", vendor="pixazo", api_key="k")
    for _ in range(100):
        if delivery.state != "pending":
            break
        await asyncio.sleep(0.02)
    await outbox.stop()
    return seen, delivery


@pytest.mark.parametrize("url", [
    "http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/", "http://rebind.example/hook",
])
def test_a_refused_callback_address_is_never_contacted_nor_retried(url: str) -> None:
    policy = FetchPolicy(own_host="127.0.0.1", own_port=8000,
                         resolver=_resolver({"rebind.example": "10.0.0.5"}))
    seen, delivery = asyncio.run(_deliver(url, policy))
    assert seen == []
    assert delivery.state == "failed"
    [attempt] = delivery.attempts
    assert attempt.status is None and attempt.error is not None
    assert "delivering the webhook was refused" in attempt.error


def test_an_allowed_callback_goes_to_the_checked_address_with_its_host_name() -> None:
    policy = FetchPolicy(own_host="127.0.0.1", own_port=8000,
                         resolver=_resolver({"hooks.example": "93.184.216.34"}))
    seen, delivery = asyncio.run(_deliver("http://hooks.example:8080/cb", policy))
    [request] = seen
    assert request.url.host == "93.184.216.34" and request.url.port == 8080
    assert request.headers["host"] == "hooks.example:8080"
    assert delivery.state == "delivered"


def test_allow_fetch_widens_the_callback_policy_too() -> None:
    policy = FetchPolicy(["10.0.0.0/8"], own_host="127.0.0.1", own_port=8000)
    seen, delivery = asyncio.run(_deliver("http://10.1.2.3/hook", policy))
    assert [r.url.host for r in seen] == ["10.1.2.3"]
    assert delivery.state == "delivered"


def test_the_emulator_gives_its_outbox_the_fetch_policy() -> None:
    from emulator.app import Emulator
    from emulator.settings import Settings

    emulator = Emulator(Settings())
    assert emulator.webhooks.policy is emulator.jobs.fetch_policy
