"""State stores (``--store``): the SQLite one keeps jobs, result files, balances, fault rules
and the clock across a restart; jobs whose work was cut short end with a message."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from PIL import Image

from emulator.app import Emulator, create_app
from emulator.core.billing import usd
from emulator.core.inputs import ImageSource
from emulator.core.jobs import Job, JobStatus, Task
from emulator.core.state import (
    Batch,
    MemoryStore,
    Saved,
    StateSaver,
    check_store_url,
    open_store,
)
from emulator.core.state.records import job_from_record, job_record
from emulator.settings import Settings
from emulator.testing.server import free_port
from tests.conftest import serve_process
from tests.vendors.drivers import DRIVERS, KEY, Driver


def _png() -> str:
    out = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 30)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def _serve(port: int, *extra: str) -> subprocess.Popen[str]:
    return serve_process(port, "--progression", "immediate", *extra)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    # uvicorn ends its lifespan, then raises the signal again: -15 is a clean stop.
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)


def _final(client: httpx.Client, driver: Driver, url: str) -> dict[str, object]:
    for _ in range(50):
        body = driver.outcome(client, url)
        if driver.status(body) == driver.status_words["succeeded"]:
            return body
        time.sleep(0.05)
    raise AssertionError(f"{driver.slug}: job did not succeed: {body}")


def test_sqlite_store_keeps_jobs_files_balances_and_rules_across_sigterm(
        tmp_path: Path) -> None:
    """20 jobs across every vendor, SIGTERM, a new ``serve`` on the same file: every status
    read and result file still answers (the memory store answers 404), and the balance,
    ledger and a rule's hits are as they were."""
    db = tmp_path / "state.db"
    port = free_port()
    image = _png()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(port, "--state", str(db))
    jobs: list[tuple[Driver, str, dict[str, object], bytes]] = []
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.post(f"/_emulator/keys/{KEY}", json={"balance_usd": 5}
                               ).status_code == 200
            rule = client.post("/_emulator/faults", json={
                "vendor": "bria", "api_key": "ruled", "status": 503, "times": 3}).json()
            assert DRIVERS[-1].submit(client, image, key="ruled").status_code == 503
            for i in range(20):
                driver = DRIVERS[i % len(DRIVERS)]
                submitted = driver.submit(client, image)
                assert submitted.status_code == driver.submit_status, submitted.text
                url = driver.poll_url(client, submitted)
                body = _final(client, driver, url)
                (out,) = driver.urls(body)
                download = client.get(out)
                assert download.status_code == 200
                jobs.append((driver, url, body, download.content))
            account = client.get(f"/_emulator/keys/{KEY}").json()
    finally:
        _stop(proc)
    assert account["balance_usd"] == "4.64"  # 5 - 20 x 0.018, exact

    proc = _serve(port, "--store", f"sqlite:{db}")
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for driver, url, body, data in jobs:
                again = driver.outcome(client, url)
                assert driver.status(again) == driver.status_words["succeeded"], again
                assert driver.urls(again) == driver.urls(body)
                download = client.get(driver.urls(again)[0])
                assert download.status_code == 200, (driver.slug, download.text)
                assert download.content == data
            after = client.get(f"/_emulator/keys/{KEY}").json()
            assert after["balance_usd"] == account["balance_usd"]
            assert after["ledger"] == account["ledger"]
            kept = client.get(f"/_emulator/faults/{rule['id']}").json()
            assert (kept["hits"], kept["remaining"]) == (1, 2)
            verify = client.post("/_emulator/journal/verify", json={
                "vendor": "bria", "api_key": "ruled", "status": 503, "count": 1})
            assert verify.json()["pass"] is True, verify.text
            assert client.post("/_emulator/reset").status_code in (200, 204)
    finally:
        _stop(proc)
    # A reset is kept too: the next process starts empty.
    proc = _serve(port, "--state", str(db))
    try:
        driver, url, _, _ = jobs[0]
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get(url, headers=driver.headers()).status_code == 404
    finally:
        _stop(proc)


def test_a_job_whose_work_was_cut_short_ends_with_a_message(tmp_path: Path) -> None:
    """A job saved while queued (the process was killed) ends, after the restart, as
    ``error`` with a message saying so, and its held price is released."""
    settings = Settings(engine="grabcut", store=f"sqlite:{tmp_path / 's.db'}")
    first = Emulator(settings)
    assert first.saver is not None
    job = Job(id="job-1", vendor="apiframe", operation="submit", api_key="k",
              task=Task("remove", (ImageSource("url", "http://127.0.0.1:9/a.png"),)),
              created_at=first.clock.now(), price_usd=Decimal("0.5"))
    first.jobs.billing.open_job("k", Decimal("0.5"), job.created_at, job.id, job.vendor)
    first.jobs.store.put(job)
    first.jobs.watch(job)
    first.state.write(first.saver.collect())  # what the last batch before a kill holds
    first.state.close()

    second = Emulator(settings)
    restored = second.jobs.get("job-1")
    assert restored.outcome is JobStatus.ERROR
    assert restored.error is not None and "restarted" in restored.error
    account = second.jobs.billing.account("k")
    assert (account.held_usd, account.active_jobs) == (Decimal(0), 0)
    assert account.balance_usd == usd(settings.default_balance_usd)
    assert account.ledger[-1].kind == "release"
    second.state.close()


