"""``--store redis://``: what two ``serve`` processes on one Redis share beyond jobs and
balances: webhook deliveries (claimed in Redis, retried by another process when the one
holding a delivery dies), the deliveries list, and the hits of job- and webhook-stage fault
rules (a real ``redis-server``, :mod:`tests.redis_server`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from emulator.testing.server import free_port
from tests.redis_server import RedisServer, redis_server
from tests.test_state_store import _png, _serve, _stop
from tests.vendors.drivers import DRIVERS, Driver

__all__ = ["redis_server"]


class HangingSink:
    """Webhook receiver whose first POST never gets an answer (held 60 s); every later one
    gets 200. ``bodies`` holds every POST's body, in arrival order."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.release = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.bodies.append(body)
                if len(sink.bodies) == 1:
                    sink.release.wait(60)
                    return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Let the held POST go and stop serving."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _until(what: str, check: Any, timeout_s: float = 30.0) -> Any:
    """Call ``check`` every 0.1 s until it returns something true; at most ``timeout_s``
    ("does not hang")."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@contextmanager
def _two(redis: RedisServer, *extra: str) -> Iterator[tuple[httpx.Client, httpx.Client, Any]]:
    """Emulators A and B on one Redis; clients on each, and A's process."""
    a_port, b_port = free_port(), free_port()
    a = _serve(a_port, "--store", redis.url, *extra)
    b = _serve(b_port, "--store", redis.url, *extra)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{a_port}", timeout=30) as on_a, \
                httpx.Client(base_url=f"http://127.0.0.1:{b_port}", timeout=30) as on_b:
            yield on_a, on_b, a
    finally:
        if a.poll() is None:
            _stop(a)
        _stop(b)


