"""The emulator's error tree.

The core raises these; each vendor adapter renders them in its vendor's JSON body
(see ``emulator.vendors.base.VendorAdapter.render_error``). One exception path, no
per-route try/except.
"""

from __future__ import annotations


class EmulatorError(Exception):
    """An error with an HTTP status, a machine code and a human message.

    Attributes:
        status: HTTP status code the vendor would answer with.
        code: short machine-readable code (``"invalid_input"``, ...), vendor-neutral.
        message: what was wrong, written for the client's developer.
        field: the request field at fault, when there is one (``"image_url"``).
        retry_after: seconds a client should wait (429 only), else ``None``.
    """

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.field = field
        self.retry_after = retry_after


class Unauthorized(EmulatorError):
    """401: missing, empty or (in strict key mode) unknown API key."""

    status = 401
    code = "unauthorized"


class AdminTokenRequired(Unauthorized):
    """401 from the control plane: no admin token, or a wrong one (``--admin-token``).

    Answered with ``WWW-Authenticate: Bearer realm="rmbg-emulator"`` (RFC 6750), plus
    ``error="invalid_token"`` for a wrong token.

    Attributes:
        challenge: the ``WWW-Authenticate`` header value.
    """

    code = "admin_token"

    def __init__(self, message: str, *, error: str | None) -> None:
        super().__init__(message)
        self.challenge = 'Bearer realm="rmbg-emulator"' + (f', error="{error}"' if error else "")


class PaymentRequired(EmulatorError):
    """402: the key's balance (USD) cannot cover the job's price."""

    status = 402
    code = "insufficient_balance"


class NotFound(EmulatorError):
    """404: unknown job, request, run or file."""

    status = 404
    code = "not_found"


class InvalidInput(EmulatorError):
    """400 (or 422 where the vendor says so): the request body is not acceptable."""

    status = 400
    code = "invalid_input"


class ValidationFailed(InvalidInput):
    """422: the body is JSON but a field is missing or of the wrong type."""

    status = 422
    code = "validation_error"


class Conflict(EmulatorError):
    """409 (or the vendor's equivalent): the operation does not fit the job's state."""

    status = 409
    code = "conflict"


class RateLimited(EmulatorError):
    """429: too many requests or too many concurrent jobs for the key."""

    status = 429
    code = "rate_limited"


class GatewayTimeout(EmulatorError):
    """504: a synchronous call (fal.run, Runflow ``sync_mode``) waited ``Settings.max_wait_s``
    seconds for the image work without seeing it end.

    fal documents ``request_timeout`` as 504 with ``{"detail", "error_type"}``
    (https://fal.ai/docs/documentation/model-apis/request-errors); Runflow documents no
    time-out, so it gets 504 in its ``{"detail": ...}`` error body.
    """

    status = 504
    code = "request_timeout"


class InputImageError(EmulatorError):
    """The input image could not be had: fetch failed, too large, not an image, a bomb.

    Raised inside a job's work (the job then ends in the vendor's failure status) or at
    submit, as a 400, when the problem can be known then.
    """

    status = 400
    code = "input_image_error"
