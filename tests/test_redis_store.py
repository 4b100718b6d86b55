"""``--store redis://``: several ``serve`` processes on one Redis form one emulator
(a real ``redis-server``, :mod:`tests.redis_server`)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import redis

from emulator.core.state import check_store_url, open_store
from emulator.core.state.redis import RedisStore
from emulator.testing.server import free_port
from tests.procs import children
from tests.redis_server import RedisServer, redis_server
from tests.test_state_store import _final, _png, _serve, _stop
from tests.vendors.drivers import DRIVERS, Driver

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


def _on(url: str, port: int) -> str:
    """``url`` (absolute or a path) at ``127.0.0.1:port``."""
    parts = httpx.URL(url)
    return str(parts.copy_with(scheme="http", host="127.0.0.1", port=port)) if (
        parts.is_absolute_url) else f"http://127.0.0.1:{port}{url}"


def test_a_job_submitted_on_one_process_is_polled_and_downloaded_on_another(
        redis_server: RedisServer) -> None:
    """Two ``serve`` processes on one Redis, ``polls:2``: for every vendor, a job submitted
    on A moves one step per status read whichever process answers it (the count is
    shared: A, then B, shows it final), and its result file downloads from B."""
    a_port, b_port = free_port(), free_port()
    image = _png()
    extra = ("--store", redis_server.url, "--progression", "polls:2")
    a, b = _serve(a_port, *extra), _serve(b_port, *extra)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{a_port}", timeout=30) as on_a, \
                httpx.Client(base_url=f"http://127.0.0.1:{b_port}", timeout=30) as on_b:
            for driver in DRIVERS:
                submitted = driver.submit(on_a, image)
                assert submitted.status_code == driver.submit_status, submitted.text
                url = driver.poll_url(on_a, submitted)
                first = driver.outcome(on_a, _on(url, a_port))
                assert driver.status(first) != driver.status_words["succeeded"], first
                body = driver.outcome(on_b, _on(url, b_port))
                for _ in range(100):  # the work itself may take a moment on A
                    if driver.status(body) == driver.status_words["succeeded"]:
                        break
                    body = driver.outcome(on_b, _on(url, b_port))
                assert driver.status(body) == driver.status_words["succeeded"], (
                    driver.slug, body)
                (out,) = driver.urls(body)
                from_a = on_a.get(_on(out, a_port))
                from_b = on_b.get(_on(out, b_port))
                assert from_b.status_code == 200, (driver.slug, from_b.text)
                assert from_b.content == from_a.content
                assert from_b.content[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        _stop(a)
        _stop(b)


def test_a_job_whose_process_is_killed_mid_work_ends_on_another(
        redis_server: RedisServer) -> None:
    """A's job waits on an input that never arrives; A is killed (SIGKILL): once its lease
    lapses, a status read on B ends the job in the vendor's error status with a message,
    instead of processing for ever."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    hang = f"http://127.0.0.1:{silent.getsockname()[1]}/never.png"
    a_port, b_port = free_port(), free_port()
    extra = ("--store", redis_server.url, "--progression", "polls:50")
    a, b = _serve(a_port, *extra), _serve(b_port, *extra)
    driver = DRIVERS[0]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{a_port}", timeout=30) as client:
            submitted = driver.submit(client, hang)
            assert submitted.status_code == driver.submit_status, submitted.text
            url = _on(driver.poll_url(client, submitted), b_port)
            body = driver.outcome(client, url)
            assert driver.status(body) in (driver.status_words["queued"],
                                           driver.status_words["processing"]), body
            a.kill()
            a.wait(timeout=10)
            deadline = time.monotonic() + 30  # the lease is 5 s
            while driver.status(body) != driver.status_words["error"]:
                assert time.monotonic() < deadline, body
                time.sleep(0.25)
                body = driver.outcome(client, url)
            assert "stopped before it ended" in json.dumps(body), body
    finally:
        silent.close()
        if a.poll() is None:
            _stop(a)
        _stop(b)


