"""Pixazo: Bria RMBG 2.0 on ``gateway.pixazo.ai``. Facts: ``docs/vendors/pixazo.md``
(Pixazo's page, https://gateway.pixazo.ai/bria-rmbg-2-0-682/v1).

* ``POST /bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request`` with ``Ocp-Apim-Subscription-Key`` and
  ``{"image_url": ...}`` -> 202 ``{request_id, status: "QUEUED", polling_url}``.
* ``GET /v2/requests/status/{request_id}`` -> ``QUEUED`` / ``PROCESSING`` / ``COMPLETED`` /
  ``FAILED`` / ``ERROR`` (ERROR = system error, not charged).
* Errors are ``{"error": ..., "message": ...}`` as the page's queue-system errors; the 402
  body is the page's own, word for word.
* ``X-Webhook-URL`` on submit asks for a callback (kept in the job's metadata).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from emulator.core.ids import iso_ms, uuid7
from emulator.core.inputs import parse_source
from emulator.core.jobs import Job, JobStatus, Task
from emulator.core.webhooks import WebhookMessage
from emulator.errors import EmulatorError, InvalidInput
from emulator.vendors.base import HostSpec, KeyHeader, VendorAdapter

MODEL_ID = "bria-rmbg-2-0-682"

STATUS_WORDS: dict[JobStatus, str] = {
    JobStatus.QUEUED: "QUEUED",
    JobStatus.PROCESSING: "PROCESSING",
    JobStatus.SUCCEEDED: "COMPLETED",
    JobStatus.FAILED: "FAILED",
    JobStatus.ERROR: "ERROR",
    JobStatus.CANCELLED: "FAILED",
}

ERROR_TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Insufficient Balance",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Bad Request",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class PixazoAdapter(VendorAdapter):
    """Pixazo's gateway for Bria RMBG 2.0."""

    slug = "pixazo"
    title = "Pixazo"
    hosts = (HostSpec("gateway.pixazo.ai", ""),)
    source = "docs/vendors/pixazo.md"
    status_words = STATUS_WORDS
    job_not_found = "Request '{id}' not found"
    #: ``Ocp-Apim-Subscription-Key`` (docs/vendors/pixazo.md, Authentication)
    key_header = KeyHeader(
        "ocp-apim-subscription-key",
        missing="Access denied due to missing subscription key. Make sure to include "
                "subscription key when making requests to an API.")

    def routes(self) -> dict[str, list[BaseRoute]]:
        """Submit and the universal status endpoint, on the gateway host."""
        return {"api": [
            self.route(f"/{MODEL_ID}/v1/bria-rmbg-2-0-request", self.submit,
                       methods=["POST"], operation="submit"),
            self.route("/v2/requests/status/{request_id}", self.status,
                       methods=["GET"], operation="status", final_read="request_id"),
        ]}

    def render_error(self, exc: EmulatorError) -> Response:
        """``{"error", "message"}``; 402 is the page's body word for word."""
        status = 400 if exc.status == 422 else exc.status
        if status == 402:
            body = {"error": "Insufficient Balance",
                    "message": "Your wallet does not have enough balance."}
        else:
            body = {"error": ERROR_TITLES.get(status, "Error"), "message": exc.message}
        return self.json(body, status=status)

    async def submit(self, request: Request) -> Response:
        """Queue a background removal; 202 with the request id and an absolute polling URL."""
        key = self.api_key(request)
        body = await self.json_object(request)
        if "image_url" not in body:
            raise InvalidInput("image_url is required", field="image_url")
        source = parse_source(body["image_url"], field="image_url")
        metadata: dict[str, Any] = {}
        webhook = request.headers.get("x-webhook-url")
        if webhook is not None:
            metadata["webhook_url"] = parse_source(webhook, field="X-Webhook-URL").value
        engine = self.port.jobs
        request_id = f"{MODEL_ID}_{uuid7(engine.clock.now())}"
        job = self.submit_job(
            request, job_id=request_id, operation="submit", api_key=key,
            task=Task("remove", (source,)), metadata=metadata, watch=webhook is not None)
        return self.json({
            "request_id": job.id,
            "status": STATUS_WORDS[job.status],
            "polling_url": self.public_url(request, f"/v2/requests/status/{job.id}"),
        }, status=202)

    async def status(self, request: Request) -> Response:
        """The universal status endpoint (docs/vendors/pixazo.md, Retrieving Results)."""
        job = self.caller_job(request, request.path_params["request_id"])
        await self.port.jobs.observe(job)
        return self.json(self.render_job(job, self.file_urls(request, job)))

    def webhook(self, job: Job) -> WebhookMessage | None:
        """POST of the status body to ``X-Webhook-URL`` at COMPLETED, FAILED or ERROR.

        docs/vendors/pixazo.md documents the header and that the callback replaces polling, but no
        signature and no retries: one attempt, unsigned.
        """
        url = job.metadata.get("webhook_url")
        if not url:
            return None
        return self.unsigned_webhook(
            url, self.render_job(job, self.file_urls_at(job.origin, job)))

    def render_job(self, job: Job, urls: list[str]) -> dict[str, Any]:
        """The status body; also the webhook payload (docs/vendors/pixazo.md, Webhook)."""
        status = self.status_word(job)
        output = None
        if job.status is JobStatus.SUCCEEDED:
            output = {"media_url": urls, "media_type": "image/png"}
        return {
            "request_id": job.id,
            "status": status,
            "model_id": MODEL_ID,
            "error": job.error if job.status.terminal and status != "COMPLETED" else None,
            "output": output,
            "created_at": iso_ms(job.created_at),
            "updated_at": iso_ms(job.updated_at),
            "completed_at": iso_ms(job.completed_at),
        }
