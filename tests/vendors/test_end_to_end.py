"""Every vendor end to end, against a real server, on real photographs (one driver each)."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from emulator.testing.composites import iou
from emulator.testing.server import EmulatorServer
from tests.conftest import (
    OriginServer,
    checked_client,
    decode_png,
    emulator_settings,
    png_bytes,
)
from tests.vendors.drivers import DRIVERS, KEY, Driver

pytestmark = pytest.mark.parametrize("vendor", DRIVERS, ids=[d.slug for d in DRIVERS])


def run_to_end(client: httpx.Client, vendor: Driver, image: str) -> dict[str, Any]:
    submitted = vendor.submit(client, image)
    assert submitted.status_code == vendor.submit_status, submitted.text
    return vendor.outcome(client, vendor.poll_url(client, submitted))


def test_submit_answers_queued(client: httpx.Client, vendor: Driver,
                               origin: OriginServer) -> None:
    response = vendor.submit(client, f"{origin.url}/small.png")
    assert response.status_code == vendor.submit_status
    assert response.headers["content-type"].startswith("application/json")
    assert vendor.status(response.json()) == vendor.status_words["queued"]
    assert vendor.job_id(response)
    if vendor.slug == "pixazo":
        body = response.json()
        assert body["request_id"].startswith("bria-rmbg-2-0-682_")
        assert body["polling_url"] == (
            f"{client.base_url}".rstrip("/") + f"/v2/requests/status/{body['request_id']}")


def test_status_sequence_queued_processing_completed(vendor: Driver,
                                                     origin: OriginServer) -> None:
    with EmulatorServer(emulator_settings(progression="polls:2")) as server, \
            checked_client(server.url) as client:
        submitted = vendor.submit(client, f"{origin.url}/small.png")
        url = vendor.poll_url(client, submitted)
        seen = [vendor.status(vendor.poll(client, url).json()) for _ in range(4)]
    words = vendor.status_words
    assert seen == [words["queued"], words["processing"], words["succeeded"],
                    words["succeeded"]]


def test_output_is_a_cutout_of_the_photograph(client: httpx.Client, vendor: Driver,
                                              origin: OriginServer) -> None:
    body = run_to_end(client, vendor, f"{origin.url}/composite.png")
    assert vendor.status(body) == vendor.status_words["succeeded"]
    urls = vendor.urls(body)
    assert len(urls) == 1
    assert urls[0].startswith(str(client.base_url).rstrip("/") + "/")
    download = client.get(urls[0])
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    out = decode_png(download.content)
    assert out.mode == "RGBA"
    source = origin.composite
    assert out.size == (source.rgb.shape[1], source.rgb.shape[0])
    rgba = np.asarray(out)
    alpha = rgba[:, :, 3]
    visible = alpha > 0
    assert np.array_equal(rgba[:, :, :3][visible], source.rgb[visible])
    assert iou(alpha, source.mask) >= 0.9
    assert 0 < visible.mean() < 1


def test_jpeg_input_keeps_size(client: httpx.Client, vendor: Driver,
                               origin: OriginServer) -> None:
    body = run_to_end(client, vendor, f"{origin.url}/composite.jpg")
    out = decode_png(client.get(vendor.urls(body)[0]).content)
    assert out.size == (600, 400)


def test_data_uri_input(client: httpx.Client, vendor: Driver) -> None:
    import base64

    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[10:30, 20:40] = (200, 30, 30)
    uri = "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode()
    body = run_to_end(client, vendor, uri)
    assert vendor.status(body) == vendor.status_words["succeeded"]
    out = decode_png(client.get(vendor.urls(body)[0]).content)
    assert out.size == (60, 40) and out.mode == "RGBA"


def test_emulator_sample_urls_work(client: httpx.Client, vendor: Driver) -> None:
    listing = client.get("/_emulator/samples").json()["samples"]
    chelsea = next(s for s in listing if s["name"] == "chelsea")
    body = run_to_end(client, vendor, chelsea["url"])
    out = decode_png(client.get(vendor.urls(body)[0]).content)
    assert out.size == Image.open(io.BytesIO(client.get(chelsea["url"]).content)).size


@pytest.mark.parametrize(("path", "cause"), [
    ("/missing.png", "404"),
    ("/error.png", "500"),
    ("/slow.png", "timed out"),
    ("/text.png", "not an image"),
    ("/big.png", "over the limit"),
    ("/bomb.png", "decompression"),
    ("/truncated.png", "truncated"),
    ("/photo.bmp", "BMP"),
])
def test_bad_input_image_fails_the_job_with_its_cause(
    client: httpx.Client, vendor: Driver, origin: OriginServer, path: str, cause: str
) -> None:
    body = run_to_end(client, vendor, f"{origin.url}{path}")
    assert vendor.status(body) == vendor.status_words["failed"]
    assert cause in vendor.error(body)
    account = client.get(f"/_emulator/keys/{KEY}").json()
    assert account["balance_usd"] == "1000"


def test_bad_inputs_leave_the_server_working(client: httpx.Client, vendor: Driver,
                                             origin: OriginServer) -> None:
    bad = [vendor.submit(client, f"{origin.url}{path}")
           for path in ("/text.png", "/bomb.png", "/truncated.png", "/photo.bmp", "/error.png")]
    assert all(r.status_code == vendor.submit_status for r in bad)
    again = run_to_end(client, vendor, f"{origin.url}/small.png")
    assert vendor.status(again) == vendor.status_words["succeeded"]
    for response in bad:
        body = vendor.outcome(client, vendor.poll_url(client, response))
        assert vendor.status(body) == vendor.status_words["failed"]
        assert vendor.error(body)


def test_unreachable_host_fails_the_job(client: httpx.Client, vendor: Driver) -> None:
    from emulator.testing.server import free_port

    body = run_to_end(client, vendor, f"http://127.0.0.1:{free_port()}/x.png")
    assert vendor.status(body) == vendor.status_words["failed"]
    assert "fetching the input image failed" in vendor.error(body)


@pytest.mark.parametrize("key", [None, ""])
def test_missing_key_is_401(client: httpx.Client, vendor: Driver, origin: OriginServer,
                            key: str | None) -> None:
    response = vendor.submit(client, f"{origin.url}/small.png", key=key)
    assert response.status_code == 401
    assert vendor.error_message(response.json())
    # a real job (whose input fails fast, so no matting is spent) is not readable without a key
    job = vendor.submit(client, f"{origin.url}/text.png")
    assert job.status_code == vendor.submit_status
    status = client.get(vendor.poll_url(client, job), headers=vendor.headers(key))
    assert status.status_code == 401
    assert vendor.error_message(status.json())


@pytest.mark.parametrize("image", [None, 42, "", "ftp://example.com/a.png", "file:///etc/passwd",
                                   "not a url", "data:image/png,notbase64", ["a"]])
def test_bad_image_reference_is_a_4xx_json(client: httpx.Client, vendor: Driver,
                                           image: object) -> None:
    response = vendor.submit(client, image)
    assert response.status_code in (400, 422)
    assert vendor.error_message(response.json())


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b"\xff\xfe", b'"text"'])
def test_malformed_body_is_a_4xx_json(client: httpx.Client, vendor: Driver, raw: bytes) -> None:
    response = client.post(vendor.submit_path, content=raw,
                           headers={**vendor.headers(), "content-type": "application/json"})
    assert response.status_code in (400, 422)
    assert vendor.error_message(response.json())


def test_insufficient_balance_is_402(client: httpx.Client, vendor: Driver,
                                     origin: OriginServer) -> None:
    client.put(f"/_emulator/keys/{KEY}", json={"balance_usd": 0.03}).raise_for_status()
    first = vendor.submit(client, f"{origin.url}/small.png")
    assert first.status_code == vendor.submit_status
    second = vendor.submit(client, f"{origin.url}/small.png")
    assert second.status_code == 402
    assert vendor.is_payment_required(second.json()), second.text
    vendor.poll(client, vendor.poll_url(client, first))
    account = client.get(f"/_emulator/keys/{KEY}").json()
    assert account["balance_usd"] == "0.012"
    assert [e["kind"] for e in account["ledger"]].count("charge") == 1


def test_rate_limit_is_429_with_retry_after(client: httpx.Client, vendor: Driver,
                                            origin: OriginServer) -> None:
    client.put(f"/_emulator/keys/{KEY}", json={"rps": 0.01, "burst": 1}).raise_for_status()
    assert vendor.submit(client, f"{origin.url}/small.png").status_code == vendor.submit_status
    limited = vendor.submit(client, f"{origin.url}/small.png")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert vendor.error_message(limited.json())


def test_unknown_job_is_404(client: httpx.Client, vendor: Driver) -> None:
    response = client.get(vendor.unknown_job_path, headers=vendor.headers())
    assert response.status_code == 404
    assert vendor.error_message(response.json())


def test_system_error_status(client: httpx.Client, vendor: Driver, origin: OriginServer) -> None:
    with EmulatorServer(emulator_settings(progression="polls:5")) as server, \
            checked_client(server.url) as c:
        submitted = vendor.submit(c, f"{origin.url}/small.png")
        job_id = vendor.job_id(submitted)
        c.post(f"/_emulator/jobs/{job_id}/fail",
               json={"status": "error", "message": "GPU fell over"}).raise_for_status()
        body = vendor.outcome(c, vendor.poll_url(c, submitted))
        account = c.get(f"/_emulator/keys/{KEY}").json()
    assert vendor.status(body) == vendor.status_words["error"]
    assert vendor.error(body) == "GPU fell over"
    assert account["balance_usd"] == "1000"


def test_wrong_method_is_vendor_json(client: httpx.Client, vendor: Driver) -> None:
    response = client.request(vendor.wrong_method, vendor.submit_path,
                              headers=vendor.headers())
    assert response.status_code == 405
    assert vendor.error_message(response.json())


def test_output_url_follows_the_host_the_client_used(emulator: EmulatorServer, vendor: Driver,
                                                     origin: OriginServer) -> None:
    with checked_client(emulator.url.replace("127.0.0.1", "localhost")) as client:
        body = run_to_end(client, vendor, f"{origin.url}/small.png")
        assert vendor.urls(body)[0].startswith(f"http://localhost:{emulator.settings.port}/")
        forwarded = vendor.submit(client, f"{origin.url}/text.png",
                                  headers={"Host": "emulator.example:9999"})
        assert forwarded.status_code == vendor.submit_status
        if vendor.poll_url_in_reply:
            assert vendor.poll_url(client, forwarded).startswith("http://emulator.example:9999/")
