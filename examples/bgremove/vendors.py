"""One client per vendor behind one interface: submit, poll, download, verify.

:class:`BackgroundRemover` holds everything the six vendors share (HTTP with retries, polling
with backoff, download, PNG checks); each subclass says only how its vendor names things: the
submit request, the status read, the status words and the webhook body. Wire facts come from
the vendors' public pages, summed up with their URLs in the rmbg-emulator repository's
``docs/vendors/<vendor>.md``; each class cites its page.

Use::

    with create_remover("pixazo", api_key) as remover:
        cutout = remover.remove("https://example.com/cat.jpg")
    cutout.png  # RGBA PNG bytes, the input's size

Point ``base_url`` at the rmbg-emulator to test without the vendor (see ``examples/tests``).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, TypeVar

import httpx

from .errors import (
    AuthenticationError,
    BackgroundRemovalError,
    InvalidInput,
    InvalidResult,
    JobFailed,
    JobTimeout,
    MalformedWebhook,
    PaymentRequired,
    RateLimited,
    RequestRejected,
    VendorError,
    VendorUnavailable,
)
from .png import Cutout, data_uri_bytes, image_size, verify_cutout
from .timing import Clock, PollPolicy, RetryPolicy, SystemClock, parse_retry_after

T = TypeVar("T")

#: Methods that are safe to send twice.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class JobStatus(enum.Enum):
    """A job's state in the vendors' common terms."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """True for ``SUCCEEDED`` and ``FAILED``: the job will not change again."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


@dataclass(frozen=True)
class Submission:
    """A submitted job: the vendor's id and where to read its status (and, for fal, its
    result)."""

    vendor: str
    job_id: str
    status_url: str
    result_url: str | None = None


@dataclass(frozen=True)
class Job:
    """One status read (or webhook) of a job.

    Attributes:
        status: the common status; ``vendor_status`` the vendor's own word.
        result_urls: where the result PNG(s) are, once ``SUCCEEDED``.
        error: the vendor's message, once ``FAILED``.
        raw: the body it was read from.
    """

    vendor: str
    job_id: str
    status: JobStatus
    vendor_status: str
    result_urls: tuple[str, ...] = ()
    error: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _message(response: httpx.Response) -> str:
    """The vendor's error message, whatever its error body looks like.

    Pixazo ``{"error", "message"}``, Apiframe ``{"message", "code"}`` (the code follows in
    brackets), GMI ``{"error"}``, fal and Runflow ``{"detail": str | [{"msg"}]}``, Bria
    ``{"error": {"code", "message", "details"}}``.
    """
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)[:200]
    parts: list[str] = []
    for key in ("error", "message", "detail", "error_message"):
        value = body.get(key)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = value[0].get("msg")
        if isinstance(value, dict):  # Bria: {"error": {"code", "message", "details"}}
            value = ": ".join(str(value[k]) for k in ("message", "details") if value.get(k))
        if isinstance(value, str) and value and value not in parts:
            parts.append(value)
    code = body.get("code")
    text = ": ".join(parts) or response.text[:200]
    return f"{text} ({code})" if isinstance(code, str) and code else text


def _status_error(vendor: str, response: httpx.Response) -> VendorError:
    """The exception for a 4xx/5xx answer."""
    status = response.status_code
    text = f"{vendor}: HTTP {status}: {_message(response)}"
    body = response.text[:2000]
    if status in (401, 403):
        return AuthenticationError(text, vendor=vendor, status=status, body=body)
    if status == 402:
        return PaymentRequired(text, vendor=vendor, status=status, body=body)
    if status == 429:
        return RateLimited(text, vendor=vendor, body=body,
                           retry_after=parse_retry_after(response.headers.get("Retry-After")))
    if status >= 500 or status == 408:
        return VendorUnavailable(text, vendor=vendor, status=status, body=body)
    return RequestRejected(text, vendor=vendor, status=status, body=body)


