"""GMI Cloud: Bria remove-background on its request queue at ``console.gmicloud.ai``.

Facts from ``docs/vendors/gmicloud.md`` (GMI's page on https://docs.gmicloud.ai/ and its clients);
the record's shape (``model``, ``payload``, ``outcome.media_urls[{id, url}]``, integer
``created_at``/``updated_at``/``queued_at``) and the ``?model_id=`` filter of the list come
from GMI's page for another model on the same request queue (minimax-tts-speech-2.8-hd,
docs.gmicloud.ai).

* ``POST /api/v1/ie/requestqueue/apikey/requests`` with ``Authorization: Bearer KEY`` and
  ``{"model": "bria-image-remove-background", "payload": {"image": URL | base64 | data URI}}``
  -> 200 ``{request_id, model, status: "queued", created_at, updated_at, queued_at}``.
* ``GET .../requests`` -> ``{"requests": [record, ...]}``: the caller's requests, newest first,
  ``?model_id=`` filters. The emulator's choice of wrapper key (published clients read
  ``requests``, ``data``, ``items`` or a bare list). Listing is not a status read.
* ``GET .../requests/{request_id}`` -> the record: ``queued`` -> ``processing`` -> ``success``
  (``outcome.media_urls``) or ``failed`` (``error_message``).
* Errors are JSON ``{"error": message}`` (what published GMI clients unwrap); an unknown model
  or a bad payload is a 400.
* Inline image data over 1 KiB is echoed in ``payload`` shortened (the emulator's choice, to
  keep polls cheap).

GMI Cloud's official SDK (``gmicloud``; ``docs/vendors/gmicloud.md``, "Official Python SDK
(login)") logs in with e-mail and password on the same host and uses the queue without ``/apikey/``:

* ``POST /api/v1/me/auth-tokens`` ``{email, password}`` -> ``{authToken, is2FARequired}``;
  ``POST /api/v1/me/sessions`` ``{type, authToken, otpCode}`` -> ``{accessToken,
  refreshToken}``; ``PATCH /api/v1/me/sessions`` ``{refreshToken}`` -> a new pair;
  ``GET /api/v1/me/profile`` -> ``{user, organization}``. IAM errors are ``{"message": ...}``
  (the SDK reads ``message`` outside the queue).
* ``/api/v1/ie/requestqueue/requests[/{request_id}]`` with ``Authorization: Bearer
  <accessToken>``: the same jobs and records as the ``/apikey/`` routes.
* Tokens are HS256 JWTs signed with a per-process secret (kept by a durable state store,
  ``--state``, so that tokens survive a restart; with the memory store they do not),
  dated by the emulator's clock: access 1 h, refresh 7 days, the login's auth token 5 min.
  The SDK reads ``userId`` (access) and ``exp`` (refresh) without checking the signature.
* The account's e-mail is its API key (billing, rate limits, scoping, journal, rules with
  ``api_key``); with ``--keys`` only listed e-mails log in (any password). A password
  ``fault.<rule>`` makes the account's request-queue key ``fault.<rule>``, so the ``fault.``
  key machinery applies the rule to its queue calls (login and profile stay clean, so the
  SDK's constructor succeeds).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from emulator.core.faults import RuleError
from emulator.core.inputs import parse_source
from emulator.core.jobs import Job, JobStatus, Task
from emulator.errors import EmulatorError, InvalidInput, Unauthorized
from emulator.vendors.base import HostSpec, KeyHeader, VendorAdapter

MODEL = "bria-image-remove-background"
BASE = "/api/v1/ie/requestqueue/apikey/requests"
#: The request queue as the SDK calls it: ``Authorization: Bearer <accessToken>``.
SESSION_BASE = "/api/v1/ie/requestqueue/requests"
IAM = "/api/v1/me"
QUEUE_PREFIX = "/api/v1/ie/requestqueue/"
FAULT_PASSWORD = "fault."


def _bearer(what: str) -> KeyHeader:
    """``Authorization: Bearer <what>``, the scheme word case-insensitive, with the
    emulator's 401 messages naming ``what``."""
    return KeyHeader("authorization", scheme="Bearer", missing="missing Authorization header",
                     wrong_scheme=f"Authorization must be 'Bearer <{what}>'",
                     empty=f"missing {what} after 'Bearer'")


#: The key on the ``/apikey/`` routes (docs/vendors/gmicloud.md, API Endpoint &
#: Authentication).
API_KEY_HEADER = _bearer("API key")
#: The access token on the SDK's routes (the session queue and the IAM service).
ACCESS_TOKEN_HEADER = _bearer("access token")

#: Operations of the IAM service, whose errors are ``{"message": ...}``.
IAM_OPERATIONS = frozenset({"login", "session.create", "session.refresh", "profile"})

