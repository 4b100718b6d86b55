"""The published fal-client SDK against the emulator over TLS (the ``sdk`` extra).

fal-client always speaks https and reads its hosts when imported, so the cases in
``fal_sdk_cases.py`` run in a fresh interpreter whose environment is what a user would set:
``FAL_RUN_HOST=127.0.0.1:PORT``, ``FAL_QUEUE_RUN_HOST=127.0.0.1:PORT/queue``, ``FAL_KEY`` and
``SSL_CERT_FILE`` = the emulator's CA bundle. One interpreter runs every case (one import, one
server); each test below checks one case's record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.testing.server import EmulatorServer
from tests.conftest import emulator_settings

pytest.importorskip("fal_client")

CASES = Path(__file__).with_name("fal_sdk_cases.py")
# chelsea.jpg, the sample the cases use
WIDTH, HEIGHT = 451, 300


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    settings = emulator_settings(progression="polls:2", tls=True,
                                 tls_dir=str(tmp_path_factory.mktemp("tls")))
    with EmulatorServer(settings) as running:
        yield running


@pytest.fixture(scope="module")
def sdk(server: EmulatorServer) -> dict[str, dict[str, Any]]:
    assert server.url.startswith("https://") and server.ca_bundle is not None
    hostport = f"127.0.0.1:{server.settings.port}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FAL_", "SSL_CERT_", "REQUESTS_CA_BUNDLE"))}
    env.update({
        "FAL_RUN_HOST": hostport,
        "FAL_QUEUE_RUN_HOST": f"{hostport}/queue",
        "FAL_KEY": "sdk-key",
        "SSL_CERT_FILE": str(server.ca_bundle),
        "RMBG_SDK_BASE": server.url,
        "FAL_HOME_DIR": str(server.ca_bundle.parent),
    })
    done = subprocess.run([sys.executable, str(CASES)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    results: dict[str, dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def case(sdk: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    record = sdk[name]
    assert "crash" not in record, record.get("traceback", record)
    return record


def check_image(image: dict[str, Any], server: EmulatorServer) -> None:
    assert image["url"].startswith(f"{server.url}/cdn/files/")
    assert (image["width"], image["height"]) == (WIDTH, HEIGHT)
    assert image["content_type"] == "image/png" and image["file_size"] > 0


def test_run(sdk: dict[str, dict[str, Any]], server: EmulatorServer) -> None:
    check_image(case(sdk, "run")["result"]["image"], server)


def test_run_with_sync_mode(sdk: dict[str, dict[str, Any]]) -> None:
    record = case(sdk, "run_sync_mode")
    assert record["head"] == "data:image/png;base64"
    assert record["png"] == "89504e470d0a1a0a"
    assert (record["image"]["width"], record["image"]["height"]) == (WIDTH, HEIGHT)


def test_subscribe_sees_every_status(sdk: dict[str, dict[str, Any]],
                                     server: EmulatorServer) -> None:
    record = case(sdk, "subscribe")
    assert [u["type"] for u in record["updates"]] == ["Queued", "InProgress", "Completed"]
    assert record["updates"][0]["position"] == 0
    assert isinstance(record["updates"][1]["logs"], list)
    assert record["updates"][2]["metrics"]["inference_time"] > 0
    assert record["updates"][2]["error"] is None
    assert len(record["enqueued"]) == 1
    check_image(record["result"]["image"], server)


def test_submit_status_result(sdk: dict[str, dict[str, Any]], server: EmulatorServer) -> None:
    record = case(sdk, "submit_status_result")
    base = f"{server.url}/queue/fal-ai/bria/requests/{record['request_id']}"
    assert (record["response_url"], record["status_url"]) == (base, base + "/status")
    assert record["first"] == {"type": "Queued", "position": 0}
    assert record["second"]["type"] == "InProgress" and record["second"]["logs"]
    check_image(record["result"]["image"], server)


def test_async_client(sdk: dict[str, dict[str, Any]], server: EmulatorServer) -> None:
    record = case(sdk, "async_client")
    assert [e["type"] for e in record["events"]] == ["Queued", "InProgress", "Completed"]
    check_image(record["queued"]["image"], server)
    check_image(record["run"]["image"], server)


def test_replace(sdk: dict[str, dict[str, Any]], server: EmulatorServer) -> None:
    result = case(sdk, "replace")["result"]
    assert result["seed"] == 5 and len(result["images"]) == 2
    for image in result["images"]:
        check_image(image, server)


def test_cancel(sdk: dict[str, dict[str, Any]]) -> None:
    record = case(sdk, "cancel")
    assert record["status"]["type"] == "Completed"
    assert record["status"]["error_type"] == "client_cancelled"
    assert record["get"]["status_code"] == 499


def test_upload_file_then_run(sdk: dict[str, dict[str, Any]], server: EmulatorServer) -> None:
    record = case(sdk, "upload_then_run")
    assert record["access_url"].startswith(f"{server.url}/cdn/files/")
    assert record["access_url"].endswith(".jpg") and record["same_bytes"]
    check_image(record["result"]["image"], server)


def test_402_raises_at_once(sdk: dict[str, dict[str, Any]]) -> None:
    record = case(sdk, "payment_required")
    assert record["error"] == "FalClientHTTPError" and record["status_code"] == 402
    assert "balance" in record["message"]
    assert record["statuses"] == [402]


def test_429_is_retried_by_the_sdk(sdk: dict[str, dict[str, Any]]) -> None:
    record = case(sdk, "rate_limited_then_retried")
    assert record["first"] == 200 and record["width"] == WIDTH
    assert record["statuses"][0] == 429 and record["statuses"][-1] == 200
    assert set(record["statuses"]) == {429, 200}


def test_429_surfaces_once_retries_run_out(sdk: dict[str, dict[str, Any]]) -> None:
    record = case(sdk, "rate_limited_exhausted")
    assert record["error"] == "FalClientHTTPError" and record["status_code"] == 429
    assert int(record["retry_after"]) >= 1
    assert record["statuses"] == [200, 429, 429, 429]


def test_validation_error(sdk: dict[str, dict[str, Any]]) -> None:
    record = case(sdk, "validation_error")
    assert record["status_code"] == 422
    assert isinstance(record["message"], list)
    assert record["message"][0]["loc"] == ["body", "image_url"]


def test_model_error(sdk: dict[str, dict[str, Any]]) -> None:
    record = case(sdk, "model_error")
    assert record["status_code"] == 422
    assert record["message"][0]["type"] == "file_download_error"
