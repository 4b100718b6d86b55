"""Cases that drive the published ``fal-client`` against a running emulator (not a test module).

``tests/vendors/test_fal_client.py`` runs this file in a fresh interpreter, because fal-client
reads ``FAL_RUN_HOST`` and ``FAL_QUEUE_RUN_HOST`` when it is imported (docs/vendors/fal.md): the
environment below is all a client needs, with nothing patched, except in ``upload_then_run``,
since the SDK hard-codes its REST and CDN hosts (``fal_client.client.REST_URL`` and
``CDN_URL``, no environment variable in fal-client 1.0.3).

Environment: ``FAL_RUN_HOST``, ``FAL_QUEUE_RUN_HOST``, ``FAL_KEY``, ``SSL_CERT_FILE`` (the
emulator's CA bundle) and ``RMBG_SDK_BASE`` (the emulator's https URL). Prints one JSON object:
case name -> what the case saw (or ``{"crash": ...}``).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fal_client
import httpx

BASE = os.environ["RMBG_SDK_BASE"]
IMAGE = f"{BASE}/_emulator/samples/chelsea.jpg"
REMOVE = "fal-ai/bria/background/remove"
REPLACE = "fal-ai/bria/background/replace"


def admin() -> httpx.Client:
    return httpx.Client(base_url=BASE, timeout=30)


def describe(status: Any) -> dict[str, Any]:
    return {"type": type(status).__name__, **dataclasses.asdict(status)}


def http_error(exc: fal_client.FalClientHTTPError) -> dict[str, Any]:
    return {"error": type(exc).__name__, "status_code": exc.status_code,
            "message": exc.message, "error_type": exc.error_type,
            "retry_after": exc.response_headers.get("retry-after")}


def recording_client(key: str) -> tuple[fal_client.SyncClient, list[int]]:
    """A SyncClient whose every HTTP answer's status is recorded (to see SDK retries)."""
    client = fal_client.SyncClient(key=key)
    seen: list[int] = []
    client._client.event_hooks["response"] = [lambda r: seen.append(r.status_code)]
    return client, seen


def case_run() -> dict[str, Any]:
    return {"result": fal_client.run(REMOVE, arguments={"image_url": IMAGE})}


def case_run_sync_mode() -> dict[str, Any]:
    result = fal_client.run(REMOVE, arguments={"image_url": IMAGE, "sync_mode": True})
    url = result["image"]["url"]
    head, _, data = url.partition(",")
    return {"head": head, "png": base64.b64decode(data)[:8].hex(), "image": {
        k: v for k, v in result["image"].items() if k != "url"}}


def case_subscribe() -> dict[str, Any]:
    updates: list[dict[str, Any]] = []
    enqueued: list[str] = []
    result = fal_client.subscribe(REMOVE, arguments={"image_url": IMAGE}, with_logs=True,
                                  on_enqueue=enqueued.append,
                                  on_queue_update=lambda u: updates.append(describe(u)))
    return {"updates": updates, "enqueued": enqueued, "result": result}


def case_submit_status_result() -> dict[str, Any]:
    handle = fal_client.submit(REMOVE, arguments={"image_url": IMAGE})
    first = handle.status()
    second = fal_client.status(REMOVE, handle.request_id, with_logs=True)
    result = fal_client.result(REMOVE, handle.request_id)
    return {"request_id": handle.request_id, "status_url": handle.status_url,
            "response_url": handle.response_url, "first": describe(first),
            "second": describe(second), "result": result}


def case_async_client() -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        client = fal_client.AsyncClient()
        handle = await client.submit(REMOVE, arguments={"image_url": IMAGE})
        events = [describe(e) async for e in handle.iter_events(with_logs=True,
                                                                 interval=0.05)]
        queued_result = await handle.get()
        run_result = await client.run(REMOVE, arguments={"image_url": IMAGE})
        return {"events": events, "queued": queued_result, "run": run_result}

    return asyncio.run(main())


