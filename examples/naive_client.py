"""A naive Pixazo client, written the way a quick read of the vendor's page suggests: submit,
loop on the status until ``COMPLETED``, save the first ``media_url``.

It is here to be caught: ``tests/test_client_properties.py`` runs the property-based checks
(:mod:`emulator.testing.clientcheck`) against it and shows which properties it breaks. What
it gets wrong, on purpose:

* it retries at once on any error, ignoring ``Retry-After`` (breaks *honours Retry-After*);
* it polls in a tight loop with no pause (breaks *polls politely* when a job takes a while);
* it never looks at the PNG it saves (breaks *never a false success* on a broken image).

Its loops are capped (10 tries per request, 50 status reads) so a run always ends. Use
``examples/bgremove`` for a client that gets these right. :func:`remove_background_bria` is the
same client for Bria.

As a command (``rmbg-emulator fuzz-client pixazo -- python examples/naive_client.py``) it reads
``EMULATOR_URL``, ``EMULATOR_API_KEY``, ``EMULATOR_IMAGE_URL`` and ``EMULATOR_OUTPUT`` and
exits 0 when it claims success, 1 otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx

#: Pixazo's submit path (docs/vendors/pixazo.md: "BRIA RMBG 2.0 generate request").
SUBMIT_PATH = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"
#: Tries per request and status reads per job before giving up.
MAX_TRIES = 10
MAX_POLLS = 50


def _request(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """The request, retried at once on any error (the naive part); raises the last error."""
    last: Exception | None = None
    for _ in range(MAX_TRIES):
        try:
            response = client.request(method, url, **kwargs)
            if response.status_code < 400:
                return response
            last = httpx.HTTPStatusError(f"HTTP {response.status_code}",
                                         request=response.request, response=response)
        except httpx.HTTPError as exc:
            last = exc
    assert last is not None
    raise last


def remove_background(base_url: str, api_key: str, image_url: str, output_path: Path) -> bool:
    """Cut out ``image_url`` through Pixazo at ``base_url`` and write the PNG to
    ``output_path``.

    Returns:
        True when it wrote a file; False when the job never reached ``COMPLETED``.

    Raises:
        httpx.HTTPError: a request still failed after :data:`MAX_TRIES` tries.
    """
    headers = {"Ocp-Apim-Subscription-Key": api_key, "Cache-Control": "no-cache"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        accepted = _request(client, "POST", SUBMIT_PATH, json={"image_url": image_url}).json()
        polling_url = accepted["polling_url"]
        for _ in range(MAX_POLLS):
            status = _request(client, "GET", polling_url).json()
            if status.get("status") == "COMPLETED":
                media = _request(client, "GET", status["output"]["media_url"][0])
                output_path.write_bytes(media.content)
                return True
        return False


#: Bria's submit path (docs/vendors/bria.md: remove background, v2).
BRIA_SUBMIT_PATH = "/v2/image/edit/remove_background"


def remove_background_bria(base_url: str, api_key: str, image_url: str,
                           output_path: Path) -> bool:
    """The same naive habits against Bria (``api_token`` header, ``status_url``, ``COMPLETED``
    with ``result.image_url``): retries at once, polls in a tight loop, never checks the PNG.

    Returns:
        True when it wrote a file; False when the request never reached ``COMPLETED``.

    Raises:
        httpx.HTTPError: a request still failed after :data:`MAX_TRIES` tries.
    """
    with httpx.Client(base_url=base_url, headers={"api_token": api_key}, timeout=30) as client:
        accepted = _request(client, "POST", BRIA_SUBMIT_PATH, json={"image": image_url}).json()
        for _ in range(MAX_POLLS):
            status = _request(client, "GET", accepted["status_url"]).json()
            if status.get("status") == "COMPLETED":
                media = _request(client, "GET", status["result"]["image_url"])
                output_path.write_bytes(media.content)
                return True
        return False


def main() -> int:
    """The command-line form: the ``EMULATOR_*`` variables in, exit status 0 on a claimed
    success, 1 on a failure (the error printed to stderr)."""
    env = os.environ
    try:
        done = remove_background(env["EMULATOR_URL"], env["EMULATOR_API_KEY"],
                                 env["EMULATOR_IMAGE_URL"], Path(env["EMULATOR_OUTPUT"]))
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        print(f"naive_client: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0 if done else 1


if __name__ == "__main__":
    raise SystemExit(main())
