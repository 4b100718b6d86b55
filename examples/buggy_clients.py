"""Pixazo clients with exactly one bug each, for the acceptance of the property-based client
checks (``benchmarks/fuzz_acceptance.py``, ``tests/test_client_variations.py``).

:func:`remove_background` is a careful client: it honours ``Retry-After``, backs off on 5xx
and dropped connections, polls every :data:`POLL_S` seconds, knows every status word of
Pixazo's contract (``QUEUED``, ``PROCESSING``, ``COMPLETED``, ``FAILED``, ``ERROR``), reads
only the fields it needs, gives up before its deadline and checks the PNG it saves. Each bug
(:data:`BUGS`) takes one of those away:

* ``ignores-retry-after``: retries a 429 after 0.1 s, whatever ``Retry-After`` says;
* ``unknown-word``: knows ``COMPLETED`` and ``FAILED`` only, and polls on through any other
  word (Pixazo's ``ERROR``: it loops past its deadline, until it is killed, or gives up at
  twice the deadline);
* ``accepts-truncated-png``: saves the result without looking at it;
* ``strict-fields``: reads answers into a closed record that refuses a field it does not
  know (as a model with ``extra="forbid"``): an added field crashes it;
* ``webhook-only`` (webhook mode): waits for the callback and never polls, so a callback
  that is dropped (or held back) leaves it waiting until it gives up.

With ``webhook=True`` (``--webhook`` on the command line; implied by ``webhook-only``) the
client asks for a callback (``X-Webhook-URL``, to a receiver it runs on 127.0.0.1 on a free
port, as it would in production), waits :data:`WEBHOOK_WAIT_S` for it, then reads the status
(Pixazo signs nothing, so the callback is a hint; polling is the truth).

As a command::

    rmbg-emulator fuzz-client pixazo --examples 50 -- \
        python examples/buggy_clients.py BUG [--webhook]

(``BUG`` one of :data:`BUGS`, or ``none`` for the careful client) it reads ``EMULATOR_URL``,
``EMULATOR_API_KEY``, ``EMULATOR_IMAGE_URL``, ``EMULATOR_OUTPUT`` and ``EMULATOR_DEADLINE``
and exits 0 when it claims success, 1 otherwise.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

#: Pixazo's submit path (vendor docs: "BRIA RMBG 2.0 generate request").
SUBMIT_PATH = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"
#: The bugs, one per client.
BUGS = ("ignores-retry-after", "unknown-word", "accepts-truncated-png", "strict-fields",
        "webhook-only")
#: Seconds the webhook mode waits for the callback before it polls.
WEBHOOK_WAIT_S = 2.0
#: Seconds between status reads; tries per request.
POLL_S = 0.25
TRIES = 6
#: The fields of Pixazo's answers the strict client knows (contracts/pixazo.yaml).
KNOWN_FIELDS = frozenset({"request_id", "status", "model_id", "error", "output", "created_at",
                          "updated_at", "completed_at", "polling_url", "media_url",
                          "media_type", "statusCode", "message", "title"})


class ClientError(Exception):
    """The removal failed (the message says why)."""


def _strict(value: Any) -> None:
    if isinstance(value, dict):
        unknown = sorted(set(value) - KNOWN_FIELDS)
        if unknown:
            raise KeyError(f"unexpected field {unknown[0]!r}")  # the strict-fields bug
        for item in value.values():
            _strict(item)
    elif isinstance(value, list):
        for item in value:
            _strict(item)


class Client:
    """The careful client with ``bug`` (one of :data:`BUGS`, or ``None``)."""

    def __init__(self, base_url: str, api_key: str, *, bug: str | None = None,
                 deadline_s: float = 30.0, webhook: bool = False) -> None:
        if bug is not None and bug not in BUGS:
            raise ValueError(f"unknown bug {bug!r}; known: {', '.join(BUGS)}")
        self.bug = bug
        self.webhook = webhook or bug == "webhook-only"
        self.deadline_s = deadline_s
        self.ends_at = time.monotonic() + deadline_s * 0.8
        self.http = httpx.Client(base_url=base_url, timeout=max(1.0, deadline_s / 3), headers={
            "Ocp-Apim-Subscription-Key": api_key, "Cache-Control": "no-cache"})

    def _sleep(self, seconds: float) -> None:
        # The unknown-word bug polls on past the deadline (it stops at twice the deadline,
        # so a run left behind by a test does not poll for ever).
        ends_at = self.ends_at + (self.deadline_s * 1.2 if self.bug == "unknown-word" else 0)
        if time.monotonic() + seconds > ends_at:
            raise ClientError("gave up: the deadline is near")
        time.sleep(seconds)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """``method url``, retried on 429 (after ``Retry-After``), 5xx and dropped
        connections, :data:`TRIES` times; raises :class:`ClientError` on anything else."""
        for attempt in range(TRIES):
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                self._sleep(0.5 * 2 ** attempt)
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code == 429:
                wait = float(response.headers.get("retry-after", "1"))
                self._sleep(0.1 if self.bug == "ignores-retry-after" else wait)
                last = "HTTP 429"
                continue
            if response.status_code >= 500:
                self._sleep(0.5 * 2 ** attempt)
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise ClientError(f"HTTP {response.status_code}: {response.text[:200]}")
            return response
        raise ClientError(f"{method} {url}: still failing after {TRIES} tries ({last})")

    def json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON object of a request (retried as :meth:`request`; a broken body is
        read again, for a status read)."""
        for _ in range(TRIES):
            try:
                body = self.request(method, url, **kwargs).json()
            except ValueError:
                if method != "GET":
                    raise ClientError("the submit's answer is not JSON") from None
                self._sleep(POLL_S)
                continue
            if not isinstance(body, dict):
                raise ClientError("the answer is not a JSON object")
            if self.bug == "strict-fields":
                _strict(body)
            return body
        raise ClientError(f"{url}: no JSON after {TRIES} tries")

    def remove(self, image_url: str, output: Path) -> None:
        """Cut out ``image_url`` and write the PNG to ``output``.

        Raises:
            ClientError: the job failed, the deadline came, or the result is broken.
        """
        receiver = Receiver() if self.webhook else None
        try:
            headers = {} if receiver is None else {"X-Webhook-URL": receiver.url}
            accepted = self.json("POST", SUBMIT_PATH, json={"image_url": image_url},
                                 headers=headers)
            called = None
            if receiver is not None:
                wait = (self.ends_at - time.monotonic() if self.bug == "webhook-only"
                        else WEBHOOK_WAIT_S)
                called = receiver.wait(str(accepted["request_id"]), max(0.0, wait))
                if self.bug == "webhook-only" and called is None:
                    raise ClientError("no webhook came")
        finally:
            if receiver is not None:
                receiver.close()
        status = called if self.bug == "webhook-only" and called is not None else \
            self._poll(str(accepted["polling_url"]))
        urls = (status.get("output") or {}).get("media_url") or []
        if status.get("status") != "COMPLETED" or not urls:
            raise ClientError(f"the job ended {status.get('status')} without a media_url")
        data = self.request("GET", str(urls[0])).content
        if self.bug != "accepts-truncated-png":
            _check_png(data)
        output.write_bytes(data)

    def _poll(self, polling_url: str) -> dict[str, Any]:
        failures = ("FAILED",) if self.bug == "unknown-word" else ("FAILED", "ERROR")
        while True:
            status = self.json("GET", polling_url)
            word = status.get("status")
            if word == "COMPLETED":
                return status
            if word in failures:
                raise ClientError(f"the job ended {word}: {status.get('error')}")
            self._sleep(POLL_S)


