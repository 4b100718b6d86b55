"""GMI Cloud: Bria remove-background on its request queue at ``console.gmicloud.ai``.

Facts from ``../shared/vendor-docs/gmicloud.txt`` and NOTES.md; the record's shape (``model``,
``payload``, ``outcome.media_urls[{id, url}]``, integer ``created_at``/``updated_at``/
``queued_at``) and the ``?model_id=`` filter of the list come from GMI's page for another model
on the same request queue (minimax-tts-speech-2.8-hd, docs.gmicloud.ai).

* ``POST /api/v1/ie/requestqueue/apikey/requests`` with ``Authorization: Bearer KEY`` and
  ``{"model": "bria-image-remove-background", "payload": {"image": URL | base64 | data URI}}``
  -> 200 ``{request_id, model, status: "queued", created_at, updated_at, queued_at}``.
* ``GET .../requests`` -> ``{"requests": [record, ...]}``: the caller's requests, newest first,
  ``?model_id=`` filters. The emulator's choice of wrapper key (published clients read
  ``requests``, ``data``, ``items`` or a bare list). Listing is not a status read.
* ``GET .../requests/{request_id}`` -> the record: ``queued`` -> ``processing`` -> ``success``
  (``outcome.media_urls``) or ``failed`` (``error_message``).
* Errors are JSON ``{"error": message}`` (what published GMI clients unwrap); an unknown model
  or a bad payload is a 400.
* Inline image data over 1 KiB is echoed in ``payload`` shortened (the emulator's choice, to
  keep polls cheap).
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from emulator.core.inputs import parse_source
from emulator.core.jobs import Job, JobStatus, Task
from emulator.errors import EmulatorError, InvalidInput
from emulator.vendors.base import HostSpec, VendorAdapter

MODEL = "bria-image-remove-background"
BASE = "/api/v1/ie/requestqueue/apikey/requests"

STATUS_WORDS: dict[JobStatus, str] = {
    JobStatus.QUEUED: "queued",
    JobStatus.PROCESSING: "processing",
    JobStatus.SUCCEEDED: "success",
    JobStatus.FAILED: "failed",
    JobStatus.ERROR: "failed",
    JobStatus.CANCELLED: "cancelled",
}

ECHO_LIMIT = 1024


def _unix(ts: float | None) -> int | None:
    return None if ts is None else int(ts)


class GmiCloudAdapter(VendorAdapter):
    """GMI Cloud's request queue, API-key routes."""

    slug = "gmicloud"
    title = "GMI Cloud"
    hosts = (HostSpec("console.gmicloud.ai", ""),)
    source = "../shared/vendor-docs/gmicloud.txt"
    job_not_found = "request {id} not found"

    def routes(self) -> dict[str, list[BaseRoute]]:
        """Submit, list and get, on the console host."""
        return {"api": [
            self.route(BASE, self.submit, methods=["POST"], operation="submit"),
            self.route(BASE, self.list_requests, methods=["GET"], operation="list"),
            self.route(BASE + "/{request_id}", self.status, methods=["GET"],
                       operation="status"),
        ]}

    def api_key(self, request: Request) -> str:
        """``Authorization: Bearer KEY`` (gmicloud.txt, API Endpoint & Authentication)."""
        header = request.headers.get("authorization")
        if header is None or not header.strip():
            return self.check_key(None, message="missing Authorization header")
        scheme, _, key = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return self.check_key(None, message="Authorization must be 'Bearer <API key>'")
        return self.check_key(key, message="missing API key after 'Bearer'")

    def render_error(self, exc: EmulatorError) -> Response:
        """``{"error": message}``; a 422 is answered as GMI's 400."""
        status = 400 if exc.status == 422 else exc.status
        message = exc.message
        if status == 402:
            message = f"insufficient balance: {exc.message}"
        return self.json({"error": message}, status=status)

    async def submit(self, request: Request) -> Response:
        """Queue a background removal; 200 with the new request record."""
        key = self.api_key(request)
        body = await self.json_object(request)
        model = body.get("model")
        if model != MODEL:
            raise InvalidInput(
                f"model {model!r} is not available on this endpoint; use {MODEL!r}",
                field="model")
        payload = body.get("payload")
        if not isinstance(payload, dict):
            raise InvalidInput("payload must be an object holding the image", field="payload")
        if payload.get("image") is None:
            raise InvalidInput("payload.image is required (URL or base64)",
                               field="payload.image")
        source = parse_source(payload["image"], field="payload.image", allow_base64=True)
        job = self.emulator.jobs.submit(
            job_id=str(uuid.uuid4()), vendor=self.slug, operation="submit", api_key=key,
            task=Task("remove", (source,)), origin=self.origin(request),
            metadata={"payload": self._echo(payload)},
        )
        return self.json({
            "request_id": job.id,
            "model": MODEL,
            "status": STATUS_WORDS[job.status],
            "created_at": _unix(job.created_at),
            "updated_at": _unix(job.updated_at),
            "queued_at": _unix(job.created_at),
        })

    async def list_requests(self, request: Request) -> Response:
        """The caller's requests, newest first (``?model_id=`` filters)."""
        key = self.api_key(request)
        model_id = request.query_params.get("model_id")
        engine = self.emulator.jobs
        if model_id not in (None, "", MODEL):
            return self.json({"requests": []})
        found = sorted(engine.jobs(vendor=self.slug, api_key=key),
                       key=lambda j: j.created_at, reverse=True)
        records = []
        for job in found:
            await engine.refresh(job)
            records.append(self.render_job(job, self.emulator.file_urls(request, job)))
        return self.json({"requests": records})

    async def status(self, request: Request) -> Response:
        """One request record (gmicloud.txt, Checking Request Status)."""
        job = self.caller_job(request, request.path_params["request_id"])
        await self.emulator.jobs.observe(job)
        return self.json(self.render_job(job, self.emulator.file_urls(request, job)))

    def render_job(self, job: Job, urls: list[str]) -> dict[str, Any]:
        """The request record; ``outcome`` is ``{}`` until success."""
        status = STATUS_WORDS[job.status]
        outcome: dict[str, Any] = {}
        if job.status is JobStatus.SUCCEEDED:
            outcome = {"media_urls": [{"id": str(i), "url": url} for i, url in enumerate(urls)]}
        record: dict[str, Any] = {
            "request_id": job.id,
            "model": MODEL,
            "status": status,
            "is_public": False,
            "payload": job.metadata.get("payload", {}),
            "outcome": outcome,
            "created_at": _unix(job.created_at),
            "updated_at": _unix(job.updated_at),
            "queued_at": _unix(job.created_at),
        }
        if job.status in (JobStatus.FAILED, JobStatus.ERROR):
            record["error_message"] = job.error
        return record

    @staticmethod
    def _echo(payload: dict[str, Any]) -> dict[str, Any]:
        echo = dict(payload)
        image = echo.get("image")
        if isinstance(image, str) and len(image) > ECHO_LIMIT and not image.lower().startswith(
                ("http://", "https://")):
            echo["image"] = f"{image[:64]}...({len(image)} characters)"
        return echo