def test_serve_workers_2_on_redis_is_one_emulator(redis_server: RedisServer) -> None:
    """``serve --workers 2 --store redis://``: two server processes on one port; jobs
    submitted and polled over fresh connections (either worker answers) all succeed, and
    their files download. On memory, ``--workers 2`` is still refused."""
    port = free_port()
    image = _png()
    proc = _serve(port, "--store", redis_server.url, "--workers", "2",
                  "--progression", "polls:3")
    try:
        deadline = time.monotonic() + 30
        while len(children(proc.pid)) < 2:  # uvicorn's two workers (and no more needed)
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for driver in DRIVERS:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                submitted = driver.submit(client, image)
                assert submitted.status_code == driver.submit_status, submitted.text
                url = driver.poll_url(client, submitted)
            for _ in range(100):
                # a new connection each time: the kernel hands it to either worker
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                  limits=httpx.Limits(max_keepalive_connections=0)) as one:
                    body = driver.outcome(one, url)
                    if driver.status(body) == driver.status_words["succeeded"]:
                        assert one.get(driver.urls(body)[0]).status_code == 200
                        break
            assert driver.status(body) == driver.status_words["succeeded"], body
    finally:
        _stop(proc)
    refused = subprocess.run(
        [sys.executable, "-m", "emulator.cli", "serve", "--port", str(port), "--workers", "2"],
        capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "store they share" in refused.stderr, refused.stderr


def _wait_until_served(client: httpx.Client, driver: Driver, url: str) -> None:
    """Read ``url`` until it answers other than 503 (a restarted Redis: the emulator's pooled
    connections find it again within a few reads, as the 503 says, "retry shortly"); never
    a 500. At most 15 s ("does not hang")."""
    deadline = time.monotonic() + 15
    while True:
        response = driver.poll(client, url)
        assert response.status_code != 500, response.text
        if response.status_code != 503 or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def test_a_redis_that_goes_away_gets_the_vendors_503_and_loses_no_job(
        redis_server: RedisServer) -> None:
    """Redis stops: every vendor's status read answers 503 in the vendor's own JSON error
    shape (never a 500); Redis comes back: the jobs submitted before answer again, from a
    second process too."""
    a_port, b_port = free_port(), free_port()
    image = _png()
    a = _serve(a_port, "--store", redis_server.url)
    kept = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{a_port}", timeout=30) as client:
            for driver in DRIVERS:
                submitted = driver.submit(client, image)
                assert submitted.status_code == driver.submit_status, submitted.text
                url = driver.poll_url(client, submitted)
                _final(client, driver, url)
                kept.append((driver, url))
            redis_server.stop()
            for driver, url in kept:
                down = driver.poll(client, url)
                assert down.status_code == 503, (driver.slug, down.status_code, down.text)
                assert isinstance(down.json(), dict), down.text
                submitted = driver.submit(client, image)
                assert submitted.status_code == 503, (driver.slug, submitted.text)
            redis_server.start()
            for driver, url in kept:
                _wait_until_served(client, driver, url)
                again = driver.outcome(client, url)
                assert driver.status(again) == driver.status_words["succeeded"], again
        b = _serve(b_port, "--store", redis_server.url)
        try:
            with httpx.Client(timeout=30) as client:
                for driver, url in kept:
                    again = driver.outcome(client, _on(url, b_port))
                    assert driver.status(again) == driver.status_words["succeeded"], again
                    assert client.get(_on(driver.urls(again)[0], b_port)).status_code == 200
        finally:
            _stop(b)
    finally:
        _stop(a)


def test_a_webhook_goes_out_once_and_a_reset_on_one_process_resets_all(
        redis_server: RedisServer) -> None:
    """A job with a webhook, submitted on A (``polls:2``), is read on A and on B until both
    show it final: the sink gets one delivery, not two. Then ``POST /_emulator/reset`` on A:
    B answers the job as unknown (404), as A does."""
    from emulator.testing.sink import WebhookSink

    a_port, b_port = free_port(), free_port()
    extra = ("--store", redis_server.url, "--progression", "polls:2")
    a, b = _serve(a_port, *extra), _serve(b_port, *extra)
    driver = DRIVERS[0]  # Pixazo: X-Webhook-URL
    try:
        with WebhookSink() as sink, httpx.Client(timeout=30) as client:
            with httpx.Client(base_url=f"http://127.0.0.1:{a_port}", timeout=30) as on_a_client:
                submitted = driver.submit_with_webhook(on_a_client, _png(), sink.url + "/hook")
            assert submitted.status_code == driver.submit_status, submitted.text
            url = driver.poll_url(client, submitted)
            for _ in range(100):
                on_a = driver.outcome(client, _on(url, a_port))
                on_b = driver.outcome(client, _on(url, b_port))
                if driver.status(on_a) == driver.status(on_b) == driver.status_words[
                        "succeeded"]:
                    break
                time.sleep(0.05)
            assert driver.status(on_b) == driver.status_words["succeeded"], on_b
            sink.wait_for(1, 30.0)
            time.sleep(1.5)  # room for a second delivery, were there one
            assert len(sink.received) == 1, sink.received
            assert client.post(f"http://127.0.0.1:{a_port}/_emulator/reset").status_code == 200
            assert driver.poll(client, _on(url, a_port)).status_code == 404
            assert driver.poll(client, _on(url, b_port)).status_code == 404
    finally:
        _stop(a)
        _stop(b)


def test_a_balance_drained_from_two_processes_admits_exactly_what_it_covers(
        redis_server: RedisServer) -> None:
    """A balance of three jobs (0.054 USD), set on A: submits alternating between A and B
    (every vendor's), concurrently too: exactly three are accepted, every other gets the
    vendor's 402 on either process, and both show the balance 0 once the jobs are done."""
    from concurrent.futures import ThreadPoolExecutor

    a_port, b_port = free_port(), free_port()
    image = _png()
    a = _serve(a_port, "--store", redis_server.url)
    b = _serve(b_port, "--store", redis_server.url)
    try:
        with httpx.Client(timeout=30) as client:
            set_to = client.post(f"http://127.0.0.1:{a_port}/_emulator/keys/drained",
                                 json={"balance_usd": 0.054})
            assert set_to.status_code == 200, set_to.text

            def submit(i: int) -> int:
                driver = DRIVERS[i % len(DRIVERS)]
                port = (a_port, b_port)[i % 2]
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as one:
                    return driver.submit(one, image, key="drained").status_code

            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(submit, range(12)))
            accepted = [c for c in codes if c in (200, 201, 202)]
            assert len(accepted) == 3, codes
            assert codes.count(402) == 9, codes
            for port in (a_port, b_port):
                for _ in range(100):
                    account = client.get(f"http://127.0.0.1:{port}/_emulator/keys/drained"
                                         ).json()
                    if account["active_jobs"] == 0:
                        break
                    time.sleep(0.1)
                assert (account["balance_usd"], account["held_usd"]) == ("0", "0"), account
    finally:
        _stop(a)
        _stop(b)


