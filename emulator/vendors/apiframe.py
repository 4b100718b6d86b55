"""Apiframe: Bria background removal on ``api.apiframe.ai`` (v2). Facts from
``docs/vendors/apiframe.md`` (Apiframe's page for
https://api.apiframe.ai/v2/images/background-remove, and its SDK).

* ``POST /v2/images/background-remove`` with ``X-API-Key`` and ``{"model": "bria-bg-remove",
  "briaBgRemoveParams": {"image": URL, "content_moderation": bool}, "webhook_url"?}`` -> 202
  ``{jobId, status: "QUEUED"}``.
* ``GET /v2/jobs/{id}`` -> the job; at ``COMPLETED`` its ``result`` holds the output URLs.
  The page says only that "the result field then holds the output URL(s)"; the emulator
  answers ``result: {"images": [url]}`` (see ``contracts/apiframe.yaml``).
* Error bodies are always JSON ``{message, code}``: Apiframe's SDK reads them and crashes on a
  non-JSON body (docs/vendors/apiframe.md, Errors).
* ``content_moderation`` is accepted and recorded; the emulator has no NSFW detector.
* ``prompt`` (a common field of every Apiframe model, docs/vendors/apiframe.md FAQ) must be a string
  when given; background removal ignores it.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from emulator.core.ids import iso_ms
from emulator.core.inputs import parse_source
from emulator.core.jobs import Job, JobStatus, Task
from emulator.core.webhooks import WebhookMessage
from emulator.errors import EmulatorError, InvalidInput, ValidationFailed
from emulator.vendors.base import HostSpec, KeyHeader, VendorAdapter

MODEL = "bria-bg-remove"
PARAMS_KEY = "briaBgRemoveParams"

STATUS_WORDS: dict[JobStatus, str] = {
    JobStatus.QUEUED: "QUEUED",
    JobStatus.PROCESSING: "PROCESSING",
    JobStatus.SUCCEEDED: "COMPLETED",
    JobStatus.FAILED: "FAILED",
    JobStatus.ERROR: "FAILED",
    JobStatus.CANCELLED: "FAILED",
}

ERROR_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    402: "INSUFFICIENT_CREDITS",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


class ApiframeAdapter(VendorAdapter):
    """Apiframe's v2 API for ``bria-bg-remove``."""

    slug = "apiframe"
    title = "Apiframe"
    hosts = (HostSpec("api.apiframe.ai", ""),)
    source = "docs/vendors/apiframe.md"
    status_words = STATUS_WORDS
    job_not_found = "Job {id} not found"
    #: ``X-API-Key`` (docs/vendors/apiframe.md, Quick start)
    key_header = KeyHeader("x-api-key", missing="Missing API key")

    def routes(self) -> dict[str, list[BaseRoute]]:
        """Submit and job lookup."""
        return {"api": [
            self.route("/v2/images/background-remove", self.submit, methods=["POST"],
                       operation="submit"),
            self.route("/v2/jobs/{job_id}", self.status, methods=["GET"], operation="status",
                       final_read="job_id"),
        ]}

    def render_error(self, exc: EmulatorError) -> Response:
        """``{"message", "code"}``, always JSON (docs/vendors/apiframe.md, Errors)."""
        code = exc.code.upper() if exc.code == "invalid_model" else ERROR_CODES.get(
            exc.status, "ERROR")
        body: dict[str, Any] = {"message": exc.message, "code": code}
        if exc.field:
            body["field"] = exc.field
        return self.json(body, status=exc.status)

    async def submit(self, request: Request) -> Response:
        """Validate the body and queue the job: 202 ``{jobId, status}``."""
        key = self.api_key(request)
        body = await self.json_object(request)
        model = body.get("model")
        if model != MODEL:
            raise InvalidInput(
                f"model must be {MODEL!r} for this endpoint, got {model!r}",
                field="model", code="invalid_model",
            )
        params = body.get(PARAMS_KEY)
        if not isinstance(params, dict):
            raise ValidationFailed(
                f"{PARAMS_KEY} must be an object with an image URL", field=PARAMS_KEY)
        if "image" not in params or params["image"] is None:
            raise ValidationFailed(f"{PARAMS_KEY}.image is required", field=f"{PARAMS_KEY}.image")
        if not isinstance(params["image"], str):
            raise ValidationFailed(f"{PARAMS_KEY}.image must be a string (URL)",
                                   field=f"{PARAMS_KEY}.image")
        moderation = params.get("content_moderation", True)
        if not isinstance(moderation, bool):
            raise ValidationFailed(f"{PARAMS_KEY}.content_moderation must be a boolean",
                                   field=f"{PARAMS_KEY}.content_moderation")
        prompt = body.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise ValidationFailed("prompt must be a string", field="prompt")
        webhook = body.get("webhook_url")
        if webhook is not None and not isinstance(webhook, str):
            raise ValidationFailed("webhook_url must be a string (URL)", field="webhook_url")
        try:
            source = parse_source(params["image"], field=f"{PARAMS_KEY}.image")
            if webhook is not None:
                webhook = parse_source(webhook, field="webhook_url").value
        except InvalidInput as exc:
            raise ValidationFailed(exc.message, field=exc.field) from None
        metadata: dict[str, Any] = {"content_moderation": moderation}
        if webhook:
            metadata["webhook_url"] = webhook
        job = self.submit_job(
            request, job_id=str(uuid.uuid4()), operation="submit", api_key=key,
            task=Task("remove", (source,)), metadata=metadata, watch=bool(webhook))
        return self.json({"jobId": job.id, "status": STATUS_WORDS[job.status]}, status=202)

    async def status(self, request: Request) -> Response:
        """``GET /v2/jobs/{id}``."""
        job = self.caller_job(request, request.path_params["job_id"])
        await self.port.jobs.observe(job)
        return self.json(self.render_job(job, self.file_urls(request, job)))

    def webhook(self, job: Job) -> WebhookMessage | None:
        """POST of the final job (the ``GET /v2/jobs/{id}`` body) to ``webhook_url``.

        docs/vendors/apiframe.md documents ``webhook_url`` but no signature and no retries: one
        attempt.
        """
        url = job.metadata.get("webhook_url")
        if not url:
            return None
        return self.unsigned_webhook(
            url, self.render_job(job, self.file_urls_at(job.origin, job)))

    def render_job(self, job: Job, urls: list[str]) -> dict[str, Any]:
        """The job body; also the webhook payload."""
        status = self.status_word(job)
        return {
            "jobId": job.id,
            "model": MODEL,
            "status": status,
            "result": {"images": urls} if job.status is JobStatus.SUCCEEDED else None,
            "error": job.error if status == "FAILED" else None,
            "createdAt": iso_ms(job.created_at),
            "updatedAt": iso_ms(job.updated_at),
            "completedAt": iso_ms(job.completed_at),
        }
