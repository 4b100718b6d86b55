"""fal.ai webhooks: the signed callback of a queued request with ``?fal_webhook=``, and
the JWKS (``rest.fal.ai/.well-known/jwks.json``) that verifies it (docs/vendors/fal.md,
webhooks)."""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from emulator.core.jobs import Job, JobStatus
from emulator.core.webhooks import RetryPolicy, WebhookMessage
from emulator.vendors.fal.queue import FalQueue


class FalWebhooks(FalQueue):
    """fal's signed webhooks and the key that verifies them."""

    # -- webhooks -----------------------------------------------------------------------------
    async def jwks(self, request: Request) -> Response:
        """``GET /.well-known/jwks.json`` on the REST host: the key webhooks are signed with."""
        return self.json(self.port.secrets.jwks())

    @staticmethod
    def webhook_user_id(api_key: str) -> str:
        """The ``X-Fal-Webhook-User-Id`` of a key (a stable digest: the emulator has no users)."""
        return "user_" + hashlib.sha256(api_key.encode()).hexdigest()[:16]

    def webhook(self, job: Job) -> WebhookMessage | None:
        """fal's webhook for a queued request with ``?fal_webhook=`` (docs/vendors/fal.md,
        webhooks).

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
        key = self.port.secrets.ed25519

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
        settings = self.port.settings
        origin = job.origin or f"http://{settings.host}:{settings.port}"
        if job.metadata.get("sync_mode"):
            return self._shape(job, [f.data_uri() for f in job.outputs])
        return self._shape(job, [self.public_url_at(origin, self.cdn_path(f), host_key="cdn")
                                 for f in job.outputs])
