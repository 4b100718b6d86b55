"""The adapter base class: hosts, routes, auth, the JSON body, public URLs and error rendering.

An adapter parses its vendor's wire format, checks the auth header, calls the core and renders
the answer in the vendor's shape. It holds no state, sleeps and retries. Subclasses register
themselves by defining ``slug`` (as respx's ``Pattern.__init_subclass__`` does), so a sixth
vendor is one new module.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import urlsplit
from xml.sax.saxutils import escape as xml_escape

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulator.context import CTX_KEY, UNREAD, RequestContext
from emulator.core.files import StoredFile
from emulator.core.jobs.model import JobStatus
from emulator.core.webhooks import RetryPolicy, WebhookMessage
from emulator.errors import EmulatorError, InvalidInput, NotFound, Unauthorized
from emulator.jsonbody import parse_json_async
from emulator.vendors.finalreads import FinalReadRoute, FinalReads

if TYPE_CHECKING:
    from emulator.core.clock import Clock
    from emulator.core.faults import FaultRules
    from emulator.core.jobs import Job, JobEngine, Task
    from emulator.core.urls import OwnUrls
    from emulator.core.webhooks import Secrets
    from emulator.settings import Settings

log = logging.getLogger("emulator.vendors")

Endpoint = Callable[[Request], Awaitable[Response]]

#: scope key holding the JSON body the request guard already parsed (parsed once).
JSON_KEY = "rmbg.json"
#: scope key holding the InvalidInput the guard's parse raised (so a bad body is parsed once).
JSON_ERROR_KEY = "rmbg.json_error"


class RequestCheck(Protocol):
    """Checks a request against its vendor's contract (:class:`emulator.guard.RequestGuard`)."""

    async def check(self, adapter: VendorAdapter, operation: str, request: Request) -> None:
        """Check ``request`` of ``adapter``'s ``operation``.

        Raises:
            ValidationFailed: strict mode, and the request breaks the contract.
        """
        ...


class VendorPort(Protocol):
    """The narrow port through which an adapter reaches the core: all it may use.

    The application's wiring (:class:`emulator.app.Emulator`) provides it; a test may pass
    any object of this shape. Attributes (read-only):
        settings: the emulator's settings (body limits, ``webhook_secret``, ...).
        jobs: the job engine (submit, find, cancel, files, billing).
        clock: the emulator's clock (unix seconds; virtual when frozen).
        secrets: per-key webhook signing secrets.
        faults: the fault rules (to parse a rule carried in a credential).
        guard: the contract check every route runs first.
        urls: the emulator's own URLs (output file URLs).
        accepted_keys: the API keys strict key mode accepts; ``None``: any key.
    """

    @property
    def settings(self) -> Settings: ...
    @property
    def jobs(self) -> JobEngine: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def secrets(self) -> Secrets: ...
    @property
    def faults(self) -> FaultRules: ...
    @property
    def guard(self) -> RequestCheck: ...
    @property
    def urls(self) -> OwnUrls: ...
    @property
    def accepted_keys(self) -> frozenset[str] | None: ...


@dataclass(frozen=True)
class HostSpec:
    """One of a vendor's hosts.

    Attributes:
        name: the real host name (``queue.fal.run``).
        prefix: where it answers on the single port (``""`` for the root, ``"/queue"``).
        key: the adapter's own name for it (``"api"``, ``"queue"``, ...).
    """

    name: str
    prefix: str
    key: str = "api"


#: How many characters of a wrong scheme word a :attr:`KeyHeader.wrong_scheme` message shows.
SCHEME_SHOWN = 20