def test_a_times_2_rule_added_on_one_process_is_hit_once_on_each_then_no_more(
        redis_server: RedisServer) -> None:
    """A ``times: 2`` rule added on A applies on B too, and its two hits are global: one
    submit on A and one on B get its 503, every later one on either is accepted; both show
    the rule used up."""
    a_port, b_port = free_port(), free_port()
    image = _png()
    a = _serve(a_port, "--store", redis_server.url)
    b = _serve(b_port, "--store", redis_server.url)
    driver = DRIVERS[0]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{a_port}", timeout=30) as on_a, \
                httpx.Client(base_url=f"http://127.0.0.1:{b_port}", timeout=30) as on_b:
            rule = on_a.post("/_emulator/faults", json={
                "vendor": driver.slug, "status": 503, "times": 2}).json()
            assert driver.submit(on_a, image).status_code == 503
            assert driver.submit(on_b, image).status_code == 503
            for client in (on_a, on_b, on_a, on_b):
                assert driver.submit(client, image).status_code == driver.submit_status
            for client in (on_a, on_b):
                seen = client.get(f"/_emulator/faults/{rule['id']}").json()
                assert (seen["hits"], seen["remaining"]) == (2, 0), seen
    finally:
        _stop(a)
        _stop(b)


def test_a_read_a_download_and_a_submit_cost_few_redis_round_trips_and_never_watch(
        redis_server: RedisServer) -> None:
    """The per-request Redis cost (issue 16): a status read or a download reads the fault
    rules and the path's job and file in ONE round trip (the rules sync's pipeline; the
    handler's prefetch is skipped); a submit's admission and its job's write are one
    script; a job is written by one compare-and-set script, so no ``WATCH`` reaches Redis.
    Round trips are counted as Redis's read events (``total_reads_processed``: one per
    pipelined batch a client sends)."""
    port = free_port()
    driver = DRIVERS[0]
    proc = _serve(port, "--store", redis_server.url)
    admin = redis.Redis.from_url(redis_server.url)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            submitted = driver.submit(client, _png())
            assert submitted.status_code == driver.submit_status, submitted.text
            url = driver.poll_url(client, submitted)
            (out,) = driver.urls(_final(client, driver, url))
            assert client.get(out).status_code == 200
            before = int(admin.info("stats")["total_reads_processed"])
            reads = 20
            for _ in range(reads):
                assert driver.status(driver.outcome(client, url)) == (
                    driver.status_words["succeeded"])
                assert client.get(out).status_code == 200
            spent = int(admin.info("stats")["total_reads_processed"]) - before - 1
            before = int(admin.info("stats")["total_reads_processed"])
            submits = 10
            for _ in range(submits):
                assert driver.submit(client, _png()).status_code == driver.submit_status
            time.sleep(0.5)  # the background writes of the jobs' ends
            spent_submitting = int(admin.info("stats")["total_reads_processed"]) - before - 1
            commands = admin.info("commandstats")
    finally:
        admin.close()
        _stop(proc)
    # 2 per pair of requests before (rules sync, then prefetch): 80; now 40, with room for
    # the background loops (lease renewal once a second).
    assert spent <= 2 * reads + 8, spent
    # A submit: the rules sync, then its admission and its job's write in one script; the
    # job's end and its settlement in one more (before: 6 and 3 or more).
    assert spent_submitting <= 3 * submits + 8, spent_submitting
    assert "cmdstat_watch" not in commands, commands  # (MULTI: the saver's documents)
    assert commands["cmdstat_evalsha"]["calls"] >= 1, commands