class Receiver:
    """A callback receiver on 127.0.0.1 (a free port): keeps the first JSON body per
    ``request_id`` (later deliveries are duplicates), answers 200."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: dict[str, dict[str, Any]] = {}
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.end_headers()
                try:
                    body = json.loads(raw)
                except ValueError:
                    return
                if isinstance(body, dict):
                    with receiver.arrived:
                        receiver.bodies.setdefault(str(body.get("request_id")), body)
                        receiver.arrived.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, request_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The callback body of ``request_id``, or ``None`` after ``timeout_s`` seconds."""
        with self.arrived:
            self.arrived.wait_for(lambda: request_id in self.bodies, timeout_s)
            return self.bodies.get(request_id)

    def close(self) -> None:
        """Stop the receiver."""
        self.server.shutdown()
        self.server.server_close()


def _check_png(data: bytes) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.format != "PNG" or "A" not in img.getbands():
                raise ClientError("the result is not a PNG with alpha")
            if img.getchannel("A").getextrema()[1] == 0:
                raise ClientError("the result's alpha is 0 everywhere")
    except (OSError, SyntaxError) as exc:
        raise ClientError(f"the result is not a readable PNG ({exc})") from None


def remover(bug: str | None, deadline_s: float = 30.0, *, webhook: bool = False) -> Any:
    """The client with ``bug`` as a ``client_properties`` function
    ``(base_url, api_key, image_url, output_path) -> bool``."""
    def remove(base_url: str, api_key: str, image_url: str, output_path: Path) -> bool:
        client = Client(base_url, api_key, bug=bug, deadline_s=deadline_s, webhook=webhook)
        try:
            client.remove(image_url, output_path)
        finally:
            client.http.close()
        return True

    return remove


def main(argv: list[str]) -> int:
    """The command-line form (see the module docstring)."""
    bug = next((a for a in argv if not a.startswith("--")), "none")
    env = os.environ
    try:
        client = Client(env["EMULATOR_URL"], env["EMULATOR_API_KEY"],
                        bug=None if bug == "none" else bug,
                        deadline_s=float(env.get("EMULATOR_DEADLINE", "30")),
                        webhook="--webhook" in argv)
        client.remove(env["EMULATOR_IMAGE_URL"], Path(env["EMULATOR_OUTPUT"]))
    except (ClientError, KeyError, ValueError) as exc:
        print(f"buggy_clients ({bug}): {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