@dataclass(frozen=True)
class KeyHeader:
    """Where a vendor's API key is on a request, and the vendor's 401 messages when it is not.

    Either the whole header value is the key (``X-API-Key: <key>``; :attr:`scheme` ``None``),
    or the value is ``<Scheme> <key>`` (``Authorization: Key <key>``): the value, stripped, is
    split at its first space; the word before it must be :attr:`scheme`, compared
    case-insensitively. The key is stripped. Each vendor's declaration (``key_header`` of its
    adapter) cites the vendor page its header and messages come from.

    Attributes:
        name: the header's name, lower-case (``"x-api-key"``, ``"authorization"``).
        missing: the message when the header is absent, empty or blank.
        scheme: the scheme word before the key (``"Key"``, ``"Bearer"``); ``None``: the whole
            value is the key.
        wrong_scheme: the message when the value's first word is not :attr:`scheme`;
            ``{scheme}`` in it stands for the first :data:`SCHEME_SHOWN` characters of the
            word the client sent (the rest of the message is taken as is).
        empty: the message when nothing but blanks follows the scheme word.

    Raises:
        ValueError: (on construction) ``name`` not lower-case, or a ``scheme`` without its
            ``wrong_scheme`` and ``empty`` messages.
    """

    name: str
    missing: str
    scheme: str | None = None
    wrong_scheme: str = ""
    empty: str = ""

    def __post_init__(self) -> None:
        if self.name != self.name.lower():
            raise ValueError(f"key header name must be lower-case, not {self.name!r}")
        if self.scheme is not None and not (self.wrong_scheme and self.empty):
            raise ValueError(f"scheme {self.scheme!r} needs wrong_scheme and empty messages")

    def credential(self, request: Request) -> str:
        """What the header carries after the scheme word, stripped: the key, or whatever the
        vendor sends there (GMI Cloud's access tokens). Strict key mode is not applied here
        (:meth:`read` does).

        Raises:
            Unauthorized: header missing or blank (:attr:`missing`), another scheme word
                (:attr:`wrong_scheme`) or nothing after it (:attr:`empty`).
        """
        value = request.headers.get(self.name)
        if value is None or not value.strip():
            raise Unauthorized(self.missing)
        value = value.strip()
        if self.scheme is None:
            return value
        scheme, _, credential = value.partition(" ")
        if scheme.lower() != self.scheme.lower():
            raise Unauthorized(self.wrong_scheme.replace("{scheme}", scheme[:SCHEME_SHOWN]))
        if not credential.strip():
            raise Unauthorized(self.empty)
        return credential.strip()

    def read(self, adapter: VendorAdapter, request: Request) -> str:
        """The API key of ``request``: :meth:`credential`, then ``adapter``'s common key rules
        (:meth:`VendorAdapter.check_key`: strict key mode accepts listed keys only).

        Raises:
            Unauthorized: as :meth:`credential`; or ``invalid API key``, a key strict key
                mode does not accept.
        """
        return adapter.check_key(self.credential(request), message=self.missing)


#: Marks a function :func:`_noting_key` made (in its ``__dict__``).
_NOTES_KEY = "rmbg_notes_key"


def _noting_key(api_key: Callable[[Any, Request], str]) -> Callable[[Any, Request], str]:
    """Wrap an adapter's ``api_key`` so it reads the request's key once: the key it finds
    (or the error it raises, ``Unauthorized``) is kept on the request's context
    (:attr:`~emulator.context.RequestContext.key`, ``key_error``), where the fault rules,
    the guard, the handler and the journal all find it; later calls answer the same.

    The base :meth:`VendorAdapter.api_key` is wrapped where it is defined, and
    ``VendorAdapter.__init_subclass__`` wraps an adapter's own override; a function already
    wrapped is returned as it is, so no ``api_key`` is wrapped twice."""
    if getattr(api_key, "__dict__", {}).get(_NOTES_KEY):
        return api_key

    @functools.wraps(api_key)
    def wrapper(self: Any, request: Request) -> str:
        ctx: RequestContext | None = request.scope.get(CTX_KEY)
        if ctx is None or ctx.adapter is not self:
            return api_key(self, request)
        if ctx.key is UNREAD:
            try:
                ctx.key = api_key(self, request)
            except EmulatorError as exc:
                ctx.key, ctx.key_error = None, exc
                raise
        if ctx.key_error is not None:
            raise ctx.key_error
        key: str = ctx.key
        return key

    wrapper.__dict__[_NOTES_KEY] = True
    return wrapper


