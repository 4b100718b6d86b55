"""fal.ai: Bria background remove and replace. Facts from ``../shared/vendor-docs/fal.txt`` and
NOTES.md (fal section), and the published ``fal-client`` (1.0.3) that real clients run.

Four hosts, as fal has them:

* ``fal.run`` (root): ``POST /fal-ai/bria/background/remove`` and ``.../replace`` run
  synchronously; the body is the result JSON (504 ``request_timeout`` when the image work
  does not end within ``Settings.max_wait_s``).
* ``queue.fal.run`` (``/queue``): the same paths queue a request ->
  ``{request_id, gateway_request_id, status: "IN_QUEUE", queue_position, response_url,
  status_url, cancel_url}``; then, on the model id without its subpath,
  ``GET /fal-ai/bria/requests/{id}/status`` (``?logs=1``), ``.../status/stream`` (server-sent
  events until ``COMPLETED``), ``GET /fal-ai/bria/requests/{id}`` (the result; 400 while not
  done) and ``PUT .../cancel`` (202 for a queued request, 400 once it runs or has ended).
  ``?fal_webhook=URL`` on submit is validated and kept in the job's metadata.
* ``rest.fal.ai`` (``/rest``): ``POST /storage/auth/token?storage_type=fal-cdn-v3`` ->
  ``{token, token_type, base_url, expires_at}`` as ``fal_client.upload_file`` uses it.
* ``v3.fal.media`` (``/cdn``): ``POST /files/upload`` (raw bytes, ``Authorization: Bearer
  <token>``, ``X-Fal-File-Name``) -> ``{access_url, ...}``; ``GET /files/{bucket}/{name}``
  serves uploads and every output, so result URLs look like fal's
  (``https://v3.fal.media/files/tiger/<id>.png``).

Statuses are ``IN_QUEUE`` / ``IN_PROGRESS`` / ``COMPLETED`` only (fal-client raises on any other
word); ``IN_PROGRESS`` and ``COMPLETED`` bodies always carry ``logs`` (``null`` unless
``?logs=1``). A failed or cancelled request shows ``COMPLETED`` with ``error`` and
``error_type``; its result answers fal's model-error shape, 422 ``{"detail": [{loc, msg, type,
url, input}]}`` (``file_download_error``, ``image_load_error``, ``image_too_large``,
``file_too_large``), 500 for a system error, 499 ``client_cancelled`` for a cancelled one
(docs.fal.ai/errors and request-errors). Other errors are ``{"detail": ...}``; validation errors
are 422 with a ``detail`` list. The SDK retries 408/409/429, so a refused cancel is a 400, never
a 409.

Prices: remove $0.018; replace $0.023 per image (fal.txt, "Bria Background Replace ($0.023)").
``sync_mode: true`` returns the images as ``data:image/png;base64,...`` URIs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import mimetypes
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute

from emulator.core.files import StoredFile
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
from emulator.core.webhooks import RetryPolicy, WebhookMessage
from emulator.errors import (
    Conflict,
    EmulatorError,
    GatewayTimeout,
    InvalidInput,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from emulator.vendors.base import HostSpec, VendorAdapter

if TYPE_CHECKING:
    from emulator.app import Emulator

APP = "fal-ai/bria"
ENDPOINTS = ("remove", "replace")
REPLACE_PRICE_USD = 0.023
SEED_MAX = 2147483647
MAX_IMAGES = 4

#: Seconds a storage token lives (the SDK refreshes it once ``expires_at`` has passed).
TOKEN_TTL_S = 3600.0
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

#: Path segments of CDN URLs, as fal's (``/files/tiger/...``, ``/files/panda/...``).
CDN_BUCKETS = ("panda", "tiger", "lion", "penguin", "koala", "zebra", "rabbit", "monkey")

_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
_CDN_FILE = re.compile(r"/files/[^/]+/(?P<name>[^/]+)")

LOCKED_MESSAGE = ("User is locked. Reason: Exhausted balance. Top up your balance at "
                  "fal.ai/dashboard/billing.")


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def _error_url(kind: str) -> str:
    return f"https://docs.fal.ai/errors#{kind}"


class FalAdapter(VendorAdapter):
    """fal.ai's run, queue, REST (storage token) and CDN hosts for ``fal-ai/bria/background``."""

    slug = "fal"
    title = "fal.ai"
    hosts = (
        HostSpec("fal.run", "", "run"),
        HostSpec("queue.fal.run", "/queue", "queue"),
        HostSpec("rest.fal.ai", "/rest", "rest"),
        HostSpec("v3.fal.media", "/cdn", "cdn"),
    )
    source = "../shared/vendor-docs/fal.txt"
    job_not_found = "Request {id} not found"

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(emulator)
        self._token_secret = secrets.token_bytes(32)

    def routes(self) -> dict[str, list[BaseRoute]]:
        """Routes per host key: ``run``, ``queue``, ``rest``, ``cdn``."""
        requests = f"/{APP}/requests/{{request_id}}"
        return {
            "run": [
                self.route(f"/{APP}/background/{name}", partial(self.run_sync, endpoint=name),
                           methods=["POST"], operation=f"run.{name}")
                for name in ENDPOINTS
            ],
            "queue": [
                *[self.route(f"/{APP}/background/{name}", partial(self.submit, endpoint=name),
                             methods=["POST"], operation=f"submit.{name}")
                  for name in ENDPOINTS],
                self.route(requests + "/status", self.status, methods=["GET"],
                           operation="status"),
                self.route(requests + "/status/stream", self.status_stream, methods=["GET"],
                           operation="status.stream"),
                self.route(requests + "/cancel", self.cancel, methods=["PUT"],
                           operation="cancel"),
                self.route(requests, self.result, methods=["GET"], operation="result"),
            ],
            "rest": [
                self.route("/storage/auth/token", self.storage_token, methods=["POST"],
                           operation="storage.token"),
                self.route("/.well-known/jwks.json", self.jwks, methods=["GET"],
                           operation="jwks"),
            ],
            "cdn": [
                self.route("/files/upload", self.upload, methods=["POST"],
                           operation="cdn.upload"),
                self.route("/files/{bucket}/{name}", self.cdn_file, methods=["GET"],
                           operation="cdn.file"),
            ],
        }

    # -- auth and errors --------------------------------------------------------------------
    def api_key(self, request: Request) -> str:
        """``Authorization: Key <FAL_KEY>`` (fal.txt, cURL); ``Bearer`` is accepted too."""
        header = request.headers.get("authorization")
        if header is None or not header.strip():
            return self.check_key(None, message="No credentials provided. Send "
                                                "'Authorization: Key <FAL_KEY>'.")
        scheme, _, key = header.strip().partition(" ")
        if scheme.lower() not in ("key", "bearer"):
            return self.check_key(None, message="Authorization must be 'Key <FAL_KEY>'")
        return self.check_key(key, message="No credentials provided after 'Key'.")

    def render_error(self, exc: EmulatorError) -> Response:
        """``{"detail": ...}``; validation errors are 422 with a list of ``{loc, msg, type}``."""
        if isinstance(exc, InvalidInput) and exc.status in (400, 422):
            loc: list[str] = ["body", *exc.field.split(".")] if exc.field else ["body"]
            kind = exc.code if exc.code not in ("invalid_input", "validation_error") \
                else "value_error"
            return self.json({"detail": [{"loc": loc, "msg": exc.message, "type": kind}]},
                             status=422)
        if exc.status == 402:
            return self.json({"detail": LOCKED_MESSAGE}, status=402)
        if exc.status >= 500:
            # fal's request errors: a flat {detail, error_type}, the type in X-Fal-Error-Type
            # too; request_timeout is a 504 (fal.ai/docs/documentation/model-apis/request-errors)
            kind = exc.code if isinstance(exc, GatewayTimeout) else "internal_error"
            return self.json({"detail": exc.message, "error_type": kind},
                             status=exc.status, headers={"X-Fal-Error-Type": kind})
        return self.json({"detail": exc.message}, status=exc.status)

    # -- inputs -------------------------------------------------------------------------------
    def _parse(self, endpoint: str, body: dict[str, Any]) -> tuple[Task, dict[str, Any],
                                                                    float | None]:
        """Validate a remove/replace input; the task, the job metadata and the price (USD).

        Raises:
            ValidationFailed: a missing or ill-typed field (fal.txt, Input Schema).
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
        engine = self.emulator.jobs
        job = engine.submit(job_id=str(uuid.uuid4()), vendor=self.slug, operation="run",
                            api_key=key, task=task, origin=self.origin(request),
                            metadata=metadata, price_usd=price,
                            plan=self.plan_of(request))
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
        engine = self.emulator.jobs
        job = engine.submit(job_id=str(uuid.uuid4()), vendor=self.slug, operation="submit",
                            api_key=key, task=task, origin=self.origin(request),
                            metadata=metadata, price_usd=price, watch=webhook is not None,
                            plan=self.plan_of(request))
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
        await self.emulator.jobs.observe(job)
        logs = _truthy(self.query_value(request, "logs"))
        return self.json(self.render_status(request, job, logs=logs))

    async def status_stream(self, request: Request) -> Response:
        """Server-sent events, one per status change, ending with ``COMPLETED``."""
        job = self._job(request)
        logs = _truthy(self.query_value(request, "logs"))
        engine = self.emulator.jobs

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
        word = STATUS_WORDS[job.status]
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
        await self.emulator.jobs.refresh(job)
        if not job.status.terminal:
            return self.json({"detail": "Request is still in progress",
                              "status": STATUS_WORDS[job.status]}, status=400)
        return await self._result_response(request, job)

    async def cancel(self, request: Request) -> Response:
        """202 ``CANCELLATION_REQUESTED`` for a queued request; 400 once it runs or ended."""
        job = self._job(request)
        engine = self.emulator.jobs
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

    @staticmethod
    def cdn_path(record: StoredFile) -> str:
        """``/files/<bucket>/<name>`` on the CDN host."""
        bucket = CDN_BUCKETS[int(hashlib.sha1(record.id.encode()).hexdigest(), 16)
                             % len(CDN_BUCKETS)]
        return f"/files/{bucket}/{record.name}"

    def _cdn_record(self, path: str) -> StoredFile | None:
        match = _CDN_FILE.fullmatch(path)
        if match is None:
            return None
        record = self.emulator.jobs.files.get(match.group("name").split(".", 1)[0])
        if record is None or record.expired(self.emulator.clock.now()):
            return None
        return record

    def local_file(self, host_key: str, path: str) -> bytes | None:
        """Bytes of a CDN URL (outputs and uploads), for jobs that use them as input."""
        if host_key != "cdn":
            return None
        record = self._cdn_record(path)
        return record.data if record is not None else None

    # -- webhooks -----------------------------------------------------------------------------
    async def jwks(self, request: Request) -> Response:
        """``GET /.well-known/jwks.json`` on the REST host: the key webhooks are signed with."""
        return self.json(self.emulator.secrets.jwks())

    @staticmethod
    def webhook_user_id(api_key: str) -> str:
        """The ``X-Fal-Webhook-User-Id`` of a key (a stable digest: the emulator has no users)."""
        return "user_" + hashlib.sha256(api_key.encode()).hexdigest()[:16]

    def webhook(self, job: Job) -> WebhookMessage | None:
        """fal's webhook for a queued request with ``?fal_webhook=`` (NOTES.md, fal section).

        Body ``{request_id, gateway_request_id, status: "OK", payload}`` or, for a failure,
        ``{..., status: "ERROR", error: "Invalid status code: 422", payload: {detail}}``.
        Headers ``X-Fal-Webhook-Request-Id``, ``-User-Id``, ``-Timestamp`` (unix s) and
        ``-Signature``: hex ED25519 over ``request_id \\n user_id \\n timestamp \\n
        sha256_hex(body)``, verifiable with ``/.well-known/jwks.json`` on the REST host.
        Retries: up to 10 over about two hours (7 s doubling to 3584 s), 15 s per attempt.
        """
        url = job.metadata.get("fal_webhook")
        if not url:
            return None
        body: dict[str, Any] = {"request_id": job.id, "gateway_request_id": job.id}
        if job.status is JobStatus.SUCCEEDED:
            body.update(status="OK", payload=self._result_now(job))
        else:
            status, kind = self._failure(job)
            body.update(status="ERROR", error=f"Invalid status code: {status}",
                        payload={"detail": [{"loc": ["body"], "msg": job.error or kind,
                                             "type": kind}]})
        raw = self.json_bytes(body)
        user_id = self.webhook_user_id(job.api_key)
        key = self.emulator.secrets.ed25519

        def sign(payload: bytes, at: float) -> dict[str, str]:
            timestamp = str(int(at))
            message = "\n".join([job.id, user_id, timestamp,
                                  hashlib.sha256(payload).hexdigest()]).encode()
            return {"X-Fal-Webhook-Timestamp": timestamp,
                    "X-Fal-Webhook-Signature": key.sign(message).hex()}

        return WebhookMessage(
            url=url, body=raw, sign=sign,
            headers={"X-Fal-Webhook-Request-Id": job.id, "X-Fal-Webhook-User-Id": user_id},
            policy=RetryPolicy(delays_s=tuple(7.0 * 2**i for i in range(10)), timeout_s=15.0,
                               retry_on_4xx=True, source=self.source),
        )

    async def final_webhook(self, job: Job) -> WebhookMessage | None:
        """:meth:`webhook`, built in a worker thread when its payload holds ``sync_mode`` data
        URIs (base64 of every output and its JSON: milliseconds per megapixel)."""
        if (job.metadata.get("fal_webhook") and job.metadata.get("sync_mode")
                and job.status is JobStatus.SUCCEEDED):
            return await run_in_threadpool(self.webhook, job)
        return self.webhook(job)

    def _result_now(self, job: Job) -> dict[str, Any]:
        """The result body without a request (URLs under the job's submit origin)."""
        settings = self.emulator.settings
        origin = job.origin or f"http://{settings.host}:{settings.port}"
        if job.metadata.get("sync_mode"):
            return self._shape(job, [f.data_uri() for f in job.outputs])
        return self._shape(job, [self.public_url_at(origin, self.cdn_path(f), host_key="cdn")
                                 for f in job.outputs])

    # -- storage: rest.fal.ai and v3.fal.media --------------------------------------------------
    async def storage_token(self, request: Request) -> Response:
        """``POST /storage/auth/token?storage_type=fal-cdn-v3`` (NOTES.md, file upload)."""
        key = self.api_key(request)
        storage_type = request.query_params.get("storage_type", "fal-cdn-v3")
        if storage_type != "fal-cdn-v3":
            raise InvalidInput(f"storage_type {storage_type!r} is not supported; use "
                               "fal-cdn-v3", field="storage_type")
        expires = self.emulator.clock.now() + TOKEN_TTL_S
        return self.json({
            "token": self._sign(key, expires),
            "token_type": "Bearer",
            "base_url": self.public_url(request, "", host_key="cdn"),
            "expires_at": _iso_seconds(expires),
        })

    def _sign(self, key: str, expires: float) -> str:
        payload = base64.urlsafe_b64encode(json.dumps({"k": key, "e": int(expires)}).encode())
        text = payload.decode().rstrip("=")
        mac = hmac.new(self._token_secret, text.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{text}.{mac}"

    def _token_key(self, request: Request) -> str:
        """The API key a CDN token was issued to.

        Raises:
            Unauthorized: no token, a forged one, or an expired one.
        """
        header = (request.headers.get("authorization") or "").strip()
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Missing CDN token: send 'Authorization: Bearer <token>' from "
                               "POST rest.fal.ai/storage/auth/token")
        text, _, mac = token.strip().rpartition(".")
        good = hmac.new(self._token_secret, text.encode(), hashlib.sha256).hexdigest()[:32]
        if not text or not hmac.compare_digest(mac, good):
            raise Unauthorized("Invalid CDN token")
        try:
            claims = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (ValueError, binascii.Error):
            raise Unauthorized("Invalid CDN token") from None
        if float(claims["e"]) <= self.emulator.clock.now():
            raise Unauthorized("CDN token has expired")
        return str(claims["k"])

    async def upload(self, request: Request) -> Response:
        """``POST /files/upload``: keep the raw body; its ``access_url`` works as an input."""
        self._token_key(request)
        settings = self.emulator.settings
        limit = settings.max_input_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise InvalidInput(f"upload is over the limit of {limit} bytes", status=413)
            chunks.append(chunk)
        if size == 0:
            raise InvalidInput("upload body is empty")
        content_type = (request.headers.get("content-type") or "application/octet-stream"
                        ).split(";", 1)[0].strip() or "application/octet-stream"
        file_name = request.headers.get("x-fal-file-name") or (
            "upload" + (mimetypes.guess_extension(content_type) or ".bin"))
        dot = file_name.rfind(".")
        suffix = file_name[dot:] if dot >= 0 and _SUFFIX.fullmatch(file_name[dot:]) else ""
        record = self.emulator.jobs.files.put(
            b"".join(chunks), content_type=content_type, width=0, height=0,
            now=self.emulator.clock.now(), ttl_s=_lifecycle_ttl(request, settings.result_ttl_s),
            suffix=suffix)
        return self.json({
            "access_url": self.public_url(request, self.cdn_path(record), host_key="cdn"),
            "content_type": content_type,
            "file_name": file_name,
            "file_size": record.size,
        })

    async def cdn_file(self, request: Request) -> Response:
        """``GET /files/{bucket}/{name}``: an output or an upload (public, no auth)."""
        params = request.path_params
        record = self._cdn_record(f"/files/{params['bucket']}/{params['name']}")
        if record is None:
            raise NotFound("File not found")
        return Response(record.data, media_type=record.content_type,
                        headers={"Cache-Control": "public, max-age=3600"})


def _boolean(body: dict[str, Any], name: str, default: bool) -> bool:
    """``body[name]`` or ``default`` when absent; an explicit null is refused, as fal's
    models (a boolean with a default, fal.txt Input Schema) refuse it.

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


def _iso_seconds(ts: float) -> str:
    """``2026-01-01T10:00:00+00:00``: what ``datetime.fromisoformat`` reads on Python 3.10."""
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).isoformat()


def _lifecycle_ttl(request: Request, default: float) -> float:
    """``X-Fal-Object-Lifecycle: {"expiration_duration_seconds": N}``, else ``default``."""
    raw = request.headers.get("x-fal-object-lifecycle")
    if not raw:
        return default
    try:
        value = json.loads(raw).get("expiration_duration_seconds")
    except (ValueError, AttributeError):
        return default
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default