def _deliveries(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/_emulator/webhooks")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found


def _listed(client: httpx.Client, count: int) -> list[dict[str, Any]] | None:
    """The deliveries ``client``'s process lists, once there are ``count``."""
    found = _deliveries(client)
    return found if len(found) == count else None


def _ended(client: httpx.Client, driver: Driver, submitted: httpx.Response) -> str:
    """Read the job until it shows a final status; that status word."""
    url = driver.poll_url(client, submitted)
    final = {driver.status_words[w] for w in ("succeeded", "failed", "error")}

    def word() -> str | None:
        status = driver.status(driver.outcome(client, url))
        return status if status in final else None

    found: str = _until("the job ends", word)
    return found


def test_a_delivery_held_by_a_killed_process_is_delivered_by_another_once(
        redis_server: RedisServer) -> None:
    """A job with a webhook, submitted on A: A's attempt hangs at the receiver, A is killed
    (SIGKILL). Once A's lease on the delivery lapses, B claims it from Redis and delivers it
    (the same body), once; B's deliveries list shows it delivered, with B's attempt."""
    driver = DRIVERS[0]  # Pixazo: X-Webhook-URL, unsigned
    sink = HangingSink()
    try:
        with _two(redis_server) as (on_a, on_b, a):
            submitted = driver.submit_with_webhook(on_a, _png(), sink.url + "/hook")
            assert submitted.status_code == driver.submit_status, submitted.text
            _until("A's attempt reaches the receiver", lambda: sink.bodies)
            a.kill()
            a.wait(timeout=10)

            def delivered() -> list[dict[str, Any]]:
                return [d for d in _deliveries(on_b) if d["state"] == "delivered"]

            (delivery,) = _until("B delivers it", delivered)
            time.sleep(1.5)  # room for a second delivery, were there one
            assert len(sink.bodies) == 2, sink.bodies
            assert sink.bodies[1] == sink.bodies[0]
            assert [a["status"] for a in delivery["attempts"]] == [200], delivery
            assert len(_deliveries(on_b)) == 1
    finally:
        sink.close()


def test_a_webhook_rule_fires_once_across_two_processes_and_both_list_every_delivery(
        redis_server: RedisServer) -> None:
    """A ``webhook: drop`` rule, ``times: 1``, added on A: the first job's callback (on A) is
    dropped, the second's (on B) delivered, once. Both processes list both deliveries (one
    dropped, one delivered) and show the rule used up."""
    from emulator.testing.sink import WebhookSink

    driver = DRIVERS[0]
    image = _png()
    with WebhookSink() as sink, _two(redis_server) as (on_a, on_b, _):
        drop = on_a.post("/_emulator/faults", json={
            "vendor": driver.slug, "webhook": "drop", "times": 1})
        assert drop.status_code in (200, 201), drop.text
        first = driver.submit_with_webhook(on_a, image, sink.url + "/hook")
        assert first.status_code == driver.submit_status, first.text
        _until("A's delivery is recorded", lambda: _deliveries(on_a))
        second = driver.submit_with_webhook(on_b, image, sink.url + "/hook")
        assert second.status_code == driver.submit_status, second.text
        sink.wait_for(1, 30.0)
        time.sleep(1.0)  # room for a second delivery, were there one
        assert len(sink.received) == 1, sink.received
        for client in (on_a, on_b):
            listed = _until("both deliveries listed", partial(_listed, client, 2))
            assert sorted(d["state"] for d in listed) == ["delivered", "dropped"], listed
        for client in (on_a, on_b):
            seen = client.get(f"/_emulator/faults/{drop.json()['id']}").json()
            assert (seen["hits"], seen["remaining"]) == (1, 0), seen


def test_a_job_rule_with_times_1_fires_once_across_two_processes(
        redis_server: RedisServer) -> None:
    """A ``job: error`` rule, ``times: 1``, added on A: the job submitted on A ends in the
    vendor's error status, the one submitted on B afterwards succeeds (status reads in
    between take no hit); both show the rule used up."""
    driver = DRIVERS[0]
    image = _png()
    with _two(redis_server) as (on_a, on_b, _):
        error = on_a.post("/_emulator/faults", json={
            "vendor": driver.slug, "job": "error", "times": 1})
        assert error.status_code in (200, 201), error.text
        on_a_job = driver.submit(on_a, image)
        assert _ended(on_a, driver, on_a_job) == driver.status_words["error"]
        on_b_job = driver.submit(on_b, image)
        assert _ended(on_b, driver, on_b_job) == driver.status_words["succeeded"]
        for client in (on_a, on_b):
            seen = client.get(f"/_emulator/faults/{error.json()['id']}").json()
            assert (seen["hits"], seen["remaining"]) == (1, 0), seen


def test_the_journal_lists_every_processs_requests_on_either(
        redis_server: RedisServer) -> None:
    """A job submitted on A and read on B: ``GET /_emulator/journal?job_id=`` on either lists
    both requests (the submit, then the read), numbered apart; ``verify`` on B counts A's
    submit; ``DELETE`` on B empties it for both."""
    driver = DRIVERS[0]
    with _two(redis_server) as (on_a, on_b, _):
        submitted = driver.submit(on_a, _png())
        assert submitted.status_code == driver.submit_status, submitted.text
        job_id = driver.job_id(submitted)
        assert driver.poll(on_b, driver.poll_url(on_b, submitted)).status_code == 200
        for client in (on_a, on_b):
            listed = client.get("/_emulator/journal", params={"job_id": job_id}).json()
            entries = listed["entries"]
            assert [e["method"] for e in entries] == ["POST", "GET"], entries
            assert len({e["seq"] for e in entries}) == 2, entries
        verify = on_b.post("/_emulator/journal/verify",
                           json={"job_id": job_id, "method": "POST", "count": 1}).json()
        assert verify["pass"], verify
        assert on_b.delete("/_emulator/journal").status_code == 200
        for client in (on_a, on_b):
            left = client.get("/_emulator/journal", params={"job_id": job_id}).json()
            assert left["entries"] == [], left


def test_two_outboxes_on_one_redis_deliver_each_delivery_once_and_keep_the_newest(
        redis_server: RedisServer) -> None:
    """Two outboxes (two processes' worth) on one Redis, both claiming: 12 deliveries queued
    on the first reach the receiver once each, whichever outbox attempts them; Redis keeps
    the newest ``journal_size`` (8) finished ones, and each outbox lists those."""
    import asyncio

    from emulator.core.clock import Clock
    from emulator.core.state.outbox import SharedOutbox
    from emulator.core.webhooks import RetryPolicy, WebhookMessage, WebhookOutbox
    from emulator.testing.sink import WebhookSink

    async def scenario(url: str) -> tuple[list[str], list[list[str]]]:
        outboxes = []
        for n in range(2):
            outbox = WebhookOutbox(Clock(), journal_size=8)
            outbox.shared = SharedOutbox(redis_server.url, outbox, lambda record: None)
            outbox.id_prefix = f"wh_{n}_"
            await outbox.start()
            outboxes.append(outbox)
        try:
            for i in range(12):
                outboxes[0].enqueue(WebhookMessage(url, f'{{"n": {i}}}'.encode(), {},
                                                   RetryPolicy()),
                                    job_id=f"job{i}", vendor="pixazo", api_key="k")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while len(sink.received) < 12 and loop.time() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # room for a second attempt of any, were there one
            listed = []
            for outbox in outboxes:
                assert outbox.shared is not None
                await outbox.shared.pull()
                listed.append([d.id for d in outbox.deliveries(state="delivered")])
        finally:
            for outbox in outboxes:
                await outbox.stop()
        return [r.body.decode() for r in sink.received], listed

    with WebhookSink() as sink:
        bodies, listed = asyncio.run(scenario(sink.url + "/hook"))
    assert sorted(bodies) == sorted(f'{{"n": {i}}}' for i in range(12)), bodies
    assert listed[0] == listed[1] == [f"wh_0_{i}" for i in range(5, 13)], listed


def test_the_dashboards_job_list_shows_jobs_submitted_on_another_process(
        redis_server: RedisServer) -> None:
    """A job submitted on A (and never read on B) is on B's dashboard job list."""
    driver = DRIVERS[0]
    with _two(redis_server) as (on_a, on_b, _):
        submitted = driver.submit(on_a, _png())
        assert submitted.status_code == driver.submit_status, submitted.text
        page = on_b.get("/_emulator/ui")
        assert page.status_code == 200, page.text
        assert driver.job_id(submitted) in page.text


def test_signing_secrets_are_shared_by_every_process(redis_server: RedisServer) -> None:
    """Two processes started at once serve one fal JWKS (one ED25519 key), and a Runflow
    callback secret made on A signs the callback of a job that B runs and announces."""
    import hashlib
    import hmac
    from concurrent.futures import ThreadPoolExecutor

    from emulator.testing.sink import WebhookSink
    from tests.vendors.drivers import RUNFLOW

    ports = free_port(), free_port()
    with ThreadPoolExecutor(2) as pool:  # at once: neither finds the other's key written
        procs = list(pool.map(lambda p: _serve(p, "--store", redis_server.url,
                                               "--progression", "immediate"), ports))
    try:
        with WebhookSink() as sink, \
                httpx.Client(base_url=f"http://127.0.0.1:{ports[0]}", timeout=30) as on_a, \
                httpx.Client(base_url=f"http://127.0.0.1:{ports[1]}", timeout=30) as on_b:
            jwks = [c.get("/rest/.well-known/jwks.json").json() for c in (on_a, on_b)]
            assert jwks[0] == jwks[1]
            created = on_a.post("/v1/callback-secrets", json={"label": "team"},
                                headers=RUNFLOW.headers())
            assert created.status_code == 201, created.text
            secret = created.json()["plain_secret"]
            submitted = RUNFLOW.submit_with_webhook(on_b, _png(), f"{sink.url}/hook")
            assert submitted.status_code == 201, submitted.text
            got = sink.wait_for(1, timeout_s=30)[0]
            expected = hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
            assert got.headers.get("runflow-signature") == expected
    finally:
        for proc in procs:
            _stop(proc)


def test_a_rate_limit_set_on_one_process_applies_on_every_process(
        redis_server: RedisServer) -> None:
    """``PUT /_emulator/keys/KEY`` with a rate limit on A: B shows it and obeys it (the
    bucket is one, in Redis), and a concurrency cap set on B refuses a submit on A."""
    driver = DRIVERS[0]
    with _two(redis_server) as (on_a, on_b, _):
        set_on_a = on_a.put("/_emulator/keys/limited", json={"rps": 0.001, "burst": 2})
        assert set_on_a.status_code == 200, set_on_a.text
        shown = on_b.get("/_emulator/keys/limited").json()["limits"]
        assert shown == {"rps": 0.001, "burst": 2.0, "concurrent": None}, shown
        rich = on_b.put("/_emulator/keys/rich", json={"balance_usd": 1e12})  # the largest
        assert rich.status_code == 200, rich.text
        assert on_a.get("/_emulator/keys/rich").json()["balance_usd"] == "1000000000000"
        codes = [driver.submit(client, _png(), key="limited").status_code
                 for client in (on_b, on_a, on_b)]
        assert codes == [driver.submit_status, driver.submit_status, 429], codes
        capped = on_b.put("/_emulator/keys/capped", json={"concurrent": 0})
        assert capped.status_code == 200, capped.text
        refused = driver.submit(on_a, _png(), key="capped")
        assert refused.status_code == 429, refused.text
        assert "limit 0" in refused.text, refused.text


def test_key_settings_from_scenarios_hold_on_every_process(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """A start-up scenario's balance is where a key's shared account starts (two jobs'
    worth: the third submit gets the vendor's 402, on either process), and a scenario loaded
    on A at run time caps a key on B too."""
    driver = DRIVERS[0]
    scenario = tmp_path / "keys.yaml"
    scenario.write_text("keys:\n  two-jobs: {balance_usd: 0.036}\n", encoding="utf-8")
    with _two(redis_server, "--scenario", str(scenario)) as (on_a, on_b, _):
        codes = [driver.submit(client, _png(), key="two-jobs").status_code
                 for client in (on_a, on_b, on_a)]
        assert codes == [driver.submit_status, driver.submit_status, 402], codes
        loaded = on_a.post("/_emulator/scenarios",
                           json={"keys": {"late": {"concurrent": 0}}})
        assert loaded.status_code == 201, loaded.text
        refused = driver.submit(on_b, _png(), key="late")
        assert refused.status_code == 429, refused.text


def test_the_control_planes_job_endpoints_see_and_move_jobs_of_another_process(
        redis_server: RedisServer) -> None:
    """A job submitted on A (and never read on B) is in B's ``GET /_emulator/jobs`` and
    ``GET /_emulator/jobs/{id}``; ``POST .../complete`` on B ends it, and A's status read
    shows it succeeded."""
    driver = DRIVERS[0]
    with _two(redis_server, "--progression", "polls:1000") as (on_a, on_b, _):
        submitted = driver.submit(on_a, _png())
        assert submitted.status_code == driver.submit_status, submitted.text
        job_id = driver.job_id(submitted)
        listed = on_b.get("/_emulator/jobs").json()["jobs"]
        assert [j["id"] for j in listed] == [job_id], listed
        shown = on_b.get(f"/_emulator/jobs/{job_id}")
        assert shown.status_code == 200, shown.text
        completed = on_b.post(f"/_emulator/jobs/{job_id}/complete")
        assert completed.status_code == 200, completed.text
        url = driver.poll_url(on_a, submitted)
        _until("A shows the job B completed", lambda: driver.status(driver.outcome(
            on_a, url)) == driver.status_words["succeeded"])


def test_a_keys_ledger_lists_every_processs_entries_on_either(
        redis_server: RedisServer) -> None:
    """The ledger is shared: a balance set on A, a job on each process (each held, then
    charged), a job failed by the control plane on B after its charge (refunded): every
    process lists the same entries, with the balance after each, and the dashboard's keys
    page shows the shared balance."""
    driver = DRIVERS[0]
    with _two(redis_server, "--progression", "polls:1000") as (on_a, on_b, _):
        assert on_a.put("/_emulator/keys/ledgered", json={"balance_usd": 1}).status_code == 200
        ids = []
        for client in (on_a, on_b):
            submitted = driver.submit(client, _png(), key="ledgered")
            assert submitted.status_code == driver.submit_status, submitted.text
            ids.append(driver.job_id(submitted))

        def charged() -> list[dict[str, Any]] | None:
            ledger: list[dict[str, Any]] = on_b.get("/_emulator/keys/ledgered").json()["ledger"]
            return ledger if sum(e["kind"] == "charge" for e in ledger) == 2 else None

        _until("both jobs are charged", charged)
        failed = on_b.post(f"/_emulator/jobs/{ids[0]}/fail", json={"message": "gone"})
        assert failed.status_code == 200, failed.text
        def refunded(client: httpx.Client) -> dict[str, Any] | None:
            view: dict[str, Any] = client.get("/_emulator/keys/ledgered").json()
            return view if any(e["kind"] == "refund" for e in view["ledger"]) else None

        views = [_until("the refund is listed", partial(refunded, c)) for c in (on_a, on_b)]
        assert views[0]["ledger"] == views[1]["ledger"]
        ledger = views[0]["ledger"]
        assert ledger[0]["kind"] == "adjust" and ledger[0]["balance_usd"] == "1", ledger
        for job_id in ids:
            assert [e["kind"] for e in ledger if e["job_id"] == job_id][:2] == [
                "hold", "charge"], ledger
        refund = ledger[-1]
        assert (refund["kind"], refund["job_id"], refund["amount_usd"]) == (
            "refund", ids[0], "0.018"), refund
        assert refund["balance_usd"] == views[0]["balance_usd"] == "0.982", views[0]
        page = on_a.get("/_emulator/ui/keys", params={"key": "ledgered"})
        assert page.status_code == 200 and "0.982" in page.text, page.text[:500]