def case_replace() -> dict[str, Any]:
    return {"result": fal_client.subscribe(REPLACE, arguments={
        "image_url": IMAGE, "prompt": "a quiet beach", "num_images": 2, "seed": 5})}


def case_cancel() -> dict[str, Any]:
    handle = fal_client.submit(REMOVE, arguments={"image_url": IMAGE})
    handle.cancel()
    status = handle.status(with_logs=True)
    try:
        handle.get()
    except fal_client.FalClientHTTPError as exc:
        return {"status": describe(status), "get": http_error(exc)}
    return {"status": describe(status), "get": "no error"}


def case_upload_then_run() -> dict[str, Any]:
    import fal_client.client as sdk

    sdk.REST_URL = f"{BASE}/rest"
    sdk.CDN_URL = f"{BASE}/cdn"
    with admin() as http, tempfile.TemporaryDirectory() as tmp:
        photo = http.get(IMAGE).content
        path = Path(tmp) / "cat.jpg"
        path.write_bytes(photo)
        access_url = fal_client.upload_file(path)
        served = http.get(access_url).content
    result = fal_client.run(REMOVE, arguments={"image_url": access_url})
    return {"access_url": access_url, "same_bytes": served == photo, "result": result}


def case_payment_required() -> dict[str, Any]:
    with admin() as http:
        http.put("/_emulator/keys/sdk-broke", json={"balance_usd": 0}).raise_for_status()
    client, seen = recording_client("sdk-broke")
    try:
        client.run(REMOVE, arguments={"image_url": IMAGE})
    except fal_client.FalClientHTTPError as exc:
        return {**http_error(exc), "statuses": seen}
    return {"statuses": seen}


def case_rate_limited_then_retried() -> dict[str, Any]:
    """The key's one token goes to a plain submit; the SDK's run then meets 429 and retries."""
    with admin() as http:
        http.put("/_emulator/keys/sdk-limited",
                 json={"rps": 0.5, "burst": 1}).raise_for_status()
        first = http.post(f"/queue/{REMOVE}", json={"image_url": IMAGE},
                          headers={"Authorization": "Key sdk-limited"})
    client, seen = recording_client("sdk-limited")
    result = client.run(REMOVE, arguments={"image_url": IMAGE})
    return {"first": first.status_code, "statuses": seen, "width": result["image"]["width"]}


def case_rate_limited_exhausted() -> dict[str, Any]:
    import fal_client.client as sdk

    with admin() as http:
        http.put("/_emulator/keys/sdk-flood",
                 json={"rps": 0.001, "burst": 1}).raise_for_status()
    client, seen = recording_client("sdk-flood")
    client.run(REMOVE, arguments={"image_url": IMAGE})
    saved, sdk.MAX_ATTEMPTS = sdk.MAX_ATTEMPTS, 3
    try:
        client.run(REMOVE, arguments={"image_url": IMAGE})
    except fal_client.FalClientHTTPError as exc:
        return {**http_error(exc), "statuses": seen}
    finally:
        sdk.MAX_ATTEMPTS = saved
    return {"statuses": seen}


def case_validation_error() -> dict[str, Any]:
    try:
        fal_client.run(REMOVE, arguments={"sync_mode": True})
    except fal_client.FalClientHTTPError as exc:
        return http_error(exc)
    return {"error": None}


def case_model_error() -> dict[str, Any]:
    try:
        fal_client.run(REMOVE, arguments={"image_url": "https://127.0.0.1:1/cat.png"})
    except fal_client.FalClientHTTPError as exc:
        return http_error(exc)
    return {"error": None}


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    name[len("case_"):]: fn for name, fn in sorted(globals().items())
    if name.startswith("case_") and callable(fn)
}


def main() -> int:
    results: dict[str, Any] = {}
    for name, case in CASES.items():
        try:
            results[name] = case()
        except Exception as exc:  # one case's crash must not hide the others
            results[name] = {"crash": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc()}
    sys.stdout.write(json.dumps(results, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