#: Token lifetimes, seconds (the emulator's choice: GMI does not publish them).
AUTH_TOKEN_TTL_S = 300
ACCESS_TOKEN_TTL_S = 3600
REFRESH_TOKEN_TTL_S = 7 * 24 * 3600
#: Signs every token of this process (random at start-up; a durable state store puts the
#: saved one back, :meth:`GmiCloudAdapter.saved_state`).
_SECRET = secrets.token_bytes(32)
_ALGORITHM = "HS256"
_USER_NS = uuid.uuid5(uuid.NAMESPACE_DNS, "users.console.gmicloud.ai")
_ORG_NS = uuid.uuid5(uuid.NAMESPACE_DNS, "organizations.console.gmicloud.ai")

STATUS_WORDS: dict[JobStatus, str] = {
    JobStatus.QUEUED: "queued",
    JobStatus.PROCESSING: "processing",
    JobStatus.SUCCEEDED: "success",
    JobStatus.FAILED: "failed",
    JobStatus.ERROR: "failed",
    JobStatus.CANCELLED: "cancelled",
}

ECHO_LIMIT = 1024


def _unix(ts: float | None) -> int | None:
    return None if ts is None else int(ts)


@dataclass(frozen=True)
class Account:
    """A GMI Cloud login, as its tokens carry it.

    Attributes:
        email: the e-mail it logged in with (its API key for everything but faults).
        fault: the rule text of a ``fault.<rule>`` password, else ``None``.
    """

    email: str
    fault: str | None = None

    @property
    def user_id(self) -> str:
        """A UUID stable per e-mail (the SDK reads it from the ``userId`` claim)."""
        return str(uuid.uuid5(_USER_NS, self.email.lower()))

    @property
    def organization_id(self) -> str:
        """A UUID stable per e-mail (the SDK keeps it from the profile)."""
        return str(uuid.uuid5(_ORG_NS, self.email.lower()))

    @property
    def queue_key(self) -> str:
        """The API key of its request-queue calls: ``fault.<rule>`` for a fault password
        (the middleware's ``fault.`` key rule then applies), else the e-mail."""
        return self.email if self.fault is None else FAULT_PASSWORD + self.fault


def issue_token(account: Account, kind: str, now: float, ttl_s: int) -> str:
    """An HS256 JWT of ``kind`` (``auth``, ``access`` or ``refresh``) for ``account``, issued
    at ``now`` (unix seconds, the emulator's clock) and valid ``ttl_s`` seconds. Claims:
    ``userId``, ``email``, ``type``, ``iat``, ``exp`` and, for a fault password, ``fault``."""
    claims: dict[str, Any] = {"userId": account.user_id, "email": account.email,
                              "type": kind, "iat": int(now), "exp": int(now) + ttl_s,
                              "jti": secrets.token_hex(8)}
    if account.fault is not None:
        claims["fault"] = account.fault
    return jwt.encode(claims, _SECRET, algorithm=_ALGORITHM)


def read_token(token: str, kind: str, now: float) -> Account:
    """The account of a token this process issued, of ``kind``, not expired at ``now``
    (unix seconds, the emulator's clock, so advancing the virtual clock expires tokens).

    Raises:
        Unauthorized: malformed, not signed here, of another kind, or expired.
    """
    try:
        claims = jwt.decode(token, _SECRET, algorithms=[_ALGORITHM],
                            options={"verify_exp": False, "verify_iat": False})
    except jwt.PyJWTError:
        raise Unauthorized(f"invalid {kind} token") from None
    email, fault, exp = claims.get("email"), claims.get("fault"), claims.get("exp")
    if claims.get("type") != kind or not isinstance(email, str) or not isinstance(exp, int):
        raise Unauthorized(f"invalid {kind} token")
    if exp <= now:
        raise Unauthorized(f"{kind} token expired")
    return Account(email, fault if isinstance(fault, str) else None)


