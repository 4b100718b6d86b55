"""fal.ai: Bria background remove and replace. Facts from ``docs/vendors/fal.md``
(fal's page https://fal.ai/models/fal-ai/bria/background/remove/api and other docs), and the
published ``fal-client`` (1.0.3) that real clients run.

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

Prices: remove $0.018; replace $0.023 per image (docs/vendors/fal.md, "Bria Background Replace
($0.023)"). ``sync_mode: true`` returns the images as ``data:image/png;base64,...`` URIs.

The package, by concept: :mod:`~emulator.vendors.fal.queue` (run and queue hosts),
:mod:`~emulator.vendors.fal.storage` (storage token, CDN upload and files) and
:mod:`~emulator.vendors.fal.webhooks` (signed webhooks, JWKS); this module is the adapter:
hosts, routes, auth and error bodies.
"""

from __future__ import annotations

from functools import partial

from starlette.responses import Response
from starlette.routing import BaseRoute

from emulator.errors import EmulatorError, GatewayTimeout, InvalidInput
from emulator.vendors.base import HostSpec, KeyHeader
from emulator.vendors.fal.queue import APP, ENDPOINTS, STATUS_WORDS
from emulator.vendors.fal.webhooks import FalWebhooks

LOCKED_MESSAGE = ("User is locked. Reason: Exhausted balance. Top up your balance at "
                  "fal.ai/dashboard/billing.")


class FalAdapter(FalWebhooks):
    """fal.ai's run, queue, REST (storage token) and CDN hosts for ``fal-ai/bria/background``."""

    slug = "fal"
    title = "fal.ai"
    hosts = (
        HostSpec("fal.run", "", "run"),
        HostSpec("queue.fal.run", "/queue", "queue"),
        HostSpec("rest.fal.ai", "/rest", "rest"),
        HostSpec("v3.fal.media", "/cdn", "cdn"),
    )
    source = "docs/vendors/fal.md"
    status_words = STATUS_WORDS
    job_not_found = "Request {id} not found"
    #: ``Authorization: Key <FAL_KEY>`` (docs/vendors/fal.md, cURL), the scheme word
    #: case-insensitive. Any other scheme (``Bearer <FAL_KEY>`` included: fal documents only
    #: ``Key``) is refused with fal's 401 ``{"detail": ...}``, as the vendor would.
    key_header = KeyHeader(
        "authorization", scheme="Key",
        missing="No credentials provided. Send 'Authorization: Key <FAL_KEY>'.",
        wrong_scheme="Authorization must be 'Key <FAL_KEY>', not '{scheme} ...'",
        empty="No credentials provided after 'Key'.")

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
                           operation="status", final_read="request_id"),
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


__all__ = ["APP", "ENDPOINTS", "STATUS_WORDS", "FalAdapter"]
