"""Full garbage-collection passes run while the server is idle, not under load."""

from __future__ import annotations

import asyncio
import time

import httpx

from emulator.app import create_app
from emulator.gcpolicy import IdleCollector, Traffic
from emulator.settings import Settings


def test_a_pass_is_due_only_when_idle_after_traffic_or_after_the_longest_interval() -> None:
    traffic = Traffic()
    collector = IdleCollector(traffic, idle_s=0.5, max_interval_s=300.0)
    now = time.monotonic()
    assert not collector.due(now)  # nothing served since the last pass
    traffic.served, traffic.last_end = 10, now
    assert not collector.due(now + 0.1)  # the last request ended 0.1 s ago
    assert collector.due(now + 0.6)
    traffic.in_flight = 3
    assert not collector.due(now + 0.6)  # requests in flight: never in the middle of them
    assert collector.due(now + 301)  # ... unless the longest interval has passed
    traffic.in_flight = 0
    collector.collect()
    assert collector.passes == 1 and collector.last_pause_s >= 0
    assert not collector.due(time.monotonic() + 1)  # nothing served since that pass


def test_the_middleware_counts_requests_and_the_collector_runs_when_idle() -> None:
    async def scenario() -> tuple[int, int, int]:
        app = create_app(Settings(engine="grabcut"))
        emulator = app.state.emulator
        emulator.idle_gc = IdleCollector(emulator.traffic, idle_s=0.05, check_s=0.02)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                for _ in range(3):
                    assert (await client.get("/_emulator/health")).status_code == 200
                    assert (await client.get("/v2/requests/status/x",
                                             headers={"Ocp-Apim-Subscription-Key": "k"})
                            ).status_code == 404
            for _ in range(100):
                if emulator.idle_gc.passes:
                    break
                await asyncio.sleep(0.02)
        return emulator.traffic.served, emulator.traffic.in_flight, emulator.idle_gc.passes

    served, in_flight, passes = asyncio.run(scenario())
    assert served == 6 and in_flight == 0
    assert passes >= 1