class BackgroundRemover(ABC):
    """A background-removal client for one vendor.

    Args:
        api_key: the vendor's API key.
        base_url: the vendor's API root (default: the real one, :attr:`default_base_url`).
            Point it at the emulator in tests.
        http: an ``httpx.Client`` to use (closed by its owner); default: one of our own.
        verify: TLS verification for our own client: ``True``, ``False`` or a CA bundle path.
        retry: how each HTTP call is retried; poll: how a job is polled.
        clock: where time is read and waited (default: the real clock).
        request_timeout_s: seconds one HTTP call may take.

    Subclasses register themselves by :attr:`vendor` (see :data:`REGISTRY`).
    """

    vendor: ClassVar[str] = ""
    default_base_url: ClassVar[str] = ""
    #: False for vendors that document no webhook (GMI Cloud).
    supports_webhooks: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.vendor:
            REGISTRY[cls.vendor] = cls

    def __init__(self, api_key: str, *, base_url: str | None = None,
                 http: httpx.Client | None = None, verify: bool | str = True,
                 retry: RetryPolicy | None = None, poll: PollPolicy | None = None,
                 clock: Clock | None = None, request_timeout_s: float = 60.0) -> None:
        if not api_key:
            raise ValueError(f"{self.vendor}: an API key is required")
        self.api_key = api_key
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self._owns_http = http is None
        self.http = http if http is not None else httpx.Client(timeout=request_timeout_s,
                                                               verify=verify)
        self.retry = retry or RetryPolicy()
        self.poll = poll or PollPolicy()
        self.clock: Clock = clock or SystemClock()

    # -- what each vendor says ----------------------------------------------------------------
    @abstractmethod
    def auth_headers(self) -> dict[str, str]:
        """The vendor's authentication header(s)."""

    @abstractmethod
    def _submit(self, image_url: str, webhook_url: str | None) -> Submission:
        """Send the submit request; the vendor's reply as a :class:`Submission`."""

    @abstractmethod
    def _read(self, submission: Submission) -> Job:
        """One status read."""

    @classmethod
    @abstractmethod
    def parse_job(cls, body: Mapping[str, Any]) -> Job:
        """A status body as a :class:`Job`.

        Raises:
            KeyError, TypeError, ValueError: not the vendor's shape.
        """

    @classmethod
    def parse_webhook(cls, body: Mapping[str, Any]) -> Job:
        """A webhook body as a :class:`Job` (default: the same shape as a status read).

        Raises:
            MalformedWebhook: not the vendor's webhook shape.
        """
        try:
            return cls.parse_job(body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedWebhook(f"{cls.vendor}: not a webhook body ({exc!r})") from exc

    # -- HTTP ---------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        """``base_url + path``."""
        return self.base_url + path

    def request(self, method: str, url: str, parse: Callable[[httpx.Response], T], *,
                json: Any = None, params: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None, auth: bool = True) -> T:
        """Send a request with retries; ``parse`` turns the 2xx answer into the result.

        Retried up to ``retry.attempts`` times: 429 (after its ``Retry-After``, else the
        backoff), 5xx/408, dropped connections, time-outs, and answers ``parse`` cannot read
        (``ValueError``, ``KeyError``, ``TypeError``). A POST is retried on those only with
        ``retry.retry_submit_on_5xx``; on 429 always. Never retried: 401, 402, 403 and other 4xx.

        Raises:
            AuthenticationError, PaymentRequired, RequestRejected: at once.
            RateLimited: 429 on the last try, or a ``Retry-After`` over
                ``retry.max_retry_after_s``.
            VendorUnavailable: 5xx / network / unreadable answer on the last try.
        """
        policy = self.retry
        delays = policy.backoff.delays()
        may_repeat = method.upper() in IDEMPOTENT or policy.retry_submit_on_5xx
        sent_headers = {**(self.auth_headers() if auth else {}), **(headers or {})}
        for attempt in range(1, policy.attempts + 1):
            last = attempt == policy.attempts
            error: VendorError
            try:
                response = self.http.request(method, url, json=json, params=params,
                                             headers=sent_headers)
            except httpx.TransportError as exc:
                error = VendorUnavailable(f"{self.vendor}: {type(exc).__name__}: {exc}",
                                          vendor=self.vendor)
                if last or not may_repeat:
                    raise error from exc
                self.clock.sleep(next(delays))
                continue
            if response.status_code < 400:
                try:
                    return parse(response)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    error = VendorUnavailable(
                        f"{self.vendor}: unexpected answer to {method} {url}: {exc!r}",
                        vendor=self.vendor, status=response.status_code,
                        body=response.text[:2000])
                    if last or method.upper() not in IDEMPOTENT:
                        raise error from exc
                    self.clock.sleep(next(delays))
                    continue
            error = _status_error(self.vendor, response)
            if isinstance(error, RateLimited):
                wait = error.retry_after
                if wait is not None and wait > policy.max_retry_after_s:
                    raise error
                if last:
                    raise error
                self.clock.sleep(next(delays) if wait is None else wait)
                continue
            if isinstance(error, VendorUnavailable) and may_repeat and not last:
                self.clock.sleep(next(delays))
                continue
            raise error
        raise AssertionError("unreachable: the last attempt returns or raises")

    def get_json(self, url: str, *, auth: bool = True) -> dict[str, Any]:
        """``GET url`` with retries; the JSON object answered."""
        return self.request("GET", url, _json_object, auth=auth)

    def post_json(self, url: str, body: Any, *, params: Mapping[str, str] | None = None,
                  headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """``POST url`` with a JSON body and retries; the JSON object answered."""
        return self.request("POST", url, _json_object, json=body, params=params,
                            headers=headers)

    # -- the job's life -----------------------------------------------------------------------
    def submit(self, image_url: str, *, webhook_url: str | None = None) -> Submission:
        """Ask the vendor to remove ``image_url``'s background.

        Args:
            image_url: a URL the vendor can fetch (or a ``data:`` URI where it takes one).
            webhook_url: where the vendor should POST the outcome (see
                :class:`~bgremove.webhooks.WebhookReceiver`).

        Raises:
            ValueError: ``webhook_url`` for a vendor without webhooks.
            VendorError: see :meth:`request`.
        """
        if webhook_url is not None and not self.supports_webhooks:
            raise ValueError(f"{self.vendor} documents no webhook; poll instead")
        return self._submit(image_url, webhook_url)

    def status(self, submission: Submission) -> Job:
        """One status read (retried as :meth:`request` says)."""
        return self._read(submission)

    def wait(self, submission: Submission, *, timeout_s: float | None = None) -> Job:
        """Poll until the job ends: reads spaced by ``poll.backoff`` (a 429 on a read waits
        its ``Retry-After``), for at most ``timeout_s`` (default ``poll.timeout_s``).

        Returns:
            The succeeded job.

        Raises:
            JobFailed: the job ended without a result (the vendor's message).
            JobTimeout: it had not ended after ``timeout_s`` seconds.
            VendorError: a status read failed (see :meth:`request`).
        """
        limit = self.poll.timeout_s if timeout_s is None else timeout_s
        started = self.clock.monotonic()
        delays = self.poll.backoff.delays()
        while True:
            job = self.status(submission)
            if job.status is JobStatus.SUCCEEDED:
                return job
            if job.status is JobStatus.FAILED:
                raise JobFailed(f"{self.vendor}: job {job.job_id} {job.vendor_status}: "
                                f"{job.error or 'no reason given'}", vendor=self.vendor,
                                job_id=job.job_id)
            waited = self.clock.monotonic() - started
            if waited >= limit:
                raise JobTimeout(f"{self.vendor}: job {job.job_id} still {job.vendor_status} "
                                 f"after {waited:.1f} s", vendor=self.vendor,
                                 job_id=job.job_id, waited_s=waited,
                                 last_status=job.vendor_status)
            self.clock.sleep(min(next(delays), limit - waited))

    def download(self, job: Job) -> tuple[bytes, str]:
        """The first result file of a succeeded job, and its URL.

        Result URLs are public CDN / object-storage links: the API key is not sent there.

        Raises:
            InvalidResult: the job has no result URL, or the file cannot be had (expired,
                404, or a server error after retries).
        """
        if not job.result_urls:
            raise InvalidResult(f"{self.vendor}: job {job.job_id} has no result URL",
                                vendor=self.vendor, job_id=job.job_id)
        url = job.result_urls[0]
        if url.startswith("data:"):
            try:
                return data_uri_bytes(url), url
            except ValueError as exc:
                raise InvalidResult(f"{self.vendor}: {exc}", vendor=self.vendor,
                                    job_id=job.job_id) from exc
        try:
            data = self.request("GET", url, lambda r: r.content, auth=False)
        except VendorError as exc:
            raise InvalidResult(f"{self.vendor}: result {url} cannot be downloaded: "
                                f"{exc.message}", vendor=self.vendor,
                                job_id=job.job_id) from exc
        return data, url

    def fetch(self, job: Job, expected_size: tuple[int, int] | None = None) -> Cutout:
        """Download a succeeded job's result and check it (:func:`~bgremove.png.verify_cutout`).

        Raises:
            InvalidResult: cannot be downloaded, or not an RGBA PNG of ``expected_size``.
        """
        data, url = self.download(job)
        return verify_cutout(data, expected_size, vendor=self.vendor, job_id=job.job_id,
                             url=url)

    def input_size(self, image_url: str) -> tuple[int, int]:
        """``(width, height)`` of the input, read from a ``data:`` URI or fetched.

        Raises:
            InvalidInput: it cannot be fetched or is not an image.
        """
        try:
            if image_url.startswith("data:"):
                data = data_uri_bytes(image_url)
            else:
                data = self.request("GET", image_url, lambda r: r.content, auth=False)
            return image_size(data)
        except (ValueError, VendorError) as exc:
            raise InvalidInput(f"input {image_url[:80]!r}: {exc}", vendor=self.vendor) from exc

    def remove(self, image_url: str, *, expected_size: tuple[int, int] | None = None,
               timeout_s: float | None = None) -> Cutout:
        """Submit, wait, download and check: the whole round trip.

        Args:
            expected_size: the input's ``(width, height)``; read from the input when left out.
            timeout_s: how long the call may wait for the job, counted from the call (default
                ``poll.timeout_s``): time spent retrying the submit comes out of it, so a
                caller with a deadline of its own gets its answer inside it.

        Raises:
            BackgroundRemovalError: any of its subclasses (see :meth:`request`, :meth:`wait`,
                :meth:`fetch`).
        """
        started = self.clock.monotonic()
        limit = self.poll.timeout_s if timeout_s is None else timeout_s
        size = expected_size or self.input_size(image_url)
        submission = self.submit(image_url)
        left = max(0.0, limit - (self.clock.monotonic() - started))
        job = self.wait(submission, timeout_s=left)
        return self.fetch(job, size)

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP client if it is ours."""
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> BackgroundRemover:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"


#: Vendor slug -> its client class (filled by the subclasses as they are defined).
REGISTRY: dict[str, type[BackgroundRemover]] = {}


def _json_object(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    return body


def _words(table: Mapping[str, JobStatus], word: str) -> JobStatus:
    """A vendor word's status; an unknown word counts as still running (a later read, or
    the time-out, settles it)."""
    return table.get(word, JobStatus.RUNNING)


def _strings(items: Any) -> tuple[str, ...]:
    return tuple(str(u) for u in items)


class PixazoRemover(BackgroundRemover):
    """Pixazo (docs/vendors/pixazo.md): ``Ocp-Apim-Subscription-Key``; submit answers 202 with a
    ``polling_url``; statuses ``QUEUED`` ``PROCESSING`` ``COMPLETED`` ``FAILED`` ``ERROR``
    (system error, not charged); results in ``output.media_url``; webhook: the status body,
    POSTed to the ``X-Webhook-URL`` header's URL, unsigned."""

    vendor = "pixazo"
    default_base_url = "https://gateway.pixazo.ai"
    SUBMIT = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"
    STATUS: ClassVar[dict[str, JobStatus]] = {
        "QUEUED": JobStatus.QUEUED, "PROCESSING": JobStatus.RUNNING,
        "COMPLETED": JobStatus.SUCCEEDED, "FAILED": JobStatus.FAILED,
        "ERROR": JobStatus.FAILED}

    def auth_headers(self) -> dict[str, str]:
        """``Ocp-Apim-Subscription-Key`` (and ``Cache-Control: no-cache`` as the page sends)."""
        return {"Ocp-Apim-Subscription-Key": self.api_key, "Cache-Control": "no-cache"}

    def _submit(self, image_url: str, webhook_url: str | None) -> Submission:
        headers = {"X-Webhook-URL": webhook_url} if webhook_url else None
        body = self.post_json(self.url(self.SUBMIT), {"image_url": image_url}, headers=headers)
        job_id = str(body["request_id"])
        return Submission(self.vendor, job_id, str(
            body.get("polling_url") or self.url(f"/v2/requests/status/{job_id}")))

    def _read(self, submission: Submission) -> Job:
        return self.request("GET", submission.status_url,
                            lambda r: self.parse_job(_json_object(r)))

    @classmethod
    def parse_job(cls, body: Mapping[str, Any]) -> Job:
        """``{request_id, status, error, output: {media_url: [...]}}``."""
        word = str(body["status"])
        output = body.get("output") or {}
        return Job(cls.vendor, str(body["request_id"]), _words(cls.STATUS, word), word,
                   _strings(output.get("media_url") or ()), body.get("error"), body)


class ApiframeRemover(BackgroundRemover):
    """Apiframe (docs/vendors/apiframe.md): ``X-API-Key``; ``POST /v2/images/background-remove``
    answers 202 ``{jobId}``; ``GET /v2/jobs/{id}`` until ``COMPLETED`` or ``FAILED``; results in
    ``result.images``; webhook: ``webhook_url`` in the body, the job body POSTed, unsigned."""

    vendor = "apiframe"
    default_base_url = "https://api.apiframe.ai"
    STATUS: ClassVar[dict[str, JobStatus]] = {
        "QUEUED": JobStatus.QUEUED, "PROCESSING": JobStatus.RUNNING,
        "COMPLETED": JobStatus.SUCCEEDED, "FAILED": JobStatus.FAILED}

    def auth_headers(self) -> dict[str, str]:
        """``X-API-Key``."""
        return {"X-API-Key": self.api_key}

    def _submit(self, image_url: str, webhook_url: str | None) -> Submission:
        request: dict[str, Any] = {"model": "bria-bg-remove",
                                   "briaBgRemoveParams": {"image": image_url,
                                                          "content_moderation": True}}
        if webhook_url:
            request["webhook_url"] = webhook_url
        body = self.post_json(self.url("/v2/images/background-remove"), request)
        job_id = str(body["jobId"])
        return Submission(self.vendor, job_id, self.url(f"/v2/jobs/{job_id}"))

    def _read(self, submission: Submission) -> Job:
        return self.request("GET", submission.status_url,
                            lambda r: self.parse_job(_json_object(r)))

    @classmethod
    def parse_job(cls, body: Mapping[str, Any]) -> Job:
        """``{jobId, status, result: {images: [...]}, error}``."""
        word = str(body["status"])
        result = body.get("result") or {}
        return Job(cls.vendor, str(body["jobId"]), _words(cls.STATUS, word), word,
                   _strings(result.get("images") or ()), body.get("error"), body)


class GmiCloudRemover(BackgroundRemover):
    """GMI Cloud (docs/vendors/gmicloud.md): ``Authorization: Bearer``; the request queue
    ``/api/v1/ie/requestqueue/apikey/requests``; statuses ``queued`` ``processing`` ``success``
    ``failed`` (clients also see ``created``, ``dispatched``, ``cancelled``); results in
    ``outcome.media_urls[*].url`` (or plain strings). No webhook is documented."""

    vendor = "gmicloud"
    default_base_url = "https://console.gmicloud.ai"
    supports_webhooks = False
    QUEUE = "/api/v1/ie/requestqueue/apikey/requests"
    STATUS: ClassVar[dict[str, JobStatus]] = {
        "created": JobStatus.QUEUED, "queued": JobStatus.QUEUED,
        "dispatched": JobStatus.RUNNING, "processing": JobStatus.RUNNING,
        "success": JobStatus.SUCCEEDED, "failed": JobStatus.FAILED,
        "cancelled": JobStatus.FAILED}

    def auth_headers(self) -> dict[str, str]:
        """``Authorization: Bearer KEY``."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def _submit(self, image_url: str, webhook_url: str | None) -> Submission:
        body = self.post_json(self.url(self.QUEUE), {"model": "bria-image-remove-background",
                                                     "payload": {"image": image_url}})
        job_id = str(body["request_id"])
        return Submission(self.vendor, job_id, self.url(f"{self.QUEUE}/{job_id}"))

    def _read(self, submission: Submission) -> Job:
        return self.request("GET", submission.status_url,
                            lambda r: self.parse_job(_json_object(r)))

    @classmethod
    def parse_job(cls, body: Mapping[str, Any]) -> Job:
        """``{request_id, status, outcome: {media_urls: [{url}] | [str]}, error_message}``."""
        word = str(body["status"])
        media = (body.get("outcome") or {}).get("media_urls") or ()
        urls = tuple(str(m["url"]) if isinstance(m, dict) else str(m) for m in media)
        return Job(cls.vendor, str(body["request_id"]), _words(cls.STATUS, word), word, urls,
                   body.get("error_message"), body)

    @classmethod
    def parse_webhook(cls, body: Mapping[str, Any]) -> Job:
        """GMI Cloud sends no webhooks.

        Raises:
            MalformedWebhook: always.
        """
        raise MalformedWebhook("gmicloud documents no webhook")


class FalRemover(BackgroundRemover):
    """fal.ai's queue (docs/vendors/fal.md): ``Authorization: Key``; submit to
    ``queue.fal.run`` answers ``{request_id, status_url, response_url}``; the status is
    ``IN_QUEUE`` / ``IN_PROGRESS`` / ``COMPLETED`` (a failed request is ``COMPLETED`` with an
    ``error``); the result (``{image: {url}}``) is a second GET of ``response_url``.
    Webhook: ``?fal_webhook=URL``, signed with ED25519 (see :mod:`bgremove.webhooks`)."""

    vendor = "fal"
    default_base_url = "https://queue.fal.run"
    #: The public keys fal signs webhooks with (docs/vendors/fal.md: on fal's REST host).
    default_jwks_url = "https://rest.fal.ai/.well-known/jwks.json"
    APP = "fal-ai/bria"
    STATUS: ClassVar[dict[str, JobStatus]] = {
        "IN_QUEUE": JobStatus.QUEUED, "IN_PROGRESS": JobStatus.RUNNING,
        "COMPLETED": JobStatus.SUCCEEDED}

    def auth_headers(self) -> dict[str, str]:
        """``Authorization: Key KEY``."""
        return {"Authorization": f"Key {self.api_key}"}

    def _submit(self, image_url: str, webhook_url: str | None) -> Submission:
        params = {"fal_webhook": webhook_url} if webhook_url else None
        body = self.post_json(self.url(f"/{self.APP}/background/remove"),
                              {"image_url": image_url}, params=params)
        job_id = str(body["request_id"])
        base = self.url(f"/{self.APP}/requests/{job_id}")
        return Submission(self.vendor, job_id, str(body.get("status_url") or base + "/status"),
                          str(body.get("response_url") or base))

    def _read(self, submission: Submission) -> Job:
        status = self.get_json(submission.status_url)
        word = str(status["status"])
        if word != "COMPLETED":
            return Job(self.vendor, submission.job_id, _words(self.STATUS, word), word,
                       raw=status)
        if status.get("error"):
            return Job(self.vendor, submission.job_id, JobStatus.FAILED, word,
                       error=str(status["error"]), raw=status)
        assert submission.result_url is not None
        try:
            result = self.get_json(submission.result_url)
        except (RequestRejected, VendorUnavailable) as exc:
            # A failed request's result answers 422/500 with the model's error.
            return Job(self.vendor, submission.job_id, JobStatus.FAILED, word,
                       error=exc.message, raw=status)
        return self.parse_job({"request_id": submission.job_id, "status": "OK",
                               "payload": result})

    @classmethod
    def parse_job(cls, body: Mapping[str, Any]) -> Job:
        """The webhook shape ``{request_id, status: "OK" | "ERROR", payload, error?}``; a
        result ``payload`` is ``{image: {url}}``."""
        word = str(body["status"])
        payload = body.get("payload") or {}
        if word == "OK":
            return Job(cls.vendor, str(body["request_id"]), JobStatus.SUCCEEDED, word,
                       (str(payload["image"]["url"]),), None, body)
        if word != "ERROR":
            raise ValueError(f"fal webhook status {word!r} is neither OK nor ERROR")
        detail = payload.get("detail")
        reason = detail[0].get("msg") if isinstance(detail, list) and detail else detail
        error = ": ".join(str(x) for x in (body.get("error"), reason) if x)
        return Job(cls.vendor, str(body["request_id"]), JobStatus.FAILED, word, (),
                   error or None, body)


class RunflowRemover(BackgroundRemover):
    """Runflow (docs/vendors/runflow.md): ``Authorization: Bearer``; submit answers 201 with a
    run (``id``); ``GET /v1/runs/{id}``; ``status_code`` ``queued`` ``dispatching``
    ``running`` ``succeeded`` ``partial_succeeded`` ``failed`` ``cancelled``; results in
    ``output.outputs[*].url``. Webhook: ``callback_url``, HMAC-signed once a callback secret
    exists (:meth:`create_callback_secret`)."""

    vendor = "runflow"
    default_base_url = "https://api.runflow.io"
    STATUS: ClassVar[dict[str, JobStatus]] = {
        "queued": JobStatus.QUEUED, "dispatching": JobStatus.RUNNING,
        "running": JobStatus.RUNNING, "succeeded": JobStatus.SUCCEEDED,
        "partial_succeeded": JobStatus.SUCCEEDED, "failed": JobStatus.FAILED,
        "cancelled": JobStatus.FAILED}

    def auth_headers(self) -> dict[str, str]:
        """``Authorization: Bearer KEY``."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def _submit(self, image_url: str, webhook_url: str | None) -> Submission:
        request: dict[str, Any] = {"input": {"image_url": image_url, "sync_mode": False}}
        if webhook_url:
            request["callback_url"] = webhook_url
        body = self.post_json(self.url("/v1/models/bria/background/remove/runs"), request)
        job_id = str(body["id"])
        return Submission(self.vendor, job_id, self.url(f"/v1/runs/{job_id}"))

    def _read(self, submission: Submission) -> Job:
        return self.request("GET", submission.status_url,
                            lambda r: self.parse_job(_json_object(r)))

    @classmethod
    def parse_job(cls, body: Mapping[str, Any]) -> Job:
        """A run ``{id, status_code, output: {outputs: [{url}]}, failure_message}``."""
        word = str(body["status_code"])
        return Job(cls.vendor, str(body["id"]), _words(cls.STATUS, word), word,
                   cls._urls(body.get("output")), body.get("failure_message"), body)

    @classmethod
    def parse_webhook(cls, body: Mapping[str, Any]) -> Job:
        """The callback ``{event, run_id, status, output, ...}`` (docs/vendors/runflow.md, Callback
        payload).

        Raises:
            MalformedWebhook: not that shape.
        """
        try:
            word = str(body["status"])
            error = None
            if word != "succeeded":
                error = str(body.get("failure_message") or body.get("event") or word)
            return Job(cls.vendor, str(body["run_id"]), _words(cls.STATUS, word), word,
                       cls._urls(body.get("output")), error, body)
        except (KeyError, TypeError, AttributeError) as exc:
            raise MalformedWebhook(f"runflow: not a callback body ({exc!r})") from exc

    @staticmethod
    def _urls(output: Any) -> tuple[str, ...]:
        return tuple(str(o["url"]) for o in (output or {}).get("outputs") or ())

    def create_callback_secret(self, label: str = "bgremove") -> str:
        """``POST /v1/callback-secrets``: a new signing secret (``whsec_...``), shown this once.

        Callbacks are signed with the newest secret from then on (docs/vendors/runflow.md).
        """
        body = self.post_json(self.url("/v1/callback-secrets"), {"label": label})
        return str(body["plain_secret"])


class BriaRemover(BackgroundRemover):
    """Bria's own platform API v2 (docs/vendors/bria.md; docs.bria.ai): header ``api_token``;
    ``POST /v2/image/edit/remove_background`` answers 202 ``{request_id, status_url}``;
    ``GET /v2/status/{id}`` shows ``IN_PROGRESS`` then ``COMPLETED`` (``result.image_url``) or
    ``ERROR`` (``error{code, message, details}``); ``UNKNOWN`` counts as still running, as
    ``bria-client`` polls on it. Webhook: ``webhook_url`` in the body, signed with an HMAC
    keyed by the API token (see :mod:`bgremove.webhooks`)."""

    vendor = "bria"
    default_base_url = "https://engine.prod.bria-api.com"
    SUBMIT = "/v2/image/edit/remove_background"
    STATUS: ClassVar[dict[str, JobStatus]] = {
        "IN_PROGRESS": JobStatus.RUNNING, "UNKNOWN": JobStatus.RUNNING,
        "COMPLETED": JobStatus.SUCCEEDED, "ERROR": JobStatus.FAILED}

    def auth_headers(self) -> dict[str, str]:
        """``api_token: KEY``."""
        return {"api_token": self.api_key}

    def _submit(self, image_url: str, webhook_url: str | None) -> Submission:
        request: dict[str, Any] = {"image": image_url}
        if webhook_url:
            request["webhook_url"] = webhook_url
        body = self.post_json(self.url(self.SUBMIT), request)
        job_id = str(body["request_id"])
        return Submission(self.vendor, job_id,
                          str(body.get("status_url") or self.url(f"/v2/status/{job_id}")))

    def _read(self, submission: Submission) -> Job:
        return self.request("GET", submission.status_url,
                            lambda r: self.parse_job(_json_object(r)))

    @classmethod
    def parse_job(cls, body: Mapping[str, Any]) -> Job:
        """``{request_id, status, result: {image_url}, error: {code, message, details}}``."""
        word = str(body["status"])
        result = body.get("result") or {}
        urls = (str(result["image_url"]),) if result.get("image_url") else ()
        error = body.get("error")
        message = None
        if isinstance(error, dict):
            message = ": ".join(str(error[k]) for k in ("message", "details") if error.get(k))
        return Job(cls.vendor, str(body["request_id"]), _words(cls.STATUS, word), word, urls,
                   message or None, body)


#: Every vendor slug, in a stable order.
VENDORS: tuple[str, ...] = tuple(REGISTRY)


def create_remover(vendor: str, api_key: str, **kwargs: Any) -> BackgroundRemover:
    """The client for ``vendor`` (``pixazo``, ``apiframe``, ``gmicloud``, ``fal``,
    ``runflow``, ``bria``); ``kwargs`` go to :class:`BackgroundRemover`.

    Raises:
        KeyError: unknown vendor.
    """
    try:
        cls = REGISTRY[vendor]
    except KeyError:
        raise KeyError(f"unknown vendor {vendor!r}; known: {', '.join(REGISTRY)}") from None
    return cls(api_key, **kwargs)


__all__ = [
    "REGISTRY", "VENDORS", "ApiframeRemover", "BackgroundRemovalError", "BackgroundRemover",
    "BriaRemover",
    "FalRemover", "GmiCloudRemover", "Job", "JobStatus", "PixazoRemover", "RunflowRemover",
    "Submission", "create_remover",
]
