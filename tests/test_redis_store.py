"""``--store redis://``: several ``serve`` processes on one Redis form one emulator
(a real ``redis-server``, :mod:`tests.redis_server`)."""

from __future__ import annotations

import httpx
import pytest

from emulator.core.state import check_store_url, open_store
from emulator.core.state.redis import RedisStore
from emulator.testing.server import free_port
from tests.redis_server import RedisServer, redis_server
from tests.test_state_store import _final, _png, _serve, _stop
from tests.vendors.drivers import DRIVERS

__all__ = ["redis_server"]


def test_redis_store_urls() -> None:
    assert check_store_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert isinstance(open_store("redis://127.0.0.1:6379/2"), RedisStore)
    for bad in ("redis://", "redis://h:port/0", "redis://h:6379/zero"):
        with pytest.raises(ValueError, match="store"):
            check_store_url(bad)


def test_jobs_and_files_survive_a_restart_on_redis(redis_server: RedisServer) -> None:
    """Every vendor's job, its result file and the balance outlive the process."""
    port = free_port()
    image = _png()
    proc = _serve(port, "--store", redis_server.url)
    kept = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for driver in DRIVERS:
                submitted = driver.submit(client, image)
                assert submitted.status_code == driver.submit_status, submitted.text
                url = driver.poll_url(client, submitted)
                body = _final(client, driver, url)
                data = client.get(driver.urls(body)[0]).content
                kept.append((driver, url, driver.urls(body), data))
    finally:
        _stop(proc)
    proc = _serve(port, "--store", redis_server.url)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for driver, url, urls, data in kept:
                again = driver.outcome(client, url)
                assert driver.status(again) == driver.status_words["succeeded"], again
                assert driver.urls(again) == urls
                assert client.get(urls[0]).content == data
    finally:
        _stop(proc)
