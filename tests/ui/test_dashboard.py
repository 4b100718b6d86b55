"""The dashboard over plain HTTP (no browser): escaping, the input route, the session cookie."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from emulator.admin.ui import TEMPLATES
from emulator.admingate import SESSION_COOKIE, AdminGate
from emulator.testing.server import EmulatorServer
from tests.conftest import REPO, emulator_settings
from tests.vendors.drivers import FAL

TOKEN = "dashboard-token"
MARKUP = '<script id="xss">alert(1)</script>'


def tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(emulator_settings(engine="grabcut")) as running:
        yield running


@pytest.fixture()
def client(server: EmulatorServer) -> Iterator[httpx.Client]:
    server.emulator.reset()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def test_every_page_is_html_and_escapes_what_clients_sent(client: httpx.Client) -> None:
    data_uri = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    submitted = FAL.submit(client, data_uri, key=MARKUP)
    assert submitted.status_code == 200, submitted.text
    job_id = FAL.job_id(submitted)
    loaded = client.post("/_emulator/scenarios", json={
        "name": MARKUP, "faults": [{"vendor": "bria", "status": 503, "times": 1}]})
    assert loaded.status_code == 201, loaded.text
    pages = ["/_emulator/ui", f"/_emulator/ui/jobs/{job_id}", "/_emulator/ui/faults",
             "/_emulator/ui/journal", f"/_emulator/ui/keys?key={MARKUP}",
             "/_emulator/ui/violations"]
    for path in pages:
        page = client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["x-content-type-options"] == "nosniff"
        assert MARKUP not in page.text, path
    assert "&lt;script id=&#34;xss&#34;&gt;" in client.get("/_emulator/ui").text


def test_an_inline_input_is_served_as_its_image_type(client: httpx.Client) -> None:
    png = tiny_png()
    job_id = FAL.job_id(FAL.submit(client, "data:image/png;base64,"
                                   + base64.b64encode(png).decode()))
    image = client.get(f"/_emulator/ui/jobs/{job_id}/inputs/0")
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png" and image.content == png
    missing = client.get(f"/_emulator/ui/jobs/{job_id}/inputs/1")
    assert missing.status_code == 404 and "no such input" in missing.json()["detail"]


def test_client_bytes_that_are_no_image_are_never_served(client: httpx.Client) -> None:
    html = base64.b64encode(b"<html><script>alert(1)</script></html>").decode()
    job_id = FAL.job_id(FAL.submit(client, "data:image/png;base64," + html))
    refused = client.get(f"/_emulator/ui/jobs/{job_id}/inputs/0")
    assert refused.status_code == 404
    assert "not an image" in refused.json()["detail"]


def test_a_url_input_is_left_to_the_browser(client: httpx.Client,
                                            server: EmulatorServer) -> None:
    url = server.url + "/_emulator/samples/chelsea.jpg"
    job_id = FAL.job_id(FAL.submit(client, url))
    moved = client.get(f"/_emulator/ui/jobs/{job_id}/inputs/0")
    assert moved.status_code == 307 and moved.headers["location"] == url


def test_unknown_jobs_and_bad_filters_answer_json(client: httpx.Client) -> None:
    missing = client.get("/_emulator/ui/jobs/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    bad = client.get("/_emulator/ui/journal?status=abc")
    assert bad.status_code == 400 and "status" in bad.json()["detail"]
    unknown = client.get("/_emulator/ui/journal?colour=red")
    assert unknown.status_code == 400 and "colour" in unknown.json()["detail"]


def test_the_early_retry_row_is_marked(client: httpx.Client, server: EmulatorServer) -> None:
    client.post("/_emulator/faults", json={"vendor": "fal", "status": 429, "retry_after": 60,
                                            "times": 2})
    url = server.url + "/_emulator/samples/chelsea.jpg"
    assert [FAL.submit(client, url).status_code for _ in range(2)] == [429, 429]
    page = client.get("/_emulator/ui/journal", params={"early_retry": "true"}).text
    assert page.count('<tr class="early"') == 1


def test_the_login_sets_a_session_cookie_the_gate_accepts() -> None:
    with EmulatorServer(emulator_settings(engine="grabcut", admin_token=TOKEN)) as secured, \
            httpx.Client(base_url=secured.url) as http:
        refused = http.get("/_emulator/ui")
        assert refused.status_code == 401
        assert "/_emulator/ui/login" in refused.json()["detail"]
        form = http.get("/_emulator/ui/login")
        assert form.status_code == 200 and 'name="token"' in form.text
        wrong = http.get("/_emulator/ui/login", params={"token": "wrong"})
        assert wrong.status_code == 401 and "detail" in wrong.json()
        assert SESSION_COOKIE not in http.cookies
        signed_in = http.get("/_emulator/ui/login", params={"token": TOKEN})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/_emulator/ui"
        header = signed_in.headers["set-cookie"]
        assert "HttpOnly" in header and "SameSite=strict" in header and "Path=/_emulator" in header
        assert TOKEN not in header
        assert http.get("/_emulator/ui").status_code == 200
        # The cookie opens the API the page's script calls, and only the right one does.
        assert http.post("/_emulator/faults", json={"status": 500}).status_code == 201
        http.cookies.set(SESSION_COOKIE, "forged", path="/_emulator")
        assert httpx.get(secured.url + "/_emulator/faults",
                         cookies={SESSION_COOKIE: "forged"}).status_code == 401


def test_the_session_value_depends_on_the_token() -> None:
    assert AdminGate("a").session() != AdminGate("b").session()
    assert AdminGate(None).session() == ""
    assert AdminGate("a").accepts(b"a") and not AdminGate("a").accepts(b"b")


def test_the_package_ships_the_templates(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    build = tmp_path / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path),
                    "build_py", "--build-lib", str(build)],
                   cwd=REPO, check=True, capture_output=True)
    shipped = sorted(p.name for p in (build / "emulator/admin/ui/templates").glob("*.html"))
    assert shipped == sorted(p.name for p in TEMPLATES.glob("*.html"))
    assert "jobs.html" in shipped


def test_keys_show_balance_limits_and_ledger_and_violations_are_listed(
        client: httpx.Client, server: EmulatorServer) -> None:
    assert client.put("/_emulator/keys/k-ui", json={"balance_usd": 2.5, "rps": 7}).status_code \
        == 200
    keys = client.get("/_emulator/ui/keys", params={"key": "k-ui"}).text
    assert 'data-key="k-ui"' in keys and "$2.5<" in keys and "rps=7" in keys
    assert "balance set" in keys  # the ledger's entry for the balance set above
    broken = client.post(FAL.submit_path, json={"image_url": 5}, headers=FAL.headers("k-ui"))
    assert broken.status_code >= 400
    found = server.emulator.guard.violations()
    assert found, "the broken request should be a violation"
    page = client.get("/_emulator/ui/violations").text
    assert "No violations recorded" not in page and found[0]["field"] in page


def test_jobs_are_listed_newest_first(client: httpx.Client, server: EmulatorServer) -> None:
    url = server.url + "/_emulator/samples/chelsea.jpg"
    ids = [FAL.job_id(FAL.submit(client, url)) for _ in range(3)]
    page = client.get("/_emulator/ui").text
    assert sorted(ids, key=lambda i: page.index(f'data-job="{i}"')) == ids[::-1]