def test_a_job_changed_on_b_is_seen_on_a_whose_write_is_merged_not_lost(
        redis_server: RedisServer) -> None:
    """A writes its jobs by compare-and-set on the job's version and skips the handler's
    prefetch after the rules sync read the job: a job submitted on A (``polls:3``) and read
    on B (B writes the job: its view moved) shows B's progress on A's next read, and A's
    own write afterwards (its work's end) merges with B's instead of going back."""
    a_port, b_port = free_port(), free_port()
    extra = ("--store", redis_server.url, "--progression", "polls:3")
    a, b = _serve(a_port, *extra), _serve(b_port, *extra)
    driver = DRIVERS[0]
    succeeded = driver.status_words["succeeded"]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{a_port}", timeout=30) as client:
            submitted = driver.submit(client, _png())
            assert submitted.status_code == driver.submit_status, submitted.text
            url = driver.poll_url(client, submitted)
            seen = [driver.status(driver.outcome(client, _on(url, b_port))),
                    driver.status(driver.outcome(client, _on(url, b_port)))]
            assert succeeded not in seen, seen
            on_a = driver.outcome(client, _on(url, a_port))  # the third read: final
            for _ in range(100):  # A's work may still be ending
                if driver.status(on_a) == succeeded:
                    break
                time.sleep(0.05)
                on_a = driver.outcome(client, _on(url, a_port))
            assert driver.status(on_a) == succeeded, on_a
            time.sleep(0.3)  # A's background write of the job's end
            on_b = driver.outcome(client, _on(url, b_port))
            assert driver.status(on_b) == succeeded, on_b
            assert [httpx.URL(u).path for u in driver.urls(on_b)] == [
                httpx.URL(u).path for u in driver.urls(on_a)]
    finally:
        _stop(a)
        _stop(b)


def test_serve_stops_on_sigterm_while_its_redis_hangs(redis_server: RedisServer) -> None:
    """A Redis that stops answering (SIGSTOP) while a job's work runs: SIGTERM still stops
    ``serve`` within a bounded time (each shutdown step waits at most ``STOP_S``)."""
    import os

    port = free_port()
    proc = _serve(port, "--store", redis_server.url, "--progression", "polls:50")
    assert redis_server.proc is not None
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            driver = DRIVERS[0]
            assert driver.submit(client, _png()).status_code in (200, 201, 202)
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("serve did not stop while its Redis hung") from None
        assert code in (0, -signal.SIGTERM)
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
