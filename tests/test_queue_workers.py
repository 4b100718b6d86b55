"""``serve --store redis://... --matte-pool redis``: image work done by separate
``rmbg-emulator worker`` processes that take it from Redis (a real ``redis-server``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import redis

from emulator.cli import main
from emulator.core.jobs.queue import QUEUE_NAME
from emulator.testing.server import free_port
from tests.conftest import REPO, decode_png, serve_process
from tests.procs import children
from tests.redis_server import RedisServer, redis_server
from tests.test_state_store import _png, _stop

__all__ = ["redis_server"]

SUBMIT = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"
HEADERS = {"Ocp-Apim-Subscription-Key": "queue-key"}


def _worker(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "worker", "--store", url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})


def _final(client: httpx.Client, request_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, object] = client.get(f"/v2/requests/status/{request_id}",
                                             headers=HEADERS).json()
        if body["status"] in ("COMPLETED", "FAILED", "ERROR"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {request_id} did not end: {body}")


def test_a_worker_process_does_the_image_work(redis_server: RedisServer) -> None:
    """Jobs on the server end with cut-outs rendered by the worker (the server starts no
    process of its own); a bad input gets the same vendor failure as when rendered here."""
    port = free_port()
    worker = _worker(redis_server.url)
    proc = serve_process(port, "--store", redis_server.url, "--matte-pool", "redis",
                         "--progression", "time")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            ids = [client.post(SUBMIT, headers=HEADERS, json={"image_url": _png()}
                               ).json()["request_id"] for _ in range(3)]
            bad = client.post(SUBMIT, headers=HEADERS, json={
                "image_url": "data:image/png;base64,bm90IGFuIGltYWdl"}).json()["request_id"]
            for request_id in ids:
                body = _final(client, request_id)
                assert body["status"] == "COMPLETED", body
                url = body["output"]["media_url"][0]  # type: ignore[index]
                png = decode_png(client.get(url).content)
                assert png.mode == "RGBA" and png.size == (24, 16)
            failed = _final(client, bad)
            assert failed["status"] == "FAILED", failed
            assert "not an image" in str(failed["error"])
            assert children(proc.pid) == []  # no matte worker process in the server
    finally:
        _stop(proc)
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    assert "image work from " + redis_server.url in out


def test_with_no_worker_the_job_fails_saying_so_and_leaves_no_task(
        redis_server: RedisServer) -> None:
    port = free_port()
    proc = serve_process(port, "--store", redis_server.url, "--matte-pool", "redis",
                         "--progression", "time", env={"RMBG_EMULATOR_WORKER_WAIT_S": "1"})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            request_id = client.post(SUBMIT, headers=HEADERS, json={"image_url": _png()}
                                     ).json()["request_id"]
            body = _final(client, request_id)
    finally:
        _stop(proc)
    assert body["status"] == "FAILED", body
    assert "rmbg-emulator worker" in str(body["error"]), body
    queued = redis.Redis.from_url(redis_server.url).llen(f"rq:queue:{QUEUE_NAME}")
    assert queued == 0  # a worker started later does not render it for nobody


def test_the_redis_matte_pool_needs_the_redis_store(capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    assert main(["serve", "--engine", "grabcut", "--port", str(free_port()),
                 "--matte-pool", "redis"]) == 2
    assert "--store redis://" in capsys.readouterr().err
    assert main(["worker", "--store", "memory"]) == 2
    assert "Redis store" in capsys.readouterr().err
