"""What can go wrong when removing a background, as one small exception tree.

Every exception the client raises is a :class:`BackgroundRemovalError` (HTTP answers, jobs,
results, failover) or a :class:`WebhookError` (callbacks). ``httpx`` errors never leak out:
they are translated at one place (:meth:`bgremove.vendors.BackgroundRemover.request`).
"""

from __future__ import annotations

from collections.abc import Sequence


class BackgroundRemovalError(Exception):
    """Base class. ``vendor`` is the vendor slug (``"pixazo"``, ...), ``job_id`` the vendor's
    id of the job when there is one."""

    def __init__(self, message: str, *, vendor: str = "", job_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.vendor = vendor
        self.job_id = job_id

    @property
    def fail_over(self) -> bool:
        """True when another vendor may well succeed where this one did not."""
        return True


class InvalidInput(BackgroundRemovalError):
    """The input image cannot be used (unreadable, not an image); no vendor would take it."""

    @property
    def fail_over(self) -> bool:
        """A bad input fails everywhere: no failover."""
        return False


class VendorError(BackgroundRemovalError):
    """The vendor answered an HTTP error (after the retries this error allows).

    Attributes:
        status: HTTP status, or ``None`` when no answer came (connection dropped, time-out,
            unreadable body).
        body: the answer's body as text (may be empty).
    """

    def __init__(self, message: str, *, vendor: str = "", status: int | None = None,
                 body: str = "", job_id: str | None = None) -> None:
        super().__init__(message, vendor=vendor, job_id=job_id)
        self.status = status
        self.body = body


class AuthenticationError(VendorError):
    """401 or 403: the API key is missing, wrong or not allowed. Never retried."""


class PaymentRequired(VendorError):
    """402: the account cannot pay for the image (Pixazo "Insufficient Balance", fal "Exhausted
    balance", Runflow "Insufficient credits", ...). Never retried: top up, or fail over."""


class RateLimited(VendorError):
    """429 still answered after every retry, or a ``Retry-After`` longer than the client may
    wait. ``retry_after`` is the last ``Retry-After`` in seconds (``None``: none sent)."""

    def __init__(self, message: str, *, vendor: str = "", retry_after: float | None = None,
                 body: str = "") -> None:
        super().__init__(message, vendor=vendor, status=429, body=body)
        self.retry_after = retry_after


class RequestRejected(VendorError):
    """Another 4xx (400, 404, 422, ...): the request itself is wrong; another vendor would
    most likely refuse it too, so this does not fail over."""

    @property
    def fail_over(self) -> bool:
        """A malformed request fails everywhere: no failover."""
        return False


class VendorUnavailable(VendorError):
    """5xx, a dropped connection, a time-out or an unreadable body, after every retry."""


class JobFailed(BackgroundRemovalError):
    """The job ended without a result (Pixazo ``FAILED``/``ERROR``, Apiframe ``FAILED``, GMI
    ``failed``, fal ``COMPLETED`` with an ``error``, Runflow ``failed``/``cancelled``).
    ``message`` is the vendor's own explanation."""


class JobTimeout(BackgroundRemovalError):
    """The job did not end within the time allowed.

    Attributes:
        waited_s: seconds waited, on the client's clock.
        last_status: the vendor's last status word (``"PROCESSING"``, ...).
    """

    def __init__(self, message: str, *, vendor: str = "", job_id: str | None = None,
                 waited_s: float = 0.0, last_status: str = "") -> None:
        super().__init__(message, vendor=vendor, job_id=job_id)
        self.waited_s = waited_s
        self.last_status = last_status


class InvalidResult(BackgroundRemovalError):
    """The result file is not what a background removal must give: not a PNG, truncated,
    without an alpha channel, empty alpha, or a size other than the input's; or it could not
    be downloaded (expired, 404)."""


class AllVendorsFailed(BackgroundRemovalError):
    """Every vendor of a :class:`~bgremove.failover.FailoverRemover` failed (or was resting).

    ``errors`` holds each vendor's error, in the order they were tried.
    """

    def __init__(self, errors: Sequence[BackgroundRemovalError]) -> None:
        summary = "; ".join(f"{e.vendor}: {type(e).__name__}: {e.message}" for e in errors)
        super().__init__(f"every vendor failed: {summary or 'none available'}")
        self.errors = list(errors)


class WebhookError(Exception):
    """Base class of errors about an incoming webhook; answer it with a 4xx."""


class InvalidSignature(WebhookError):
    """The signature is missing, malformed, stale or does not match the body: do not trust the
    body (answer 401)."""


class UnknownJob(WebhookError):
    """An unsigned vendor's webhook names a job this process did not submit (answer 404)."""


class MalformedWebhook(WebhookError):
    """The body is not the vendor's webhook shape (answer 400)."""
