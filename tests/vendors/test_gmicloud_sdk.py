"""GMI Cloud's official SDK (``gmicloud``, pinned in the ``sdk`` extra) against a served
emulator: login (auth token, session, profile), submit, poll, download, over http and ``--tls``.

The SDK has no base-URL setting: it is aimed as the README says, by overwriting
``IAM_SERVICE_BASE_URL`` in the two modules that copied it at import (``_iam_client`` and
``_video_client``). It caches a refresh token in ``~/.gmicloud.config.json``, so ``HOME`` is a
temporary directory.
"""

from __future__ import annotations

import io
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from emulator.testing.server import EmulatorServer
from tests.conftest import emulator_settings

gmicloud = pytest.importorskip("gmicloud")
from gmicloud._internal._client import _iam_client, _video_client  # noqa: E402
from gmicloud._internal._models import SubmitRequestRequest  # noqa: E402

MODEL = "bria-image-remove-background"
SAMPLE = "/_emulator/samples/chelsea.jpg"
WIDTH, HEIGHT = 451, 300


def aim(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, base: str) -> None:
    """What a user does: point the SDK's IAM constant at the emulator; a fresh HOME."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for module in (_iam_client, _video_client):
        monkeypatch.setattr(module, "IAM_SERVICE_BASE_URL", f"{base}/api/v1")


@pytest.fixture()
def sdk_at(server: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    server.emulator.reset()
    aim(monkeypatch, tmp_path, server.url)
    return server.url


def run_flow(client: Any, image_url: str) -> tuple[Any, Any]:
    """Submit, then poll until a final status; (submit reply, last record)."""
    submitted = client.video_manager.create_request(
        SubmitRequestRequest(model=MODEL, payload={"image": image_url}))
    assert not isinstance(submitted, dict), submitted
    deadline = time.monotonic() + 60
    while True:
        record = client.video_manager.get_request_detail(submitted.request_id)
        assert not isinstance(record, dict), record
        if record.status.value in ("success", "failed", "cancelled"):
            return submitted, record
        assert time.monotonic() < deadline, "the request never finished"
        time.sleep(0.05)


def assert_cutout(url: str, *, verify: Any = True) -> None:
    png = httpx.get(url, verify=verify, timeout=30)
    assert png.status_code == 200
    image = Image.open(io.BytesIO(png.content))
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (WIDTH, HEIGHT))


def test_the_sdk_logs_in_submits_polls_and_downloads_a_cutout(sdk_at: str,
                                                               server: EmulatorServer,
                                                               tmp_path: Path) -> None:
    client = gmicloud.Client("ada@example.com", "any password")
    iam = client.iam_client
    assert iam.get_user_id() and iam.get_organization_id()
    assert (tmp_path / ".gmicloud.config.json").is_file()  # the cached refresh token
    submitted, record = run_flow(client, sdk_at + SAMPLE)
    assert submitted.status.value == "queued" and submitted.model == MODEL
    assert record.status.value == "success", record
    assert_cutout(record.outcome["media_urls"][0]["url"])
    listed = client.video_manager.get_requests(MODEL)
    assert [r.request_id for r in listed] == [submitted.request_id]
    # The account's e-mail is its API key: billing, journal and scoping see it.
    job = server.emulator.jobs.find(submitted.request_id, vendor="gmicloud",
                                    api_key="ada@example.com")
    assert job is not None
    other = gmicloud.Client("bob@example.com", "pw")
    assert other.video_manager.get_request_detail(submitted.request_id) == {
        "code": " 404", "error": f"request {submitted.request_id} not found"}


def test_a_second_client_logs_in_with_the_cached_refresh_token(sdk_at: str,
                                                                server: EmulatorServer) -> None:
    first = gmicloud.Client("ada@example.com", "pw")
    second = gmicloud.Client("ada@example.com", "pw")  # PATCH /me/sessions this time
    assert second.iam_client.get_user_id() == first.iam_client.get_user_id()
    paths = [(e.method, e.path) for e in server.emulator.journal.entries()
             if e.path.startswith("/api/v1/me/")]
    assert paths == [("POST", "/api/v1/me/auth-tokens"), ("POST", "/api/v1/me/sessions"),
                     ("GET", "/api/v1/me/profile"), ("PATCH", "/api/v1/me/sessions"),
                     ("GET", "/api/v1/me/profile")]


@pytest.mark.parametrize(("password", "expected"), [
    ("fault.status=429", {"code": " 429",
                          "error": "too many requests; retry after 1 seconds"}),
    # GMI's 402 message has a colon: the SDK keeps what comes before it.
    ("fault.status=402", {"code": " 402", "error": "insufficient balance"}),
])
def test_a_fault_password_surfaces_as_the_sdk_error_dict(sdk_at: str, password: str,
                                                         expected: dict[str, str]) -> None:
    client = gmicloud.Client("faulty@example.com", password)  # login is never faulted
    assert client.iam_client.get_user_id()
    got = client.video_manager.create_request(
        SubmitRequestRequest(model=MODEL, payload={"image": sdk_at + SAMPLE}))
    assert got == expected


def test_a_rule_on_the_account_applies_to_its_queue_calls(sdk_at: str,
                                                          server: EmulatorServer) -> None:
    rule = httpx.post(f"{sdk_at}/_emulator/faults", json={
        "api_key": "ada@example.com", "operation": "submit", "status": 503, "times": 1})
    assert rule.status_code in (200, 201), rule.text
    client = gmicloud.Client("ada@example.com", "pw")
    request = SubmitRequestRequest(model=MODEL, payload={"image": sdk_at + SAMPLE})
    assert client.video_manager.create_request(request) == {
        "code": " 503", "error": "service temporarily unavailable"}
    assert not isinstance(client.video_manager.create_request(request), dict)


def test_expired_and_unknown_tokens_get_401(sdk_at: str, server: EmulatorServer) -> None:
    client = gmicloud.Client("ada@example.com", "pw")
    token = client.iam_client.get_access_token()
    queue = f"{sdk_at}/api/v1/ie/requestqueue/requests"
    assert httpx.get(queue, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    forged = httpx.get(queue, headers={"Authorization": f"Bearer {token[:-4]}AAAA"})
    assert forged.status_code == 401 and forged.json() == {"error": "invalid access token"}
    api_key = httpx.get(queue, headers={"Authorization": "Bearer an-api-key"})
    assert api_key.status_code == 401
    server.emulator.clock.advance(3601)
    expired = httpx.get(queue, headers={"Authorization": f"Bearer {token}"})
    assert expired.status_code == 401 and expired.json() == {"error": "access token expired"}
    profile = httpx.get(f"{sdk_at}/api/v1/me/profile",
                        headers={"Authorization": f"Bearer {token}"})
    assert profile.status_code == 401
    assert profile.json() == {"message": "access token expired"}
    # What the SDK returns for a 401 (it never refreshes: its own except catches it first).
    got = client.video_manager.get_request_detail("any")
    assert got == {"code": " 401", "error": "Access token expired or invalid."}


def test_only_listed_accounts_log_in_with_keys(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    settings = emulator_settings(engine="grabcut", keys=frozenset({"ada@example.com"}))
    with EmulatorServer(settings) as running:
        aim(monkeypatch, tmp_path, running.url)
        assert gmicloud.Client("ada@example.com", "pw").iam_client.get_user_id()
        refused = httpx.post(f"{running.url}/api/v1/me/auth-tokens",
                             json={"email": "eve@example.com", "password": "pw"})
        assert refused.status_code == 401
        assert refused.json() == {"message": "invalid email or password"}


def test_bad_login_bodies_get_a_message(sdk_at: str) -> None:
    url = f"{sdk_at}/api/v1/me/auth-tokens"
    missing = httpx.post(url, json={"email": "ada@example.com"})
    assert missing.status_code == 400 and "password" in missing.json()["message"]
    bad_rule = httpx.post(url, json={"email": "a@b.c", "password": "fault.nonsense=1"})
    assert bad_rule.status_code == 400 and "fault password" in bad_rule.json()["message"]
    fault_mail = httpx.post(url, json={"email": "fault.status=429", "password": "pw"})
    assert fault_mail.status_code == 400 and "password" in fault_mail.json()["message"]
    session = httpx.post(f"{sdk_at}/api/v1/me/sessions",
                         json={"type": "native", "authToken": "x", "otpCode": None})
    assert session.status_code == 401 and session.json() == {"message": "invalid auth token"}


def test_the_sdk_over_tls_aimed_by_its_constant(tls_server: EmulatorServer,
                                                monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    assert tls_server.ca_bundle is not None and tls_server.url.startswith("https://")
    aim(monkeypatch, tmp_path, tls_server.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_server.ca_bundle))
    client = gmicloud.Client("ada@example.com", "pw")
    _, record = run_flow(client, tls_server.url + SAMPLE)
    assert record.status.value == "success", record
    assert_cutout(record.outcome["media_urls"][0]["url"],
                  verify=ssl.create_default_context(cafile=str(tls_server.ca_bundle)))
