"""Bria's own platform API (v2) on ``engine.prod.bria-api.com``, the origin of the five
resellers' model. Facts from Bria's public docs (https://docs.bria.ai/ : quickstart, status
service, webhooks) and the published ``bria-client`` SDK (0.3.x), summed up in
``docs/vendors/bria.md``.

* ``POST /v2/image/edit/remove_background`` with header ``api_token: <token>`` and
  ``{"image": URL or base64, "sync"?, "preserve_alpha"?, "visual_input_content_moderation"?,
  "visual_output_content_moderation"?, "webhook_url"?}``:
  - async (default): 202 ``{request_id, status_url}``;
  - ``sync: true``: 200 ``{request_id, result: {image_url}}`` once the job has ended (bounded by
    ``Settings.max_wait_s``: past it 504 with the error shape; the job goes on and can be
    polled); a job that failed answers its error status with the error shape.
* ``GET /v2/status/{request_id}`` -> ``{request_id, status}``: ``IN_PROGRESS`` while queued
  or processing; ``COMPLETED`` with ``result.image_url``; ``ERROR`` with ``error{code,
  message, details}``. An unknown id answers 404 with the error shape, not ``UNKNOWN``:
  ``bria-client``'s async ``poll`` keeps polling on ``UNKNOWN`` until its time-out, while a
  404 error body makes both clients raise ``BriaException(404)`` at once.
* Errors: ``{"request_id"?, "error": {"code": int, "message": str, "details": str}}`` for every
  status (the SDK reads ``code``, ``message`` and ``details``; all three are required).
* ``webhook_url`` on an async call: the final status body is POSTed there, signed with
  ``Bria-Webhook-Id`` (the request id), ``Bria-Webhook-Timestamp`` (unix seconds) and
  ``Bria-Webhook-Signature: v1=<base64 HMAC-SHA256>`` over ``"{id}.{timestamp}.{raw body}"``
  with the key ``HMAC-SHA256(key=api_token, msg="bria-webhook-signing-v1")`` (the SDK's
  ``verify_webhook_signature``).
* ``preserve_alpha`` (default true) and the two moderation flags are checked to be booleans
  and kept in the job's metadata. ``preserve_alpha`` goes to the core's ``remove`` task: an
  input with its own alpha channel keeps its transparency (the output alpha is the matte times
  the input's alpha). No moderation is run (the emulator has no detector), so moderation never
  refuses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from emulator.core.inputs import parse_source
from emulator.core.jobs import Job, JobStatus, Task
from emulator.core.webhooks import RetryPolicy, WebhookMessage
from emulator.errors import EmulatorError, InvalidInput
from emulator.vendors.base import HostSpec, KeyHeader, VendorAdapter

REMOVE_PATH = "/v2/image/edit/remove_background"
STATUS_PATH = "/v2/status/{request_id}"

#: Bria's status service words (docs.bria.ai, Status Service; ``bria_client.toolkit.Status``).
#: ``UNKNOWN`` is in Bria's enum but the emulator never shows it (see the module docstring).
STATUS_WORDS: dict[JobStatus, str] = {
    JobStatus.QUEUED: "IN_PROGRESS",
    JobStatus.PROCESSING: "IN_PROGRESS",
    JobStatus.SUCCEEDED: "COMPLETED",
    JobStatus.FAILED: "ERROR",
    JobStatus.ERROR: "ERROR",
    JobStatus.CANCELLED: "ERROR",
}

#: The salt of the webhook signing key (``bria_client.toolkit.webhook_verification``).
WEBHOOK_SIGNING_SALT = b"bria-webhook-signing-v1"

_FLAGS = ("sync", "preserve_alpha", "visual_input_content_moderation",
          "visual_output_content_moderation")


def signing_key(api_token: str) -> bytes:
    """The webhook signing key of ``api_token``: ``HMAC-SHA256(key=api_token,
    msg="bria-webhook-signing-v1")``, 32 bytes (docs/vendors/bria.md, Webhooks; https://docs.bria.ai/webhooks)."""
    return hmac.new(api_token.encode(), WEBHOOK_SIGNING_SALT, hashlib.sha256).digest()


def sign(api_token: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """``Bria-Webhook-Signature``'s value: ``v1=`` + base64 of HMAC-SHA256 over
    ``"{webhook_id}.{timestamp}.{body}"`` with :func:`signing_key` (docs/vendors/bria.md, Webhooks).

    Raises:
        UnicodeDecodeError: ``body`` is not UTF-8 (JSON bodies always are).
    """
    message = f"{webhook_id}.{timestamp}.{body.decode()}".encode()
    digest = hmac.new(signing_key(api_token), message, hashlib.sha256).digest()
    return "v1=" + base64.b64encode(digest).decode()


def _error_body(code: int, message: str, details: str,
                request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {} if request_id is None else {"request_id": request_id}
    body["error"] = {"code": code, "message": message, "details": details}
    return body


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class BriaAdapter(VendorAdapter):
    """Bria's platform API v2: remove background and the status service."""

    slug = "bria"
    title = "Bria"
    hosts = (HostSpec("engine.prod.bria-api.com", ""),)
    source = "docs/vendors/bria.md"  # https://docs.bria.ai/
    status_words = STATUS_WORDS
    other_words = {"UNKNOWN": JobStatus.PROCESSING}  # Bria's SDK keeps polling on it
    job_not_found = "Request {id} not found"
    #: Header ``api_token`` (docs.bria.ai quickstart; ``BriaEngine.auth_headers``)
    key_header = KeyHeader("api_token", missing="Missing api_token header")

    def routes(self) -> dict[str, list[BaseRoute]]:
        """Remove background (submit) and the status service, on the engine host."""
        return {"api": [
            self.route(REMOVE_PATH, self.submit, methods=["POST"], operation="submit"),
            self.route(STATUS_PATH, self.status, methods=["GET"], operation="status",
                       final_read="request_id"),
        ]}

    def render_error(self, exc: EmulatorError) -> Response:
        """``{"error": {"code", "message", "details"}}`` with the HTTP status as ``code``,
        its reason phrase as ``message`` and what was wrong as ``details``."""
        status = exc.status
        return self.json(_error_body(status, _reason(status), exc.message), status=status)

    async def submit(self, request: Request) -> Response:
        """Remove the background: 202 ``{request_id, status_url}``, or with ``sync: true``
        200 ``{request_id, result: {image_url}}`` once done.

        Raises:
            InvalidInput: (400) ``image`` missing or not a URL/base64/data URI, a flag not
                a boolean, ``webhook_url`` not an http(s) URL (``null`` is refused for each
                optional field: the SDK leaves ``None`` fields out).
        """
        key = self.api_key(request)
        body = await self.json_object(request)
        if body.get("image") is None:
            raise InvalidInput("image is required", field="image")
        source = parse_source(body["image"], field="image", allow_base64=True)
        flags: dict[str, bool] = {}
        for name in _FLAGS:
            value = body.get(name, name == "preserve_alpha")
            if not isinstance(value, bool):
                raise InvalidInput(f"{name} must be a boolean", field=name)
            flags[name] = value
        sync = flags.pop("sync")
        metadata: dict[str, Any] = {**flags, "sync": sync}
        if "webhook_url" in body:
            hook = parse_source(body["webhook_url"], field="webhook_url")
            if hook.kind != "url":
                raise InvalidInput("webhook_url must be an http(s) URL", field="webhook_url")
            if not sync:
                metadata["webhook_url"] = hook.value
        engine = self.port.jobs
        job = self.submit_job(
            request, job_id=uuid.uuid4().hex, operation="submit", api_key=key,
            task=Task("remove", (source,), {"preserve_alpha": flags["preserve_alpha"]}),
            metadata=metadata, watch="webhook_url" in metadata)
        if not sync:
            return self.json({"request_id": job.id,
                              "status_url": self.public_url(request, f"/v2/status/{job.id}")},
                             status=202)
        try:
            await engine.finish(job)
        except EmulatorError as exc:
            return self.json(_error_body(exc.status, _reason(exc.status), exc.message,
                                         job.id), status=exc.status)
        rendered = self.render_job(job, self.file_urls(request, job))
        if job.status is not JobStatus.SUCCEEDED:
            return self.json({"request_id": job.id, "error": rendered["error"]},
                             status=rendered["error"]["code"])
        return self.json({"request_id": job.id, "result": rendered["result"]})

    async def status(self, request: Request) -> Response:
        """The status service (docs.bria.ai, Status Service); 404 for an unknown id."""
        job = self.caller_job(request, request.path_params["request_id"])
        await self.port.jobs.observe(job)
        return self.json(self.render_job(job, self.file_urls(request, job)))

    def webhook(self, job: Job) -> WebhookMessage | None:
        """The final status body POSTed to ``webhook_url``, signed (module docstring).

        Signed at each attempt's time (so a ``stale-timestamp`` fault signs the old time).
        Bria's docs give no retry schedule: one attempt, 15 s time-out.
        """
        url = job.metadata.get("webhook_url")
        if not url:
            return None
        raw = self.json_bytes(self.render_job(job, self.file_urls_at(job.origin, job)))
        token, request_id = job.api_key, job.id

        def signed(payload: bytes, at: float) -> dict[str, str]:
            timestamp = str(int(at))
            return {"Bria-Webhook-Timestamp": timestamp,
                    "Bria-Webhook-Signature": sign(token, request_id, timestamp, payload)}

        return WebhookMessage(url=url, body=raw, headers={"Bria-Webhook-Id": job.id},
                              policy=RetryPolicy(source=self.source), sign=signed)

    def render_job(self, job: Job, urls: list[str]) -> dict[str, Any]:
        """The status body ``{request_id, status, result? | error?}``; also the webhook body."""
        word = self.status_word(job)
        body: dict[str, Any] = {"request_id": job.id, "status": word}
        if job.status is JobStatus.SUCCEEDED:
            body["result"] = {"image_url": urls[0]}
        elif word == "ERROR":
            code = 422 if job.status is JobStatus.FAILED else 500
            body["error"] = _error_body(code, _reason(code),
                                        job.error or "the request failed")["error"]
        return body