class GmiCloudAdapter(VendorAdapter):
    """GMI Cloud's request queue (API-key and session routes) and the IAM login of its SDK."""

    slug = "gmicloud"
    title = "GMI Cloud"
    hosts = (HostSpec("console.gmicloud.ai", ""),)
    source = "docs/vendors/gmicloud.md"
    status_words = STATUS_WORDS
    other_words = {"created": JobStatus.QUEUED, "dispatched": JobStatus.PROCESSING}
    job_not_found = "request {id} not found"

    def routes(self) -> dict[str, list[BaseRoute]]:
        """Submit, list and get (API key and session routes) and the IAM login, on the
        console host."""
        return {"api": [
            self.route(BASE, self.submit, methods=["POST"], operation="submit"),
            self.route(BASE, self.list_requests, methods=["GET"], operation="list"),
            self.route(BASE + "/{request_id}", self.status, methods=["GET"],
                       operation="status", final_read="request_id"),
            self.route(SESSION_BASE, self.submit, methods=["POST"], operation="submit.session"),
            self.route(SESSION_BASE, self.list_requests, methods=["GET"],
                       operation="list.session"),
            self.route(SESSION_BASE + "/{request_id}", self.status, methods=["GET"],
                       operation="status.session", final_read="request_id"),
            self.route(IAM + "/auth-tokens", self.login, methods=["POST"], operation="login"),
            self.route(IAM + "/sessions", self.create_session, methods=["POST"],
                       operation="session.create"),
            self.route(IAM + "/sessions", self.refresh_session, methods=["PATCH"],
                       operation="session.refresh"),
            self.route(IAM + "/profile", self.profile, methods=["GET"], operation="profile"),
        ]}

    def saved_state(self) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        """The token secret (``{"token_secret": hex}``), so that access and refresh tokens
        issued before a restart still work after it."""
        def load(value: Any) -> None:
            global _SECRET
            _SECRET = bytes.fromhex(value["token_secret"])

        return (lambda: {"token_secret": _SECRET.hex()}), load

    def api_key(self, request: Request) -> str:
        """The caller's key: ``Authorization: Bearer KEY`` on the ``/apikey/`` routes
        (docs/vendors/gmicloud.md, API Endpoint & Authentication); on the SDK's routes the
        bearer is an access token and the key is its account's (:attr:`Account.queue_key` on
        the queue, the e-mail on the IAM service). The header is read by
        :data:`API_KEY_HEADER` and :data:`ACCESS_TOKEN_HEADER`.

        Raises:
            Unauthorized: no bearer, a key not accepted (``--keys``), or a token that is
                malformed, expired or not this process's.
        """
        path: str = request.scope["path"]
        session = path.startswith(IAM) or (path.startswith(QUEUE_PREFIX)
                                           and not path.startswith(BASE))
        if not session:
            return API_KEY_HEADER.read(self, request)
        bearer = ACCESS_TOKEN_HEADER.credential(request)
        account = read_token(bearer, "access", self.port.clock.now())
        return account.email if path.startswith(IAM) else account.queue_key

    def render_operation_error(self, operation: str | None, exc: EmulatorError) -> Response:
        """``{"message": message}`` on the IAM service (what the SDK reads there), else
        :meth:`render_error`; a 422 is answered as a 400 on both."""
        if operation not in IAM_OPERATIONS:
            return self.render_error(exc)
        return self.json({"message": exc.message}, status=400 if exc.status == 422
                         else exc.status)

    # -- IAM (the SDK's login) ---------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        """``POST /me/auth-tokens``: any e-mail and password (listed e-mails only with
        ``--keys``) -> ``{"authToken", "is2FARequired": false}``.

        Raises:
            InvalidInput: e-mail or password missing, an e-mail starting ``fault.``, or a
                ``fault.`` password whose rule does not parse.
            Unauthorized: the e-mail is not listed in ``--keys`` mode.
        """
        body = await self.json_object(request)
        email, password = body.get("email"), body.get("password")
        if not isinstance(email, str) or not email.strip():
            raise InvalidInput("email is required", field="email")
        if not isinstance(password, str) or not password:
            raise InvalidInput("password is required", field="password")
        email = email.strip()
        if email.startswith(FAULT_PASSWORD):
            raise InvalidInput("an email must not start with 'fault.' (it is the account's "
                               "API key); put the fault rule in the password", field="email")
        accepted = self.port.accepted_keys
        if accepted is not None and email not in accepted:
            raise Unauthorized("invalid email or password")
        fault: str | None = None
        if password.startswith(FAULT_PASSWORD):
            fault = password[len(FAULT_PASSWORD):]
            try:
                self.port.faults.parse_text(fault, source="key")
            except RuleError as exc:
                raise InvalidInput(f"fault password: {exc}", field="password") from None
            self.port.faults.expect_hidden_keys()
        token = issue_token(Account(email, fault), "auth", self.port.clock.now(),
                            AUTH_TOKEN_TTL_S)
        return self.json({"authToken": token, "is2FARequired": False})

    async def create_session(self, request: Request) -> Response:
        """``POST /me/sessions`` with the auth token -> ``{"accessToken", "refreshToken"}``.

        Raises:
            InvalidInput: no ``authToken``.
            Unauthorized: the auth token is invalid or expired.
        """
        return self._session(await self._body_token(request, "authToken", "auth"))

    async def refresh_session(self, request: Request) -> Response:
        """``PATCH /me/sessions`` with the refresh token -> a new token pair.

        Raises:
            InvalidInput: no ``refreshToken``.
            Unauthorized: the refresh token is invalid or expired.
        """
        return self._session(await self._body_token(request, "refreshToken", "refresh"))

    async def _body_token(self, request: Request, field: str, kind: str) -> Account:
        """The account of the ``kind`` token in the body's ``field``.

        Raises:
            InvalidInput: the field is missing or empty.
            Unauthorized: the token is invalid, expired or of another kind.
        """
        token = (await self.json_object(request)).get(field)
        if not isinstance(token, str) or not token:
            raise InvalidInput(f"{field} is required", field=field)
        return read_token(token, kind, self.port.clock.now())

    def _session(self, account: Account) -> Response:
        now = self.port.clock.now()
        return self.json({
            "accessToken": issue_token(account, "access", now, ACCESS_TOKEN_TTL_S),
            "refreshToken": issue_token(account, "refresh", now, REFRESH_TOKEN_TTL_S),
        })

    async def profile(self, request: Request) -> Response:
        """``GET /me/profile`` -> ``{"user": {id, email, firstName, lastName},
        "organization": {id, role}}`` of the access token's account.

        Raises:
            Unauthorized: no valid access token.
        """
        account = Account(self.api_key(request))
        return self.json({
            "user": {"id": account.user_id, "email": account.email, "firstName": "",
                     "lastName": ""},
            "organization": {"id": account.organization_id, "role": "owner"},
        })

    def render_error(self, exc: EmulatorError) -> Response:
        """``{"error": message}``; a 422 is answered as GMI's 400."""
        status = 400 if exc.status == 422 else exc.status
        message = exc.message
        if status == 402:
            message = f"insufficient balance: {exc.message}"
        return self.json({"error": message}, status=status)

    async def submit(self, request: Request) -> Response:
        """Queue a background removal; 200 with the new request record."""
        key = self.api_key(request)
        body = await self.json_object(request)
        model = body.get("model")
        if model != MODEL:
            raise InvalidInput(
                f"model {model!r} is not available on this endpoint; use {MODEL!r}",
                field="model")
        payload = body.get("payload")
        if not isinstance(payload, dict):
            raise InvalidInput("payload must be an object holding the image", field="payload")
        if payload.get("image") is None:
            raise InvalidInput("payload.image is required (URL or base64)",
                               field="payload.image")
        source = parse_source(payload["image"], field="payload.image", allow_base64=True)
        job = self.submit_job(
            request, job_id=str(uuid.uuid4()), operation="submit", api_key=key,
            task=Task("remove", (source,)), metadata={"payload": self._echo(payload)})
        return self.json({
            "request_id": job.id,
            "model": MODEL,
            "status": STATUS_WORDS[job.status],
            "created_at": _unix(job.created_at),
            "updated_at": _unix(job.updated_at),
            "queued_at": _unix(job.created_at),
        })

    async def list_requests(self, request: Request) -> Response:
        """The caller's requests, newest first (``?model_id=`` filters)."""
        key = self.api_key(request)
        model_id = request.query_params.get("model_id")
        engine = self.port.jobs
        if model_id not in (None, "", MODEL):
            return self.json({"requests": []})
        found = sorted(engine.jobs(vendor=self.slug, api_key=key),
                       key=lambda j: j.created_at, reverse=True)
        records = []
        for job in found:
            await engine.refresh(job)
            records.append(self.render_job(job, self.file_urls(request, job)))
        return self.json({"requests": records})

    async def status(self, request: Request) -> Response:
        """One request record (docs/vendors/gmicloud.md, Checking Request Status)."""
        job = self.caller_job(request, request.path_params["request_id"])
        await self.port.jobs.observe(job)
        return self.json(self.render_job(job, self.file_urls(request, job)))

    def render_job(self, job: Job, urls: list[str]) -> dict[str, Any]:
        """The request record; ``outcome`` is ``{}`` until success."""
        status = self.status_word(job)
        outcome: dict[str, Any] = {}
        if job.status is JobStatus.SUCCEEDED:
            outcome = {"media_urls": [{"id": str(i), "url": url} for i, url in enumerate(urls)]}
        record: dict[str, Any] = {
            "request_id": job.id,
            "model": MODEL,
            "status": status,
            "is_public": False,
            "payload": job.metadata.get("payload", {}),
            "outcome": outcome,
            "created_at": _unix(job.created_at),
            "updated_at": _unix(job.updated_at),
            "queued_at": _unix(job.created_at),
        }
        if job.status in (JobStatus.FAILED, JobStatus.ERROR):
            record["error_message"] = job.error
        return record

    @staticmethod
    def _echo(payload: dict[str, Any]) -> dict[str, Any]:
        echo = dict(payload)
        image = echo.get("image")
        if isinstance(image, str) and len(image) > ECHO_LIMIT and not image.lower().startswith(
                ("http://", "https://")):
            echo["image"] = f"{image[:64]}...({len(image)} characters)"
        return echo
