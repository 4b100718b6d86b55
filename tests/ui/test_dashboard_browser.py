"""The dashboard (``/_emulator/ui``) in a real browser: headless Chromium driven by Playwright.

Skipped, with the reason, only where Chromium or Playwright is missing (CI installs both:
``.ci/run``). Screenshots go to ``$RMBG_UI_ARTIFACTS`` (default: pytest's tmp path).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.testing.server import EmulatorServer
from emulator.testing.sink import WebhookSink
from tests.conftest import OriginServer, emulator_settings
from tests.vendors.drivers import FAL

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (apt-get install -y chromium)")
#: Chromium's flags: no sandbox (root in CI), and nothing that reaches the network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: Milliseconds any expectation may take (generous: proves "does not hang").
WAIT_MS = 15_000
TOKEN = "s3cret-admin-token"
XSS_KEY = '<img id="xss" src=x onerror="document.title=1">'


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go."""
    given = os.environ.get("RMBG_UI_ARTIFACTS")
    path = Path(given) if given else tmp_path_factory.mktemp("ui-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    """An emulator with the fast matte engine and immediate progression."""
    with EmulatorServer(emulator_settings(engine="grabcut")) as running:
        yield running


@pytest.fixture()
def page(browser: Any, server: EmulatorServer) -> Iterator[Any]:
    server.emulator.reset()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    yield tab
    context.close()


def sample_url(origin: OriginServer) -> str:
    """A small photograph (96 pixels wide) on the client's image host."""
    return origin.url + "/small.png"


def images_loaded(tab: Any, selector: str) -> None:
    """Wait until every image matching ``selector`` has loaded (a real picture)."""
    tab.wait_for_function(
        "s => { const imgs = [...document.querySelectorAll(s)];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        arg=selector)


def test_a_live_job_turns_to_success_with_both_images(
        page: Any, server: EmulatorServer, artifacts: Path, origin: OriginServer) -> None:
    page.goto(server.url + "/_emulator/ui")
    assert page.locator("text=No jobs yet").count() == 1
    with httpx.Client(base_url=server.url) as client:
        submitted = FAL.submit(client, sample_url(origin), key=XSS_KEY)
    assert submitted.status_code < 300, submitted.text
    job_id = FAL.job_id(submitted)
    page.locator(f'tr[data-job="{job_id}"][data-status="queued"]').wait_for()
    with httpx.Client(base_url=server.url) as client:  # the client polls: the job moves on
        status_url = FAL.poll_url(client, submitted)
        deadline = time.monotonic() + WAIT_MS / 1000
        while FAL.outcome(client, status_url, key=XSS_KEY)["status"] != "COMPLETED":
            assert time.monotonic() < deadline, "the job did not complete"
            time.sleep(0.05)
    row = page.locator(f'tr[data-job="{job_id}"][data-status="succeeded"]')
    row.wait_for()  # no reload: the page refreshes itself
    images_loaded(page, f'tr[data-job="{job_id}"] img')
    assert row.locator("img.input").count() == 1 and row.locator("img.output").count() == 1
    # The key came from the client: shown as text, never as markup.
    assert XSS_KEY in row.inner_text()
    assert page.locator("#xss").count() == 0
    page.screenshot(path=str(artifacts / "jobs.png"), full_page=True)
    # The key's account: the job's charge in its ledger.
    page.goto(server.url + "/_emulator/ui/keys")
    assert XSS_KEY in page.locator(".card[data-key]").inner_text()
    assert page.locator("#xss").count() == 0
    page.screenshot(path=str(artifacts / "keys.png"), full_page=True)


def test_the_injected_429_is_in_the_journal_and_an_early_retry_is_highlighted(
        page: Any, server: EmulatorServer, artifacts: Path, origin: OriginServer) -> None:
    server.emulator.faults.add_all(
        [{"vendor": "fal", "status": 429, "retry_after": 30, "times": 2}], source="admin")
    with httpx.Client(base_url=server.url) as client:
        first = FAL.submit(client, sample_url(origin))
        again = FAL.submit(client, sample_url(origin))  # before the 30 s: too early
    assert (first.status_code, again.status_code) == (429, 429)
    page.goto(server.url + "/_emulator/ui/journal?vendor=fal&status=429")
    rows = page.locator("#journal tr[data-seq]")
    assert rows.count() == 2
    early = page.locator("#journal tr.early")
    assert early.count() == 1
    assert "early_retry" in early.inner_text() and "429" in early.inner_text()
    page.screenshot(path=str(artifacts / "journal.png"), full_page=True)


def test_a_webhook_delivery_is_resent_from_its_job_page(
        page: Any, server: EmulatorServer, artifacts: Path, origin: OriginServer) -> None:
    with WebhookSink() as sink, httpx.Client(base_url=server.url) as client:
        submitted = FAL.submit_with_webhook(client, sample_url(origin), sink.url + "/hook")
        job_id = FAL.job_id(submitted)
        assert len(sink.wait_for(1)) == 1
        page.goto(f"{server.url}/_emulator/ui/jobs/{job_id}")
        images_loaded(page, "img.output")
        assert page.locator("#deliveries tr[data-delivery]").count() == 1
        assert page.locator("#requests tr").count() >= 2  # the header and the submit
        page.locator("button.resend").first.click()
        page.locator("#resend-msg.ok").wait_for()
        assert len(sink.wait_for(2)) == 2
        # The page refreshes itself: the resend appears as a second delivery.
        page.locator("#deliveries tr[data-delivery]").nth(1).wait_for()
        assert "resend of" in page.locator("#deliveries").inner_text()
        page.screenshot(path=str(artifacts / "job.png"), full_page=True)


def test_a_rule_is_added_from_the_form_and_deleted(
        page: Any, server: EmulatorServer, artifacts: Path) -> None:
    page.goto(server.url + "/_emulator/ui/faults")
    page.fill("#add-rule textarea", '{"vendor": "bria", "status": 503, "times": 3}')
    page.click("#add-rule button")
    page.locator("#rule-msg.ok").wait_for()
    rules = server.emulator.faults.rules()
    assert [(r.to_json()["vendor"], r.to_json()["status"]) for r in rules] == [("bria", 503)]
    row = page.locator(f'tr[data-rule="{rules[0].id}"]')
    row.wait_for()  # listed by the page's refresh
    # A bad rule is refused with the control plane's own message.
    page.fill("#add-rule textarea", '{"status": 99}')
    page.click("#add-rule button")
    page.locator("#rule-msg.bad").wait_for()
    assert "status" in page.locator("#rule-msg").inner_text()
    page.screenshot(path=str(artifacts / "faults.png"), full_page=True)
    row.locator("button.delete").click()
    page.locator("text=Deleted").wait_for()
    assert server.emulator.faults.rules() == []


def test_the_admin_token_login_over_tls(browser: Any, artifacts: Path,
                                        tmp_path: Path) -> None:
    settings = emulator_settings(engine="grabcut", admin_token=TOKEN, tls=True,
                                 tls_dir=str(tmp_path))
    with EmulatorServer(settings) as secured:
        assert secured.url.startswith("https://")
        context = browser.new_context(ignore_https_errors=True)
        context.set_default_timeout(WAIT_MS)
        tab = context.new_page()
        refused = tab.goto(secured.url + "/_emulator/ui")
        assert refused is not None and refused.status == 401
        assert "/_emulator/ui/login" in refused.json()["detail"]
        wrong = tab.goto(secured.url + "/_emulator/ui/login?token=nope")
        assert wrong is not None and wrong.status == 401
        tab.goto(secured.url + "/_emulator/ui/login")
        tab.fill("input[name=token]", TOKEN)
        tab.click("button[type=submit]")
        tab.wait_for_url(secured.url + "/_emulator/ui")
        assert tab.locator("h1").inner_text().startswith("Jobs")
        [cookie] = context.cookies()
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        assert TOKEN not in cookie["value"]
        # The page's own API calls pass the gate with the cookie.
        tab.goto(secured.url + "/_emulator/ui/faults")
        tab.click("#add-rule button")
        tab.locator("#rule-msg.ok").wait_for()
        assert len(secured.emulator.faults.rules()) == 1
        tab.screenshot(path=str(artifacts / "login-faults.png"), full_page=True)
        context.close()
