"""Runflow: Bria background remove on ``api.runflow.io``. Facts from
``docs/vendors/runflow.md`` (Runflow's page and run-lifecycle docs, https://docs.runflow.io/).

* ``POST /v1/models/bria/background/remove/runs`` with ``Authorization: Bearer KEY`` and
  ``{"input": {"image_url", "sync_mode"}, "callback_url"?, "metadata"?}`` -> 201 run object
  (``id``). ``callback_url`` and ``metadata`` are validated and kept in the job's metadata.
* ``GET /v1/runs/{id}``: ``status_code`` ``queued`` -> ``dispatching`` -> ``running`` ->
  ``succeeded`` | ``failed`` | ``cancelled``. The first read that finds the run in progress
  shows ``dispatching``, later ones ``running``.
* A finished run has ``output`` ``{outputs: [{url, type, width, height, content_type,
  file_size}], nsfw_detected, seed, timing: {inference_ms}}``, ``cost`` (a string in USD,
  ``"0.018"`` on success, ``"0"`` otherwise), ``duration_ms``, and on failure
  ``failure_code``/``failure_message``. ``nsfw_detected`` is ``null`` (not checked: the
  emulator has no detector) and ``seed`` ``null`` (the model takes none).
* ``input.sync_mode: true``: the reply waits for the run to end and carries it, its output a
  ``data:image/png;base64,...`` URI. The wait is bounded by ``Settings.max_wait_s``: past it
  the reply is 504 ``{"detail": str}`` (docs/vendors/runflow.md documents no time-out; the run
  goes on and can be polled).
* Errors: 401 (bad or missing key), 402 (out of credits), 404, 429 with ``{"detail": str}``;
  422 with ``{"detail": [{loc, msg, type}]}`` for validation errors, malformed JSON included.
* Timestamps are ISO 8601 (as in the callback payload).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from emulator.core.billing import usd_text
from emulator.core.ids import iso_ms
from emulator.core.inputs import FETCH_FAILED, parse_source
from emulator.core.jobs import Job, JobStatus, Task
from emulator.core.webhooks import RetryPolicy, WebhookMessage
from emulator.errors import EmulatorError, InvalidInput, ValidationFailed
from emulator.vendors.base import HostSpec, KeyHeader, VendorAdapter

MODEL = "bria/background/remove"

STATUS_WORDS: dict[JobStatus, str] = {
    JobStatus.QUEUED: "queued",
    JobStatus.PROCESSING: "running",
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.ERROR: "failed",
    JobStatus.CANCELLED: "cancelled",
}

#: ``failure_code`` for the core's failure codes (the emulator's own names).
FAILURE_CODES: dict[str, str] = {
    FETCH_FAILED: "input_fetch_failed",
    "system_error": "internal_error",
    "forced_failure": "provider_error",
}

#: job.metadata key: the status read that first showed the run in progress.
_DISPATCH_READ = "dispatch_read"


class RunflowAdapter(VendorAdapter):
    """Runflow's runs API for ``bria/background/remove``."""

    slug = "runflow"
    title = "Runflow"
    hosts = (HostSpec("api.runflow.io", ""),)
    source = "docs/vendors/runflow.md"
    status_words = STATUS_WORDS
    other_words = {"dispatching": JobStatus.PROCESSING,
                   "partial_succeeded": JobStatus.SUCCEEDED}  # docs/vendors/runflow.md
    job_not_found = "Run {id} not found"
    #: ``Authorization: Bearer KEY`` (docs/vendors/runflow.md, Run the model), the scheme
    #: word case-insensitive
    key_header = KeyHeader(
        "authorization", scheme="Bearer",
        missing="Missing API key: send 'Authorization: Bearer <RUNFLOW_API_KEY>'",
        wrong_scheme="Authorization must be 'Bearer <API key>'",
        empty="Missing API key after 'Bearer'")

    def routes(self) -> dict[str, list[BaseRoute]]:
        """Create a run; read a run."""
        return {"api": [
            self.route(f"/v1/models/{MODEL}/runs", self.create_run, methods=["POST"],
                       operation="submit"),
            self.route("/v1/runs/{run_id}", self.get_run, methods=["GET"], operation="status",
                       final_read="run_id"),
            self.route("/v1/callback-secrets", self.create_secret, methods=["POST"],
                       operation="callback_secret"),
        ]}

    def render_error(self, exc: EmulatorError) -> Response:
        """``{"detail": str}``; validation errors 422 ``{"detail": [{loc, msg, type}]}``."""
        if isinstance(exc, InvalidInput) and exc.status in (400, 422):
            loc: list[str] = ["body", *exc.field.split(".")] if exc.field else ["body"]
            return self.json({"detail": [{"loc": loc, "msg": exc.message,
                                          "type": "value_error"}]}, status=422)
        message = exc.message
        if exc.status == 402:
            message = f"Insufficient credits: {exc.message}"
        return self.json({"detail": message}, status=exc.status)

    async def create_run(self, request: Request) -> Response:
        """201 with the run; with ``sync_mode`` the run has ended by then."""
        key = self.api_key(request)
        body = await self.json_object(request)
        payload = body.get("input")
        if not isinstance(payload, dict):
            raise ValidationFailed("input must be an object with image_url", field="input")
        if payload.get("image_url") is None:
            raise ValidationFailed("Field required", field="input.image_url")
        source = parse_source(payload["image_url"], field="input.image_url")
        sync_mode = payload.get("sync_mode", False)
        if not isinstance(sync_mode, bool):  # null too: the page types it boolean, not "| null"
            raise ValidationFailed("Input should be a valid boolean", field="input.sync_mode")
        callback = body.get("callback_url")
        if callback is not None:
            if not isinstance(callback, str):
                raise ValidationFailed("callback_url must be a string or null",
                                       field="callback_url")
            callback = parse_source(callback, field="callback_url")
            if callback.kind != "url":
                raise ValidationFailed("callback_url must be an http(s) URL",
                                       field="callback_url")
            callback = callback.value
        user_metadata = body.get("metadata")
        if user_metadata is not None and not isinstance(user_metadata, dict):
            raise ValidationFailed("metadata must be an object or null", field="metadata")
        echo = dict(payload)
        if source.kind != "url":
            echo["image_url"] = source.describe()
        engine = self.port.jobs
        job = self.submit_job(
            request, job_id=str(uuid.uuid4()), operation="submit", api_key=key,
            task=Task("remove", (source,)),
            metadata={"input": echo, "sync_mode": sync_mode, "callback_url": callback,
                      "metadata": user_metadata},
            watch=callback is not None)
        if sync_mode:
            await engine.finish(job)
        return await self._respond(request, job, status=201)

    async def create_secret(self, request: Request) -> Response:
        """``POST /v1/callback-secrets {label}`` -> 201 ``{id, label, plain_secret}``, the secret
        shown this once; from then on callbacks carry ``Runflow-Signature``
        (docs/vendors/runflow.md)."""
        key = self.api_key(request)
        body = await self.json_object(request)
        label = body.get("label", "")
        if not isinstance(label, str):
            raise ValidationFailed("label must be a string", field="label")
        secret = self.port.secrets.create(self.slug, key, label,
                                              self.port.clock.now())
        return self.json({"id": secret.id, "label": secret.label,
                          "plain_secret": secret.value,
                          "created_at": iso_ms(secret.created_at)}, status=201)

    def webhook(self, job: Job) -> WebhookMessage | None:
        """The callback to ``callback_url`` at a terminal status (docs/vendors/runflow.md,
        Callback payload).

        Body ``{event, run_id, status, output, duration_ms, created_at, completed_at,
        metadata}``; ``Runflow-Request-Id`` always; ``Runflow-Signature`` (hex HMAC-SHA256 of the
        raw body with the key's newest callback secret) once a secret exists. Retries: 3
        attempts, 1 s then 2 s, on 5xx and network errors only.
        """
        url = job.metadata.get("callback_url")
        if not url:
            return None
        settings = self.port.settings
        origin = job.origin or f"http://{settings.host}:{settings.port}"
        run = self.render_run(job, self.file_urls_at(origin, job))
        status = run["status_code"]
        event = {"succeeded": "run.completed", "cancelled": "run.cancelled"}.get(
            status, "run.failed")
        raw = self.json_bytes({
            "event": event, "run_id": job.id, "status": status, "output": run["output"],
            "duration_ms": job.duration_ms, "created_at": iso_ms(job.created_at),
            "completed_at": iso_ms(job.completed_at), "metadata": job.metadata.get("metadata"),
        })
        headers = {"Runflow-Request-Id": f"req_{uuid.uuid4().hex}"}
        secret = self.port.secrets.current(self.slug, job.api_key)
        if secret is not None:
            headers["Runflow-Signature"] = hmac.new(secret.value.encode(), raw,
                                                    hashlib.sha256).hexdigest()
        return WebhookMessage(url=url, body=raw, headers=headers,
                              policy=RetryPolicy(delays_s=(1.0, 2.0), timeout_s=15.0,
                                                 source=self.source))

    async def get_run(self, request: Request) -> Response:
        """``GET /v1/runs/{id}``."""
        job = self.caller_job(request, request.path_params["run_id"])
        await self.port.jobs.observe(job)
        return await self._respond(request, job)

    async def _respond(self, request: Request, job: Job, status: int = 200) -> Response:
        if job.metadata.get("sync_mode") and job.status is JobStatus.SUCCEEDED:
            urls = await self.data_uris(job.outputs)
            return await self.large_json(self.render_run(job, urls), status=status)
        return self.json(self.render_run(job, self.file_urls(request, job)),
                         status=status)

    def status_word(self, job: Job) -> str:
        """``status_code`` now: a run in progress first shows ``dispatching``."""
        if job.status is JobStatus.PROCESSING:
            first = job.metadata.setdefault(_DISPATCH_READ, job.status_reads)
            if first == job.status_reads:
                return "dispatching"
        return super().status_word(job)

    def render_run(self, job: Job, urls: list[str]) -> dict[str, Any]:
        """The run object (docs/vendors/runflow.md: Output schema; Runs, errors and callback
        signing)."""
        output = None
        if job.status is JobStatus.SUCCEEDED:
            inference_ms = None
            if job.work_started_at is not None and job.work_ended_at is not None:
                inference_ms = round((job.work_ended_at - job.work_started_at) * 1000)
            output = {
                "outputs": [{"url": url, "type": "image", "content_type": f.content_type,
                             "width": f.width, "height": f.height, "file_size": f.size}
                            for url, f in zip(urls, job.outputs, strict=True)],
                "nsfw_detected": None,
                "seed": None,
                "timing": {"inference_ms": inference_ms},
            }
        failure_code = failure_message = None
        if job.status in (JobStatus.FAILED, JobStatus.ERROR):
            failure_code = FAILURE_CODES.get(job.error_code or "", "invalid_input")
            failure_message = job.error
        elif job.status is JobStatus.CANCELLED:
            failure_code, failure_message = "cancelled", "The run was cancelled"
        return {
            "id": job.id,
            "model": MODEL,
            "status_code": self.status_word(job),
            "input": job.metadata.get("input"),
            "output": output,
            "cost": usd_text(job.charged_usd) if job.status.terminal else None,
            "duration_ms": job.duration_ms,
            "failure_code": failure_code,
            "failure_message": failure_message,
            "callback_url": job.metadata.get("callback_url"),
            "metadata": job.metadata.get("metadata"),
            "created_at": iso_ms(job.created_at),
            "started_at": iso_ms(job.started_at),
            "completed_at": iso_ms(job.completed_at),
        }