def test_one_process_per_sqlite_file(tmp_path: Path) -> None:
    """A second store on a file in use is refused with a message (two processes would
    overwrite each other's state); once the first closes, it opens."""
    path = str(tmp_path / "s.db")
    first = open_store(f"sqlite:{path}")
    with pytest.raises(ValueError, match="in use by another process"):
        open_store(f"sqlite:{path}")
    first.close()
    open_store(f"sqlite:{path}").close()


def test_per_key_strict_settings_survive_a_restart(tmp_path: Path) -> None:
    settings = Settings(engine="grabcut", store=f"sqlite:{tmp_path / 's.db'}")
    first = Emulator(settings)
    assert first.saver is not None
    first.guard.set_strict_key("k", True)
    first.state.write(first.saver.collect())
    first.state.close()
    second = Emulator(settings)
    assert second.guard.is_strict_key("k")
    second.state.close()


def test_store_urls() -> None:
    assert isinstance(open_store("memory"), MemoryStore)
    for bad in ("sqlite:", "postgres://x", "redis://"):
        with pytest.raises(ValueError):
            check_store_url(bad)
    with pytest.raises(ValueError, match="store"):
        Settings(store="nope")


def test_fal_storage_tokens_and_uploads_survive_a_restart(tmp_path: Path) -> None:
    """A CDN token issued before the restart still uploads after it, and an upload made
    before it still downloads (the token secret and the file are kept)."""
    settings = Settings(engine="grabcut", store=f"sqlite:{tmp_path / 's.db'}")
    headers = {"Authorization": f"Key {KEY}"}

    async def first() -> tuple[str, str]:
        app = create_app(settings)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            token = (await c.post("/rest/storage/auth/token?storage_type=fal-cdn-v3",
                                  headers=headers)).json()["token"]
            up = await c.post("/cdn/files/upload", content=b"hello",
                              headers={"Authorization": f"Bearer {token}",
                                       "Content-Type": "text/plain"})
            assert up.status_code == 200, up.text
            return token, up.json()["access_url"]

    async def second(token: str, url: str) -> None:
        app = create_app(settings)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            up = await c.post("/cdn/files/upload", content=b"again",
                              headers={"Authorization": f"Bearer {token}",
                                       "Content-Type": "text/plain"})
            assert up.status_code == 200, up.text
            got = await c.get(url)
            assert (got.status_code, got.content) == (200, b"hello")

    token, url = asyncio.run(first())
    asyncio.run(second(token, url))


class FailingOnce:
    """A store whose first write fails (a full disk), recording what it is given."""

    url = "test:"
    durable = True

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.failed = False

    def load(self) -> Saved:
        return Saved()

    def write(self, batch: Batch) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("disk full")
        self.batches.append(batch)

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_batch_whose_write_failed_goes_with_the_next() -> None:
    engine_owner = Emulator(Settings(engine="grabcut"))
    saver = StateSaver(FailingOnce(), engine_owner.jobs)
    store = saver.store
    assert isinstance(store, FailingOnce)
    jobs = engine_owner.jobs
    a = Job(id="a", vendor="apiframe", operation="submit", api_key="k",
            task=Task("remove", ()), created_at=0.0, price_usd=Decimal(0))
    b = Job(id="b", vendor="apiframe", operation="submit", api_key="k",
            task=Task("remove", ()), created_at=0.0, price_usd=Decimal(0))

    async def run() -> None:
        jobs.store.put(a)
        jobs.watch(a)
        with pytest.raises(OSError):
            await saver.flush()
        jobs.store.put(b)
        jobs.watch(b)
        await saver.flush()

    asyncio.run(run())
    (written,) = store.batches
    assert set(written.jobs) == {"a", "b"}


