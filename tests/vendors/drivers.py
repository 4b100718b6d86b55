"""One small driver per vendor, so the end-to-end tests are written once for all vendors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

KEY = "test-key"


@dataclass(frozen=True)
class Driver:
    """How to submit, poll and read one vendor.

    ``status_words`` maps the canonical statuses (queued, processing, succeeded, failed,
    error) to the vendor's words as a status read shows them.
    """

    slug: str
    key_header: str
    key_prefix: str
    submit_path: str
    status_words: dict[str, str]
    submit_status: int = 202
    unknown_job_path: str = ""
    wrong_method: str = "GET"
    #: True when the submit reply names the URL to poll (so it must follow the client's host).
    poll_url_in_reply: bool = False
    #: Every request the vendor has on one job, ``(method, path)`` with ``{id}`` for its id:
    #: status read, result read, cancel, ... (each scoped to the key that made the job).
    job_requests: tuple[tuple[str, str], ...] = ()

    def headers(self, key: str | None = KEY) -> dict[str, str]:
        return {} if key is None else {self.key_header: f"{self.key_prefix}{key}".strip()}

    def body(self, image: Any) -> dict[str, Any]:
        raise NotImplementedError

    def submit(self, client: httpx.Client, image: Any, key: str | None = KEY,
               headers: dict[str, str] | None = None) -> httpx.Response:
        return client.post(self.submit_path, json=self.body(image),
                           headers={**self.headers(key), **(headers or {})})

    def job_id(self, response: httpx.Response) -> str:
        raise NotImplementedError

    def submit_with_webhook(self, client: httpx.Client, image: Any, hook: str
                            ) -> httpx.Response:
        """Submit asking for a callback to ``hook`` the vendor's way."""
        raise NotImplementedError(f"{self.slug} documents no webhook")

    def poll_url(self, client: httpx.Client, response: httpx.Response) -> str:
        raise NotImplementedError

    def poll(self, client: httpx.Client, url: str, key: str | None = KEY) -> httpx.Response:
        return client.get(url, headers=self.headers(key))

    def outcome(self, client: httpx.Client, url: str, key: str | None = KEY) -> dict[str, Any]:
        """One status read, plus whatever else the vendor needs to show the outcome."""
        response = self.poll(client, url, key=key)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def status(self, body: dict[str, Any]) -> str:
        return str(body["status"])

    def urls(self, body: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def error(self, body: dict[str, Any]) -> str:
        raise NotImplementedError

    def error_message(self, body: dict[str, Any]) -> str:
        return str(body["message"])

    def is_payment_required(self, body: dict[str, Any]) -> bool:
        raise NotImplementedError


class PixazoDriver(Driver):
    def submit_with_webhook(self, client: httpx.Client, image: Any, hook: str
                            ) -> httpx.Response:
        return self.submit(client, image, headers={"X-Webhook-URL": hook})

    def body(self, image: Any) -> dict[str, Any]:
        return {"image_url": image}

    def job_id(self, response: httpx.Response) -> str:
        return str(response.json()["request_id"])

    def poll_url(self, client: httpx.Client, response: httpx.Response) -> str:
        return str(response.json()["polling_url"])

    def urls(self, body: dict[str, Any]) -> list[str]:
        return list(body["output"]["media_url"])

    def error(self, body: dict[str, Any]) -> str:
        return str(body["error"])

    def is_payment_required(self, body: dict[str, Any]) -> bool:
        return body == {"error": "Insufficient Balance",
                        "message": "Your wallet does not have enough balance."}


class ApiframeDriver(Driver):
    def submit_with_webhook(self, client: httpx.Client, image: Any, hook: str
                            ) -> httpx.Response:
        return client.post(self.submit_path, json={**self.body(image), "webhook_url": hook},
                           headers=self.headers())

    def body(self, image: Any) -> dict[str, Any]:
        return {"model": "bria-bg-remove",
                "briaBgRemoveParams": {"image": image, "content_moderation": True}}

    def job_id(self, response: httpx.Response) -> str:
        return str(response.json()["jobId"])

    def poll_url(self, client: httpx.Client, response: httpx.Response) -> str:
        return str(client.base_url).rstrip("/") + f"/v2/jobs/{self.job_id(response)}"

    def urls(self, body: dict[str, Any]) -> list[str]:
        return list(body["result"]["images"])

    def error(self, body: dict[str, Any]) -> str:
        return str(body["error"])

    def is_payment_required(self, body: dict[str, Any]) -> bool:
        return bool(body["code"] == "INSUFFICIENT_CREDITS")


class GmiCloudDriver(Driver):
    def body(self, image: Any) -> dict[str, Any]:
        return {"model": "bria-image-remove-background", "payload": {"image": image}}

    def job_id(self, response: httpx.Response) -> str:
        return str(response.json()["request_id"])

    def poll_url(self, client: httpx.Client, response: httpx.Response) -> str:
        return (str(client.base_url).rstrip("/") + self.submit_path
                + f"/{self.job_id(response)}")

    def urls(self, body: dict[str, Any]) -> list[str]:
        return [m["url"] for m in body["outcome"]["media_urls"]]

    def error(self, body: dict[str, Any]) -> str:
        return str(body["error_message"])

    def error_message(self, body: dict[str, Any]) -> str:
        return str(body["error"])

    def is_payment_required(self, body: dict[str, Any]) -> bool:
        return "insufficient balance" in str(body["error"])


def detail_message(detail: Any) -> str:
    """The message of a ``{"detail": str | [{msg, ...}]}`` error body (fal, Runflow)."""
    return str(detail[0]["msg"]) if isinstance(detail, list) else str(detail)


class FalDriver(Driver):
    """fal's queue: the status read says COMPLETED; the result is a second GET."""

    def submit_with_webhook(self, client: httpx.Client, image: Any, hook: str
                            ) -> httpx.Response:
        return client.post(self.submit_path, params={"fal_webhook": hook},
                           json=self.body(image), headers=self.headers())

    def body(self, image: Any) -> dict[str, Any]:
        return {"image_url": image}

    def job_id(self, response: httpx.Response) -> str:
        return str(response.json()["request_id"])

    def poll_url(self, client: httpx.Client, response: httpx.Response) -> str:
        return str(response.json()["status_url"])

    def outcome(self, client: httpx.Client, url: str, key: str | None = KEY) -> dict[str, Any]:
        body = super().outcome(client, url, key=key)
        if body["status"] == "COMPLETED":
            result = client.get(body["response_url"], headers=self.headers(key))
            body = {**body, "result": result.json(), "result_status": result.status_code}
        return body

    def urls(self, body: dict[str, Any]) -> list[str]:
        assert body["result_status"] == 200, body
        return [body["result"]["image"]["url"]]

    def error(self, body: dict[str, Any]) -> str:
        assert body["result_status"] >= 400, body
        assert body["error"] == detail_message(body["result"]["detail"]), body
        return str(body["error"])

    def error_message(self, body: dict[str, Any]) -> str:
        return detail_message(body["detail"])

    def is_payment_required(self, body: dict[str, Any]) -> bool:
        return "Exhausted balance" in str(body["detail"])


class RunflowDriver(Driver):
    def submit_with_webhook(self, client: httpx.Client, image: Any, hook: str
                            ) -> httpx.Response:
        return client.post(self.submit_path, json={**self.body(image), "callback_url": hook},
                           headers=self.headers())

    def body(self, image: Any) -> dict[str, Any]:
        return {"input": {"image_url": image, "sync_mode": False},
                "metadata": {"order": 7}}

    def job_id(self, response: httpx.Response) -> str:
        return str(response.json()["id"])

    def poll_url(self, client: httpx.Client, response: httpx.Response) -> str:
        return str(client.base_url).rstrip("/") + f"/v1/runs/{self.job_id(response)}"

    def status(self, body: dict[str, Any]) -> str:
        return str(body["status_code"])

    def urls(self, body: dict[str, Any]) -> list[str]:
        return [o["url"] for o in body["output"]["outputs"]]

    def error(self, body: dict[str, Any]) -> str:
        return str(body["failure_message"])

    def error_message(self, body: dict[str, Any]) -> str:
        return detail_message(body["detail"])

    def is_payment_required(self, body: dict[str, Any]) -> bool:
        return "Insufficient credits" in str(body["detail"])


class BriaDriver(Driver):
    """Bria's own API: async submit (202) and the status service."""

    def submit_with_webhook(self, client: httpx.Client, image: Any, hook: str
                            ) -> httpx.Response:
        return client.post(self.submit_path, json={**self.body(image), "webhook_url": hook},
                           headers=self.headers())

    def body(self, image: Any) -> dict[str, Any]:
        return {"image": image}

    def job_id(self, response: httpx.Response) -> str:
        return str(response.json()["request_id"])

    def poll_url(self, client: httpx.Client, response: httpx.Response) -> str:
        return str(response.json()["status_url"])

    def status(self, body: dict[str, Any]) -> str:
        """The SDK's reading (``BriaResponse``): the 202 reply has no ``status``; with a
        ``status_url`` it is ``IN_PROGRESS``."""
        if "status" not in body and "status_url" in body:
            return "IN_PROGRESS"
        return str(body["status"])

    def urls(self, body: dict[str, Any]) -> list[str]:
        return [body["result"]["image_url"]]

    def error(self, body: dict[str, Any]) -> str:
        return str(body["error"]["details"])

    def error_message(self, body: dict[str, Any]) -> str:
        return str(body["error"]["details"])

    def is_payment_required(self, body: dict[str, Any]) -> bool:
        return bool(body["error"]["code"] == 402)


PIXAZO = PixazoDriver(
    slug="pixazo", key_header="Ocp-Apim-Subscription-Key", key_prefix="",
    submit_path="/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request",
    status_words={"queued": "QUEUED", "processing": "PROCESSING", "succeeded": "COMPLETED",
                  "failed": "FAILED", "error": "ERROR"},
    unknown_job_path="/v2/requests/status/bria-rmbg-2-0-682_nope",
    poll_url_in_reply=True,
    job_requests=(("GET", "/v2/requests/status/{id}"),),
)
APIFRAME = ApiframeDriver(
    slug="apiframe", key_header="X-API-Key", key_prefix="",
    submit_path="/v2/images/background-remove",
    status_words={"queued": "QUEUED", "processing": "PROCESSING", "succeeded": "COMPLETED",
                  "failed": "FAILED", "error": "FAILED"},
    unknown_job_path="/v2/jobs/00000000-0000-0000-0000-000000000000",
    job_requests=(("GET", "/v2/jobs/{id}"),),
)
GMICLOUD = GmiCloudDriver(
    slug="gmicloud", key_header="Authorization", key_prefix="Bearer ",
    submit_path="/api/v1/ie/requestqueue/apikey/requests",
    status_words={"queued": "queued", "processing": "processing", "succeeded": "success",
                  "failed": "failed", "error": "failed"},
    submit_status=200,
    unknown_job_path="/api/v1/ie/requestqueue/apikey/requests/00000000-0000-0000-0000-0",
    wrong_method="DELETE",
    job_requests=(("GET", "/api/v1/ie/requestqueue/apikey/requests/{id}"),),
)
FAL = FalDriver(
    slug="fal", key_header="Authorization", key_prefix="Key ",
    submit_path="/queue/fal-ai/bria/background/remove",
    status_words={"queued": "IN_QUEUE", "processing": "IN_PROGRESS", "succeeded": "COMPLETED",
                  "failed": "COMPLETED", "error": "COMPLETED"},
    submit_status=200,
    unknown_job_path="/queue/fal-ai/bria/requests/00000000-0000-0000-0000-000000000000/status",
    poll_url_in_reply=True,
    job_requests=(("GET", "/queue/fal-ai/bria/requests/{id}/status"),
                  ("GET", "/queue/fal-ai/bria/requests/{id}/status/stream"),
                  ("GET", "/queue/fal-ai/bria/requests/{id}"),
                  ("PUT", "/queue/fal-ai/bria/requests/{id}/cancel")),
)
RUNFLOW = RunflowDriver(
    slug="runflow", key_header="Authorization", key_prefix="Bearer ",
    submit_path="/v1/models/bria/background/remove/runs",
    status_words={"queued": "queued", "processing": "dispatching", "succeeded": "succeeded",
                  "failed": "failed", "error": "failed"},
    submit_status=201,
    unknown_job_path="/v1/runs/00000000-0000-0000-0000-000000000000",
    job_requests=(("GET", "/v1/runs/{id}"),),
)
BRIA = BriaDriver(
    slug="bria", key_header="api_token", key_prefix="",
    submit_path="/v2/image/edit/remove_background",
    status_words={"queued": "IN_PROGRESS", "processing": "IN_PROGRESS",
                  "succeeded": "COMPLETED", "failed": "ERROR", "error": "ERROR"},
    unknown_job_path="/v2/status/00000000000000000000000000000000",
    poll_url_in_reply=True,
    job_requests=(("GET", "/v2/status/{id}"),),
)

#: One driver per registered vendor: a vendor without one fails
#: ``tests/vendors/test_routing.py::test_every_registered_vendor_has_a_driver``.
DRIVERS = [PIXAZO, APIFRAME, GMICLOUD, FAL, RUNFLOW, BRIA]


def documents_a_webhook(driver: Driver) -> bool:
    """Whether ``driver``'s vendor documents a webhook (its driver says how to ask for one)."""
    return type(driver).submit_with_webhook is not Driver.submit_with_webhook


#: Vendors that document a webhook (GMI Cloud documents none).
WEBHOOK_DRIVERS = [d for d in DRIVERS if documents_a_webhook(d)]
