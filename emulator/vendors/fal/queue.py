"""fal.ai run and queue: ``fal.run`` runs a request synchronously; ``queue.fal.run``
queues it, then answers status (and its event stream), result and cancel. Facts from
``docs/vendors/fal.md`` (fal's page and other docs) and ``fal-client`` 1.0.3."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from emulator.core.ids import iso_ms
from emulator.core.inputs import (
    FETCH_FAILED,
    TOO_LARGE,
    TOO_MANY_PIXELS,
    UNREADABLE,
    UNSUPPORTED_FORMAT,
    ImageSource,
    parse_source,
)
from emulator.core.jobs import Job, JobStatus, Task
from emulator.errors import (
    Conflict,
    InvalidInput,
    ValidationFailed,
)
from emulator.vendors.fal.storage import FalStorage

APP = "fal-ai/bria"
ENDPOINTS = ("remove", "replace")
#: USD per replaced image (exact: billing keeps Decimal amounts).
REPLACE_PRICE_USD = Decimal("0.023")
SEED_MAX = 2147483647
MAX_IMAGES = 4

#: A status stream re-reads the status this often (seconds) and ends after this long.
STREAM_INTERVAL_S = 0.1
STREAM_LIMIT_S = 900.0

STATUS_WORDS: dict[JobStatus, str] = {
    JobStatus.QUEUED: "IN_QUEUE",
    JobStatus.PROCESSING: "IN_PROGRESS",
    JobStatus.SUCCEEDED: "COMPLETED",
    JobStatus.FAILED: "COMPLETED",
    JobStatus.ERROR: "COMPLETED",
    JobStatus.CANCELLED: "COMPLETED",
}

#: fal model-error types (docs.fal.ai/errors) for the core's input-image failure codes.
FAILURE_TYPES: dict[str, str] = {
    FETCH_FAILED: "file_download_error",
    TOO_LARGE: "file_too_large",
    TOO_MANY_PIXELS: "image_too_large",
    UNSUPPORTED_FORMAT: "image_load_error",
    UNREADABLE: "image_load_error",
    "input_image_error": "image_load_error",
}


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def _error_url(kind: str) -> str:
    return f"https://docs.fal.ai/errors#{kind}"


class FalQueue(FalStorage):
    """fal's run and queue endpoints and the result bodies they share."""

    # -- inputs -------------------------------------------------------------------------------
    def _parse(self, endpoint: str, body: dict[str, Any]) -> tuple[Task, dict[str, Any],
                                                                    Decimal | None]:
        """Validate a remove/replace input; the task, the job metadata and the price (USD).

        Raises:
            ValidationFailed: a missing or ill-typed field (docs/vendors/fal.md, Input Schema).
            InvalidInput: an image reference that is not an http(s) URL or a data URI.
        """
        if body.get("image_url") is None:
            raise ValidationFailed("Field required", field="image_url", code="missing")
        source = parse_source(body["image_url"], field="image_url")
        sync_mode = _boolean(body, "sync_mode", False)
        metadata: dict[str, Any] = {"endpoint": endpoint, "sync_mode": sync_mode,
                                    "image_url": source.describe()}
        if endpoint == "remove":
            return Task("remove", (source,)), metadata, None
        ref = body.get("ref_image_url", "")
        if not isinstance(ref, str):  # null too: the page gives a string with a default
            raise ValidationFailed("Input should be a valid string", field="ref_image_url",
                                   code="string_type")
        prompt = body.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise ValidationFailed("Input should be a valid string", field="prompt",
                                   code="string_type")
        if not isinstance(body.get("negative_prompt", ""), str):
            raise ValidationFailed("Input should be a valid string", field="negative_prompt",
                                   code="string_type")
        _boolean(body, "refine_prompt", True)
        _boolean(body, "fast", True)
        count = _integer(body, "num_images", 1, 1, MAX_IMAGES)
        seed_value = body.get("seed")
        seed = (secrets.randbelow(SEED_MAX + 1) if seed_value is None
                else _integer(body, "seed", 0, 0, SEED_MAX))
        sources: tuple[ImageSource, ...]
        if ref.strip():
            sources = (source, parse_source(ref, field="ref_image_url"))
        elif prompt and prompt.strip():
            sources = (source,)
        else:
            raise ValidationFailed("Either ref_image_url or prompt has to be provided",
                                   field="prompt", code="missing")
        metadata["seed"] = seed
        params = {"prompt": prompt or "", "seed": seed, "num_images": count}
        return Task("replace", sources, params), metadata, REPLACE_PRICE_USD * count

    # -- fal.run ------------------------------------------------------------------------------
    async def run_sync(self, request: Request, endpoint: str) -> Response:
        """Run a request and answer with its result (fal.run)."""
        key = self.api_key(request)
        body = await self.json_object(request)
        task, metadata, price = self._parse(endpoint, body)
        engine = self.port.jobs
        job = self.submit_job(request, job_id=str(uuid.uuid4()), operation="run", api_key=key,
                              task=task, metadata=metadata, price_usd=price)
        await engine.finish(job)
        return await self._result_response(request, job)

    # -- queue.fal.run ------------------------------------------------------------------------
    async def submit(self, request: Request, endpoint: str) -> Response:
        """Queue a request: ``IN_QUEUE`` with the status, result and cancel URLs."""
        key = self.api_key(request)
        body = await self.json_object(request)
        task, metadata, price = self._parse(endpoint, body)
        webhook = self.query_value(request, "fal_webhook")
        if webhook is not None:
            metadata["fal_webhook"] = _http_url(webhook, "fal_webhook")
        job = self.submit_job(request, job_id=str(uuid.uuid4()), operation="submit",
                              api_key=key, task=task, metadata=metadata, price_usd=price,
                              watch=webhook is not None)
        return self.json({
            "status": STATUS_WORDS[job.status],
            "request_id": job.id,
            "gateway_request_id": job.id,
            "queue_position": 0,
            **self._urls(request, job),
        }, headers={"x-fal-request-id": job.id})

    def _urls(self, request: Request, job: Job) -> dict[str, str]:
        base = self.public_url(request, f"/{APP}/requests/{job.id}", host_key="queue")
        return {"response_url": base, "status_url": base + "/status",
                "cancel_url": base + "/cancel"}

    def _job(self, request: Request) -> Job:
        """The caller's request named in the path (:meth:`caller_job`)."""
        return self.caller_job(request, request.path_params["request_id"])

    async def status(self, request: Request) -> Response:
        """``GET .../requests/{id}/status`` (``?logs=1`` adds the logs)."""
        job = self._job(request)
        await self.port.jobs.observe(job)
        logs = _truthy(self.query_value(request, "logs"))
        return self.json(self.render_status(request, job, logs=logs))

    async def status_stream(self, request: Request) -> Response:
        """Server-sent events, one per status change, ending with ``COMPLETED``."""
        job = self._job(request)
        logs = _truthy(self.query_value(request, "logs"))
        engine = self.port.jobs

        async def events() -> AsyncIterator[str]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STREAM_LIMIT_S
            last = ""
            while True:
                await engine.observe(job)
                text = json.dumps(self.render_status(request, job, logs=logs))
                if text != last:
                    yield f"data: {text}\n\n"
                    last = text
                if job.status.terminal or loop.time() > deadline:
                    return
                await asyncio.sleep(STREAM_INTERVAL_S)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "x-fal-request-id": job.id})

    def render_status(self, request: Request, job: Job, *, logs: bool) -> dict[str, Any]:
        """The status body; ``logs`` is always present once the request runs."""
        word = self.status_word(job)
        body: dict[str, Any] = {"status": word, "request_id": job.id,
                                **self._urls(request, job)}
        if word == "IN_QUEUE":
            body["queue_position"] = 0
            return body
        body["logs"] = self._logs(job) if logs else None
        if word == "COMPLETED":
            metrics: dict[str, Any] = {}
            if job.work_started_at is not None and job.work_ended_at is not None:
                metrics["inference_time"] = round(job.work_ended_at - job.work_started_at, 4)
            body["metrics"] = metrics
            if job.status is not JobStatus.SUCCEEDED:
                _, kind = self._failure(job)
                body["error"] = job.error or "Request was cancelled"
                body["error_type"] = kind
        return body

    @staticmethod
    def _logs(job: Job) -> list[dict[str, Any]]:
        def entry(at: float, message: str, level: str = "INFO") -> dict[str, Any]:
            return {"message": message, "level": level, "source": "user",
                    "timestamp": iso_ms(at)}

        out = []
        if job.started_at is not None:
            out.append(entry(job.started_at, f"Processing request {job.id}"))
        if job.completed_at is not None:
            if job.status is JobStatus.SUCCEEDED:
                out.append(entry(job.completed_at, "Background removed"))
            elif job.error:
                out.append(entry(job.completed_at, job.error, "ERROR"))
        return out

    async def result(self, request: Request) -> Response:
        """The result of a completed request; 400 while it is not done."""
        job = self._job(request)
        await self.port.jobs.refresh(job)
        if not job.status.terminal:
            return self.json({"detail": "Request is still in progress",
                              "status": STATUS_WORDS[job.status]}, status=400)
        return await self._result_response(request, job)

    async def cancel(self, request: Request) -> Response:
        """202 ``CANCELLATION_REQUESTED`` for a queued request; 400 once it runs or ended."""
        job = self._job(request)
        engine = self.port.jobs
        await engine.refresh(job)
        try:
            engine.cancel(job)
        except Conflict as exc:
            word = "ALREADY_COMPLETED" if job.status.terminal else STATUS_WORDS[job.status]
            return self.json({"status": word, "detail": exc.message}, status=400)
        return self.json({"status": "CANCELLATION_REQUESTED"}, status=202)

    # -- results ------------------------------------------------------------------------------
    def _failure(self, job: Job) -> tuple[int, str]:
        """HTTP status and fal error type of a request that did not succeed."""
        if job.status is JobStatus.CANCELLED:
            return 499, "client_cancelled"
        if job.status is JobStatus.ERROR:
            return 500, "internal_server_error"
        return 422, FAILURE_TYPES.get(job.error_code or "", "downstream_service_error")

    async def _result_response(self, request: Request, job: Job) -> Response:
        headers = {"x-fal-request-id": job.id}
        if job.status is JobStatus.SUCCEEDED:
            return await self.large_json(await self.render_result(self.origin(request), job),
                                         headers=headers)
        status, kind = self._failure(job)
        if status == 499:
            return self.json({"detail": "Request was cancelled", "error_type": kind},
                             status=status, headers={**headers, "X-Fal-Error-Type": kind})
        detail: dict[str, Any] = {
            "loc": ["body", "image_url"] if status == 422 else ["body"],
            "msg": job.error or "internal error", "type": kind, "url": _error_url(kind)}
        if status == 422:
            detail["input"] = job.metadata.get("image_url")
        return self.json({"detail": [detail]}, status=status,
                         headers={**headers, "X-Fal-Retryable": "true" if status >= 500
                                  else "false"})

    async def render_result(self, origin: str, job: Job) -> dict[str, Any]:
        """``{"image": File}`` (remove) or ``{"images": [File], "seed"}`` (replace); file URLs on
        the CDN host as seen from ``origin`` (the client's ``scheme://host:port``)."""
        if job.metadata.get("sync_mode"):
            return self._shape(job, await self.data_uris(job.outputs))
        return self._shape(job, [self.public_url_at(origin, self.cdn_path(f), host_key="cdn")
                                 for f in job.outputs])

    @staticmethod
    def _shape(job: Job, urls: list[str]) -> dict[str, Any]:
        images = [{"url": url, "content_type": f.content_type, "file_name": f.name,
                   "file_size": f.size, "width": f.width, "height": f.height}
                  for url, f in zip(urls, job.outputs, strict=True)]
        if job.metadata.get("endpoint") == "replace":
            return {"images": images, "seed": job.metadata.get("seed")}
        return {"image": images[0]}


def _boolean(body: dict[str, Any], name: str, default: bool) -> bool:
    """``body[name]`` or ``default`` when absent; an explicit null is refused, as fal's
    models (a boolean with a default, docs/vendors/fal.md Input Schema) refuse it.

    Raises:
        ValidationFailed: not a boolean.
    """
    if name not in body:
        return default
    value = body[name]
    if not isinstance(value, bool):
        raise ValidationFailed("Input should be a valid boolean", field=name,
                               code="bool_type")
    return value


def _integer(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    """``body[name]`` or ``default`` when absent (null refused, as :func:`_boolean`).

    Raises:
        ValidationFailed: not an integer, or outside ``[low, high]``.
    """
    if name not in body:
        return default
    value = body[name]
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 is an integer, to JSON Schema and to fal's (pydantic) models
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed("Input should be a valid integer", field=name, code="int_type")
    if not low <= value <= high:
        raise ValidationFailed(f"Input should be between {low} and {high}", field=name,
                               code="less_than_equal" if value > high else "greater_than_equal")
    return value


def _http_url(value: str, field: str) -> str:
    source = parse_source(value, field=field)
    if source.kind != "url":
        raise InvalidInput(f"{field} must be an http(s) URL", field=field)
    return source.value