class VendorAdapter:
    """Base class of every vendor adapter.

    Subclasses set ``slug``, ``title``, ``hosts`` and :attr:`key_header` (where the API key
    is) and implement :meth:`routes` and :meth:`render_error`; a vendor whose key is more
    than one header's value (GMI Cloud's access tokens) overrides :meth:`api_key` instead.
    """

    registry: ClassVar[dict[str, type[VendorAdapter]]] = {}
    slug: ClassVar[str] = ""
    title: ClassVar[str] = ""
    hosts: ClassVar[tuple[HostSpec, ...]] = ()
    source: ClassVar[str] = ""
    #: The vendor's not-found message for a job id (``{id}`` is replaced by the id).
    job_not_found: ClassVar[str] = "Job {id} not found"
    #: The vendor's status word for each core status (its one mapping table); every word is
    #: in the enum its contract marks ``x-status-words: true`` (a test checks every adapter).
    status_words: ClassVar[Mapping[JobStatus, str]] = {}
    #: Words the vendor's contract documents that the emulator does not show on its own, with
    #: the core status each one means (GMI Cloud's ``dispatched``: processing; Runflow's
    #: ``partial_succeeded``: succeeded). With :attr:`status_words` they are the contract's
    #: whole status enum (a test checks every adapter); a job shows one when a ``word`` fault
    #: asks for it (:meth:`status_word`).
    other_words: ClassVar[Mapping[str, JobStatus]] = {}
    #: Where the vendor's API key is and its 401 messages, read by :meth:`api_key`; ``None``:
    #: the adapter overrides :meth:`api_key`.
    key_header: ClassVar[KeyHeader | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.slug:
            VendorAdapter.registry[cls.slug] = cls
        if "api_key" in cls.__dict__:
            cls.api_key = _noting_key(cls.__dict__["api_key"])  # type: ignore[method-assign]

    def __init__(self, port: VendorPort) -> None:
        self.port = port
        #: Kept answers of status reads of final jobs (``route(final_read=...)``).
        self._final_reads = FinalReads()

    @classmethod
    def word_meaning(cls, word: str) -> JobStatus | None:
        """The core status a documented status word means (:attr:`status_words` first, then
        :attr:`other_words`); ``None`` for a word the vendor does not document."""
        for status, known in cls.status_words.items():
            if known == word:
                return status
        return cls.other_words.get(word)

    def status_word(self, job: Job) -> str:
        """The status word ``job`` shows now: its ``word`` fault (:attr:`Job.word`) when the
        word means what the job is at (a word of a job in progress while it is queued or
        processing; a terminal word when the job ended that way, any failure counting as a
        failure), else :attr:`status_words`."""
        word = job.word
        meaning = None if word is None else self.word_meaning(word)
        if word is not None and meaning is not None and _same_phase(meaning, job.status):
            return word
        return self.status_words[job.status]

    # -- to implement ------------------------------------------------------------------------
    def routes(self) -> dict[str, list[BaseRoute]]:
        """Routes per host key (a :attr:`HostSpec.key`)."""
        raise NotImplementedError

    def render_error(self, exc: EmulatorError) -> Response:
        """The vendor's JSON error body and status for ``exc``."""
        raise NotImplementedError

    @_noting_key
    def api_key(self, request: Request) -> str:
        """The API key of ``request``, read through :attr:`key_header` (:meth:`KeyHeader.read`)
        once per request: what it finds, key or error, is kept on the request's context
        (:func:`_noting_key`, which also wraps every override).

        Raises:
            Unauthorized: missing, empty, another scheme, or not accepted (strict key mode).
            NotImplementedError: the adapter declares no :attr:`key_header` and does not
                override this.
        """
        if self.key_header is None:
            raise NotImplementedError(
                f"{type(self).__name__} declares no key_header and does not override api_key")
        return self.key_header.read(self, request)

    def saved_state(self) -> tuple[Callable[[], Any], Callable[[Any], None]] | None:
        """What this vendor keeps itself that a durable state store (``--store sqlite:``)
        saves: ``(dump, load)``, ``dump()`` giving JSON values on the event loop and
        ``load(value)`` putting them back at start-up; ``None`` (the default): nothing."""
        return None

    def render_operation_error(self, operation: str | None, exc: EmulatorError) -> Response:
        """The error body of ``operation`` (``None``: unknown). The default is
        :meth:`render_error` for every operation; a vendor whose services on one host answer
        errors in different shapes (GMI Cloud's IAM and request queue) overrides this."""
        return self.render_error(exc)

    def webhook(self, job: Job) -> WebhookMessage | None:
        """The callback to send now that ``job`` shows its final status; ``None``: none.

        The default sends nothing; adapters whose vendor documents a callback override it.
        """
        return None

    async def final_webhook(self, job: Job) -> WebhookMessage | None:
        """The callback for ``job`` at its final status, as the job engine's final listener
        (``Emulator._on_final`` in emulator/app.py, on the event loop) asks for it.

        The default is :meth:`webhook`, built on the loop (callback bodies are small); an
        adapter whose body can hold whole images (fal's ``sync_mode`` data URIs) overrides
        this to build it in a worker thread.
        """
        return self.webhook(job)

    def storage_missing(self, name: str) -> Response:
        """How the vendor's result storage answers for a result file that is gone (expired,
        or evicted from the emulator's bounded file store).

        The result URLs of these vendors point at object storage behind a CDN, not at the
        JSON API: Pixazo's are on Cloudflare R2 (docs/vendors/pixazo.md: "URLs to generated media
        (R2 CDN)"). Once a lifecycle rule has deleted an object, S3-compatible storage (R2, Amazon
        S3, the GCS XML API) answers 404 with an XML ``NoSuchKey`` error (Cloudflare's R2
        error-codes page), so that is the default. An adapter whose vendor's storage answers
        otherwise overrides this.
        """
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
                '<Message>The specified key does not exist.</Message>'
                f"<Key>{xml_escape(name)}</Key></Error>")
        return Response(body, status_code=404, media_type="application/xml")

    def unsigned_webhook(self, url: str, body: Any) -> WebhookMessage:
        """A JSON callback with no signature and one attempt (what a vendor page that
        documents a callback URL but no signature or retries promises)."""
        return WebhookMessage(url=url, body=self.json_bytes(body), headers={},
                              policy=RetryPolicy(source=self.source))

    @staticmethod
    def json_bytes(content: Any) -> bytes:
        """Compact UTF-8 JSON, as the raw body of a webhook (signatures cover these bytes)."""
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    # -- shared helpers ---------------------------------------------------------------------
    def caller_job(self, request: Request, job_id: str) -> Job:
        """The caller's job ``job_id``: the key is checked first (:meth:`api_key`), then the
        job is looked up among this vendor's jobs made with that key.

        Every vendor scopes requests to the account that made them, so a job of another key
        answers exactly as an unknown id: the same status and body, byte for byte (the
        control plane, ``/_emulator/jobs``, still sees every job; result file URLs stay
        capability URLs, as the vendors' CDN links are).

        Raises:
            Unauthorized: no key, or one strict key mode does not accept.
            NotFound: no such job of this vendor and key; the message is
                :attr:`job_not_found`.
        """
        key = self.api_key(request)
        job = self.port.jobs.find(job_id, vendor=self.slug, api_key=key)
        if job is None:
            raise NotFound(self.job_not_found.format(id=job_id))
        ctx: RequestContext | None = request.scope.get(CTX_KEY)
        if ctx is not None:
            ctx.job_id = job.id
        return job

    def submit_job(self, request: Request, *, job_id: str, operation: str, api_key: str,
                   task: Task, metadata: dict[str, Any] | None = None, watch: bool = False,
                   price_usd: Decimal | None = None) -> Job:
        """Create the job ``request`` asks for (:meth:`JobEngine.submit`), as this vendor, at
        the request's origin, with the request's fault plan (``RequestContext.plan``: its job
        and image effects act on the new job), and note its id for the journal
        (``RequestContext.job_id``).

        Raises:
            RateLimited, PaymentRequired, InvalidInput: as :meth:`JobEngine.submit`.
        """
        ctx: RequestContext | None = request.scope.get(CTX_KEY)
        job = self.port.jobs.submit(
            job_id=job_id, vendor=self.slug, operation=operation, api_key=api_key, task=task,
            origin=self.origin(request), metadata=metadata, watch=watch, price_usd=price_usd,
            plan=ctx.plan if ctx is not None else None)
        if ctx is not None:
            ctx.job_id = job.id
        return job

    def operations(self) -> frozenset[str]:
        """The operation names of this adapter's routes, on every host.

        Route names are ``"{slug}.{operation}"`` (see :meth:`route`); fault rules and the
        journal name operations this way.
        """
        names = set()
        for routes in self.routes().values():
            for route in routes:
                name = getattr(route, "name", None) or ""
                slug, sep, operation = name.partition(".")
                if sep and slug == self.slug:
                    names.add(operation)
        return frozenset(names)

    def route(self, path: str, endpoint: Endpoint, *, methods: list[str], operation: str,
              final_read: str | None = None) -> Route:
        """A Starlette route named ``"{slug}.{operation}"`` whose request is first checked
        against the vendor's contract (``operation`` is the contract's ``operationId``; see
        :mod:`emulator.guard`).

        Under a shared store (``--store redis://``, :mod:`emulator.core.state.shared`) the
        jobs and files named by the path are read from it first, and what the request
        changed is written to it before the response leaves.

        The endpoint raises :class:`EmulatorError`; the one error boundary
        (:func:`emulator.middleware.serve`) renders it through :meth:`error_response` (anything else
        as the vendor's 500), so a bad request never crashes the server.

        ``final_read`` names the path parameter holding a job id when the route is a status
        read of that job (its endpoint finds it with :meth:`caller_job`, renders it and
        changes nothing once it is final): the route is then a
        :class:`~emulator.vendors.finalreads.FinalReadRoute`, the answer for a final job is
        kept and the error boundary sends it again, before this route runs, until the job
        changes (:mod:`emulator.vendors.finalreads`, the fast lane; not under a shared store,
        where another process may change the job).
        """
        # Set before the app's routes are built (no port: routes listed for their names).
        shared = self.port.jobs.shared if self.port is not None else None
        if shared is not None:
            async def handler(request: Request) -> Response:
                # Shared store (--store redis://): the jobs and files the path names are
                # read before, what the request changed is written before the response.
                assert shared is not None
                await shared.prefetch([str(v) for v in request.path_params.values()])
                await self.port.guard.check(self, operation, request)
                response = await endpoint(request)
                ctx: RequestContext | None = request.scope.get(CTX_KEY)
                if ctx is not None and ctx.job_id is not None:
                    await shared.admit(ctx.job_id)  # a submit: balance, limits, atomically
                await shared.flush()
                return response
        elif final_read is None:
            async def handler(request: Request) -> Response:
                await self.port.guard.check(self, operation, request)
                return await endpoint(request)
        else:
            lane = self._final_reads

            async def handler(request: Request) -> Response:
                # A kept answer was already looked for by the error boundary (before this
                # wrapper): here a final read is rendered, and kept for the next.
                await self.port.guard.check(self, operation, request)
                response = await endpoint(request)
                ctx: RequestContext | None = request.scope.get(CTX_KEY)
                if (ctx is not None and ctx.plan is None and ctx.obeys
                        and ctx.job_id is not None and response.status_code == 200):
                    key = self.api_key(request)
                    job = self.port.jobs.find(ctx.job_id, vendor=self.slug, api_key=key)
                    if job is not None:
                        lane.keep(job, request.scope, key, response)  # kept once final
                return response

            return FinalReadRoute(path, handler, methods=methods,
                                  name=f"{self.slug}.{operation}", lane=lane, param=final_read)
        return Route(path, handler, methods=methods, name=f"{self.slug}.{operation}")

    def error_response(self, exc: EmulatorError, operation: str | None = None) -> Response:
        """:meth:`render_operation_error` (``operation``: the operation that failed, ``None``
        where none is known) plus ``Retry-After`` on a 429."""
        response = self.render_operation_error(operation, exc)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response

    def check_key(self, key: str | None, *, message: str = "missing API key") -> str:
        """Apply the common key rules: empty is missing; strict mode accepts listed keys only.

        Raises:
            Unauthorized: missing, empty or not accepted.
        """
        if key is None or not key.strip():
            raise Unauthorized(message)
        key = key.strip()
        accepted = self.port.accepted_keys
        if accepted is not None and key not in accepted:
            raise Unauthorized("invalid API key")
        return key

    async def json_body(self, request: Request) -> Any:
        """The request body parsed as JSON, by :func:`emulator.jsonbody.parse_json_async`
        (large bodies off the event loop); parsed once, by the guard when it checked it.

        Raises:
            InvalidInput: empty or whitespace, nested over 64 levels, too much structure,
                not UTF-8 or not JSON (400; the adapter renders its vendor's status).
            BodyTooLarge: over ``Settings.json_body_limit`` (413).
        """
        scope = request.scope
        if JSON_KEY in scope:
            return scope[JSON_KEY]
        error = scope.get(JSON_ERROR_KEY)
        if error is not None:
            raise error
        return await parse_json_async(await request.body(),
                                      limit=self.port.settings.json_body_limit)

    async def json_object(self, request: Request) -> dict[str, Any]:
        """:meth:`json_body`, which must be an object.

        Raises:
            InvalidInput: not a JSON object.
        """
        body = await self.json_body(request)
        if not isinstance(body, dict):
            raise InvalidInput("request body must be a JSON object")
        return body

    @staticmethod
    def origin(request: Request) -> str:
        """``scheme://host[:port]`` as the client addressed the emulator (as
        ``request.url`` has it, without building the whole URL on every request)."""
        scope = request.scope
        host: str | None = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
                break
        server = scope.get("server")
        return _origin(scope.get("scheme", "http"), host,
                       tuple(server) if server is not None else None)

    def public_url(self, request: Request, path: str, *, host_key: str | None = None) -> str:
        """Absolute URL of ``path`` on the host the client used.

        With ``host_key`` naming another of this vendor's hosts, the URL points at that host:
        by its real name when the client used real names (Host header routing), else at its
        prefix on the client's own host and port.
        """
        origin = self.origin(request)
        if host_key is not None:
            return self.public_url_at(origin, path, host_key=host_key)
        ctx: RequestContext | None = request.scope.get(CTX_KEY)
        return f"{origin}{ctx.prefix if ctx is not None else ''}{path}"

    def public_url_at(self, origin: str, path: str, *, host_key: str) -> str:
        """Absolute URL of ``path`` on this vendor's host ``host_key``, for a client that
        reached the emulator at ``origin`` (``scheme://host[:port]``); used where there is no
        request at hand (webhooks). Real host names stay real names; otherwise the host's
        prefix on the one port is used.
        """
        return self._host_base(origin, host_key) + path

    @functools.lru_cache(maxsize=256)  # noqa: B019 (adapters live as long as the process)
    def _host_base(self, origin: str, host_key: str) -> str:
        """``scheme://host[:port][prefix]`` of host ``host_key`` for a client at ``origin``."""
        target = next(h for h in self.hosts if h.key == host_key)
        parts = urlsplit(origin)
        if any(h.name == parts.hostname for h in self.hosts):
            port = f":{parts.port}" if parts.port else ""
            return f"{parts.scheme}://{target.name}{port}"
        return f"{origin}{target.prefix}"

    def file_urls(self, request: Request, job: Job) -> list[str]:
        """Absolute URLs of ``job``'s outputs on the scheme and host the client used."""
        return self.port.urls.file_urls_at(self.origin(request), job.outputs, job.vendor)

    def file_urls_at(self, origin: str | None, job: Job) -> list[str]:
        """Absolute URLs of ``job``'s outputs under ``origin`` (``scheme://host:port``;
        ``None``: the address the emulator listens on), where no request is at hand."""
        return self.port.urls.file_urls_at(origin, job.outputs, job.vendor)

    @staticmethod
    def query_value(request: Request, name: str) -> str | None:
        """Query parameter ``name`` (the first), or ``None``; no parsing when there is no
        query string (a status poll)."""
        if not request.scope.get("query_string"):
            return None
        return request.query_params.get(name)

    def json(self, content: Any, status: int = 200, headers: dict[str, str] | None = None
             ) -> JSONResponse:
        """A JSON response (encoded by orjson: :class:`FastJSONResponse`)."""
        return FastJSONResponse(content, status_code=status, headers=headers)

    async def large_json(self, content: Any, status: int = 200,
                         headers: dict[str, str] | None = None) -> Response:
        """A JSON response encoded off the event loop, for bodies that may hold data URIs.

        The bytes are the same as :meth:`json` would send (compact, UTF-8).
        """
        body = await run_in_threadpool(_dump_json, content)
        return Response(body, status_code=status, headers=headers,
                        media_type="application/json")

    async def data_uris(self, files: list[StoredFile]) -> list[str]:
        """``data:`` URIs of ``files``, built off the event loop (``sync_mode`` outputs)."""
        if not files:
            return []
        return list(await run_in_threadpool(lambda: [f.data_uri() for f in files]))

    def local_file(self, host_key: str, path: str) -> bytes | None:
        """Bytes this vendor serves itself at ``path`` on its host ``host_key``, or ``None``.

        Lets a job read, without HTTP, a URL this vendor handed out (fal's CDN files and
        uploads): :meth:`emulator.core.urls.OwnUrls.resolve` asks every adapter. ``path`` is
        relative to the host (no prefix). Default: nothing.
        """
        return None