def test_gmicloud_tokens_survive_a_restart(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An access token issued before the restart is still read after it (the signing
    secret is kept; a new process would start with another one)."""
    from emulator.vendors import gmicloud

    settings = Settings(engine="grabcut", store=f"sqlite:{tmp_path / 's.db'}")
    first = Emulator(settings)
    assert first.saver is not None
    token = gmicloud.issue_token(gmicloud.Account("a@example.com"), "access", 0.0, 3600)
    first.state.write(first.saver.collect())
    first.state.close()
    monkeypatch.setattr(gmicloud, "_SECRET", b"another process" * 2)
    second = Emulator(settings)
    assert gmicloud.read_token(token, "access", 1.0).email == "a@example.com"
    second.state.close()


def test_a_job_record_keeps_a_long_inline_input_as_its_description() -> None:
    """A queued job's record is saved at every status read: a 100 KB data URI is not
    copied into it (a restored job is never run again)."""
    uri = "data:image/png;base64," + "A" * 100_000
    job = Job(id="j", vendor="apiframe", operation="submit", api_key="k",
              task=Task("remove", (ImageSource("data", uri),
                                   ImageSource("url", "https://example.com/a.png"))),
              created_at=0.0, price_usd=Decimal(0))
    record = job_record(job)
    assert len(json.dumps(record)) < 2_000
    assert record["task"]["sources"][1] == ["url", "https://example.com/a.png"]
    from emulator.core.files import FileStore

    again = job_from_record(record, FileStore(1000), 0)
    assert again.task.sources[1] == job.task.sources[1]
    assert again.status is JobStatus.QUEUED and again.outcome is None


def test_a_webhook_being_retried_is_retried_after_a_restart(tmp_path: Path) -> None:
    """fal's callback fails once (500) and is due again 7 s later; the process stops in
    between. The new one has the delivery with its attempt, signs the retry with the same
    ED25519 key (its JWKS is unchanged), and delivers it once the clock passes the time."""
    from emulator.testing.sink import WebhookSink

    settings = Settings(engine="grabcut", progression="immediate", allow_fetch=("127.0.0.1",),
                        store=f"sqlite:{tmp_path / 's.db'}")
    fal = next(d for d in DRIVERS if d.slug == "fal")
    image = _png()

    async def first(hook: str, sink: WebhookSink) -> dict[str, object]:
        app = create_app(settings)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            r = await c.post(fal.submit_path, params={"fal_webhook": hook},
                             json=fal.body(image), headers=fal.headers())
            assert r.status_code == 200, r.text
            await asyncio.to_thread(sink.wait_for, 1, 30.0)
            for _ in range(100):
                (delivery,) = app.state.emulator.webhooks.deliveries()
                if delivery.attempts and delivery.next_at is not None:
                    break
                await asyncio.sleep(0.05)
            jwks: dict[str, object] = app.state.emulator.secrets.jwks()
            return jwks

    async def second(sink: WebhookSink, jwks: dict[str, object]) -> None:
        app = create_app(settings)
        emulator = app.state.emulator
        (delivery,) = emulator.webhooks.deliveries()
        assert (delivery.state, len(delivery.attempts)) == ("pending", 1)
        assert delivery.message.sign is not None
        assert emulator.secrets.jwks() == jwks
        async with app.router.lifespan_context(app):
            emulator.clock.advance(8.0)
            await asyncio.to_thread(sink.wait_for, 2, 30.0)
            for _ in range(100):
                if delivery.state == "delivered":
                    break
                await asyncio.sleep(0.05)
            assert delivery.state == "delivered"

    with WebhookSink(fail_first=1) as sink:
        jwks = asyncio.run(first(sink.url + "/hook", sink))
        asyncio.run(second(sink, jwks))
        first_try, retry = sink.received[:2]
    assert first_try.body == retry.body
    assert "x-fal-webhook-signature" in retry.headers


def test_a_job_changed_then_evicted_is_deleted_from_the_store(tmp_path: Path) -> None:
    settings = Settings(engine="grabcut", max_jobs=1, store=f"sqlite:{tmp_path / 's.db'}")
    emulator = Emulator(settings)
    assert emulator.saver is not None
    jobs = emulator.jobs
    old = Job(id="old", vendor="apiframe", operation="submit", api_key="k",
              task=Task("remove", ()), created_at=0.0, price_usd=Decimal(0),
              outcome=JobStatus.SUCCEEDED, status=JobStatus.SUCCEEDED)
    jobs.store.put(old)
    jobs.watch(old)  # changed in this interval...
    emulator.state.write(emulator.saver.collect())
    jobs.watch(old)
    jobs.store.put(Job(id="new", vendor="apiframe", operation="submit", api_key="k",
                       task=Task("remove", ()), created_at=0.0, price_usd=Decimal(0)))  # ...evicted
    batch = emulator.saver.collect()
    assert "old" in batch.dropped_jobs and "old" not in batch.jobs
    emulator.state.write(batch)
    assert [r["id"] for r in emulator.state.load().jobs] == []
    emulator.state.close()
