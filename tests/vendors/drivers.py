"""One small driver per vendor, so the end-to-end tests are written once for all vendors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

KEY = "test-key"


@dataclass(frozen=True)
class Driver:
    """How to submit, poll and read one vendor."""

    slug: str
    key_header: str
    key_prefix: str
    submit_path: str
    status_words: dict[str, str]

    def headers(self, key: str | None = KEY) -> dict[str, str]:
        return {} if key is None else {self.key_header: f"{self.key_prefix}{key}"}

    def body(self, image: Any) -> dict[str, Any]:
        raise NotImplementedError

    def submit(self, client: httpx.Client, image: Any, key: str | None = KEY,
               headers: dict[str, str] | None = None) -> httpx.Response:
        return client.post(self.submit_path, json=self.body(image),
                           headers={**self.headers(key), **(headers or {})})

    def job_id(self, response: httpx.Response) -> str:
        raise NotImplementedError

    def poll_url(self, client: httpx.Client, response: httpx.Response) -> str:
        raise NotImplementedError

    def poll(self, client: httpx.Client, url: str, key: str | None = KEY) -> httpx.Response:
        return client.get(url, headers=self.headers(key))

    def status(self, body: dict[str, Any]) -> str:
        return str(body["status"])

    def urls(self, body: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def error(self, body: dict[str, Any]) -> str:
        raise NotImplementedError

    def error_message(self, body: dict[str, Any]) -> str:
        return str(body["message"])


class PixazoDriver(Driver):
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


class ApiframeDriver(Driver):
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


PIXAZO = PixazoDriver(
    slug="pixazo", key_header="Ocp-Apim-Subscription-Key", key_prefix="",
    submit_path="/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request",
    status_words={"queued": "QUEUED", "processing": "PROCESSING", "succeeded": "COMPLETED",
                  "failed": "FAILED", "error": "ERROR"},
)
APIFRAME = ApiframeDriver(
    slug="apiframe", key_header="X-API-Key", key_prefix="",
    submit_path="/v2/images/background-remove",
    status_words={"queued": "QUEUED", "processing": "PROCESSING", "succeeded": "COMPLETED",
                  "failed": "FAILED", "error": "FAILED"},
)

DRIVERS = [PIXAZO, APIFRAME]