@functools.lru_cache(maxsize=256)
def _origin(scheme: str, host: str | None, server: tuple[str, int] | None) -> str:
    """``scheme://netloc`` exactly as Starlette's ``URL(scope=...)`` works it out."""
    url = URL(scope={"type": "http", "scheme": scheme, "server": server, "path": "/",
                     "query_string": b"",
                     "headers": [] if host is None else [(b"host", host.encode("latin-1"))]})
    return f"{url.scheme}://{url.netloc}"


def _dump_json(content: Any) -> bytes:
    """Compact UTF-8 JSON, as Starlette's ``JSONResponse`` writes it, but through orjson
    (about ten times faster than ``json.dumps``); what orjson refuses (integers over 64 bits,
    ...) falls back to ``json.dumps``. Floats keep their shortest round-trip digits (orjson
    writes ``1e-5`` where ``json`` writes ``1e-05``: the same number); NaN and infinity
    become ``null`` (no vendor body holds one).

    Raises:
        TypeError: a value JSON cannot hold.
    """
    try:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                          separators=(",", ":")).encode("utf-8")


class FastJSONResponse(JSONResponse):
    """Starlette's ``JSONResponse`` with the body encoded by :func:`_dump_json` (JSON encoding
    was 18% of a status poll's CPU with ``json.dumps``)."""

    def render(self, content: Any) -> bytes:
        """``content`` as compact UTF-8 JSON."""
        return _dump_json(content)


#: Core statuses of a job that ended without its result.
_FAILURES = frozenset({JobStatus.FAILED, JobStatus.ERROR, JobStatus.CANCELLED})


def _same_phase(meaning: JobStatus, status: JobStatus) -> bool:
    if not meaning.terminal:
        return not status.terminal
    if meaning in _FAILURES:
        return status in _FAILURES
    return meaning is status
