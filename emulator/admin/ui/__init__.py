"""``/_emulator/ui``: the web dashboard, server-rendered HTML on the control plane's internals.

Pages (Jinja2 templates in ``templates/``, autoescaped: every job field, key, path and rule
comes from clients and is shown escaped):

* ``/_emulator/ui``: jobs, newest first (the dicts of ``GET /_emulator/jobs``), with each
  job's input and cut-out side by side on a checkerboard; refreshed every second;
* ``/_emulator/ui/jobs/{job_id}``: one job, its requests in the journal and its webhook
  deliveries (``GET /_emulator/webhooks?job_id=``), each with a resend button;
* ``/_emulator/ui/faults``: the fault rules with their hits, a form to add one and to load a
  scenario, a delete button per rule;
* ``/_emulator/ui/journal``: the journal with the API's filters (``vendor``, ``operation``,
  ``api_key``, ``method``, ``path``, ``status``, ``fault``, ``early_retry``, ``limit``),
  newest first, ``early_retry`` entries highlighted;
* ``/_emulator/ui/keys``: each key's balance, limits and ledger;
* ``/_emulator/ui/violations``: the client's contract violations;
* ``/_emulator/ui/login?token=``: with ``--admin-token``, checks the token
  (:class:`emulator.admingate.AdminGate`) and sets the HttpOnly session cookie the gate
  accepts.

Reads render the same JSON views the control-plane API answers (``Job.summary``,
``Entry.to_json``, ``FaultRule.to_json``, ``Delivery.to_json``, ``Account.to_json``); every
change (add or delete a rule, load a scenario, resend a delivery) is the page's script calling
the control-plane API itself, so there is one copy of each rule.
"""

from __future__ import annotations

import heapq
import io
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from emulator.admin.core import account_view
from emulator.admingate import SESSION_COOKIE, AdminGate
from emulator.core.inputs import ImageSource, decode_inline
from emulator.core.journal import CRITERIA, parse_criteria
from emulator.errors import AdminTokenRequired, InputImageError, InvalidInput, NotFound

if TYPE_CHECKING:
    from emulator.app import Emulator
    from emulator.core.jobs import Job

PREFIX = "/_emulator/ui"
#: Most jobs and journal entries a page lists (the newest).
PAGE_ROWS = 200
#: Ledger entries shown per key (the newest).
LEDGER_ROWS = 20
TEMPLATES = Path(__file__).parent / "templates"
#: Image types an input is served as (Pillow's format name -> MIME type); anything else is 404.
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp",
               "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff"}
#: Headers of every dashboard answer: no caching of client data, no MIME sniffing, no framing.
SAFE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}

_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(
    enabled_extensions=("html",), default=True), trim_blocks=True, lstrip_blocks=True)


def _clock_text(at: float | None) -> str:
    """Unix seconds (the emulator's clock) as ``HH:MM:SS.mmm`` UTC; ``""`` for ``None``."""
    if at is None:
        return ""
    return datetime.fromtimestamp(at, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]


_env.filters["ts"] = _clock_text


def _timeline(job: dict[str, Any], started_at: float | None) -> list[tuple[str, float]]:
    """``[(status word, seconds after creation)]``: created, started, final."""
    out = [("queued", 0.0)]
    if started_at is not None:
        out.append(("processing", max(0.0, started_at - job["created_at"])))
    if job["completed_at"] is not None:
        out.append((job["status"], max(0.0, job["completed_at"] - job["created_at"])))
    return out


def _job_view(job: Job) -> dict[str, Any]:
    """The control plane's ``summary()`` of ``job`` plus what the page draws: its timeline and
    its inputs (``url`` sources are linked as given: the browser, not the emulator, loads
    them; inline ones are served by ``/_emulator/ui/jobs/{id}/inputs/{n}``)."""
    view = job.summary()
    view["timeline"] = _timeline(view, job.started_at)
    view["inputs"] = [_input_view(job.id, n, source) for n, source in enumerate(job.task.sources)]
    return view


def _input_view(job_id: str, n: int, source: ImageSource) -> dict[str, str | None]:
    """``{"src", "note"}`` of a job's ``n``-th input: ``src`` the URL the page loads it from
    (``None`` when it is gone), ``note`` what it was. A long inline input is no longer on a
    job once its work loaded it (:func:`emulator.core.jobs.runner.forget_inline` keeps a
    ``<data, N chars>`` description instead)."""
    if source.kind == "url":
        return {"src": source.value, "note": source.describe()}
    if _forgotten(source):
        return {"src": None, "note": f"inline input {source.value}, not kept once loaded"}
    return {"src": f"{PREFIX}/jobs/{job_id}/inputs/{n}", "note": f"inline {source.kind}"}


def _forgotten(source: ImageSource) -> bool:
    """An inline source replaced by its description (base64 and data URIs never start so)."""
    return source.kind != "url" and source.value.startswith("<")


def routes(emulator: Emulator) -> list[BaseRoute]:
    """The dashboard's pages (``GET``); see the module docstring."""
    jobs = emulator.jobs
    gate = AdminGate(emulator.settings.admin_token)

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        html = _env.get_template(name).render(
            prefix=PREFIX, path=request.url.path, vendors=sorted(emulator.adapters),
            signed_in=emulator.settings.admin_token is not None, **context)
        return HTMLResponse(html, headers=SAFE_HEADERS)

    def job_or_404(request: Request) -> Job:
        job = jobs.find(request.path_params["job_id"])
        if job is None:
            raise NotFound(f"no job {request.path_params['job_id']!r}")
        return job

    async def job_list(request: Request) -> Response:
        total = len(jobs.store)
        if jobs.shared is not None:  # the newest of every process's jobs (Redis)
            total = await jobs.shared.pull_newest(PAGE_ROWS)
        found = heapq.nlargest(PAGE_ROWS, jobs.jobs(), key=lambda j: j.created_at)
        return page(request, "jobs.html", jobs=[_job_view(j) for j in found], total=total)

    async def job_page(request: Request) -> Response:
        job = job_or_404(request)
        view = _job_view(job)
        # The job's requests: those the journal noted with its id (its submit, status and
        # result reads, cancel).
        await emulator.journal.pull()
        mine = [e.to_json() for e in emulator.journal.select({"job_id": job.id})]
        if emulator.webhooks.shared is not None:  # every process's (Redis)
            await emulator.webhooks.shared.pull()
        deliveries = [d.to_json() for d in emulator.webhooks.deliveries(job_id=job.id)]
        return page(request, "job.html", job=view, entries=mine[::-1], deliveries=deliveries)

    async def job_input(request: Request) -> Response:
        job = job_or_404(request)
        try:
            source = job.task.sources[int(request.path_params["index"])]
        except (ValueError, IndexError):
            raise NotFound("no such input") from None
        if source.kind == "url":
            return RedirectResponse(source.value, status_code=307, headers=SAFE_HEADERS)
        if _forgotten(source):
            raise NotFound(f"the inline input is no longer kept ({source.value}): the "
                           "emulator drops long inline inputs once a job has loaded them")
        limit = emulator.settings.max_input_bytes
        try:
            data, kind = await run_in_threadpool(_inline_image, source, limit)
        except InputImageError as exc:
            raise NotFound(f"the input is not an image: {exc}") from None
        # A job's input never changes: the browser may keep it while the page refreshes.
        return Response(data, media_type=kind,
                        headers={**SAFE_HEADERS, "Cache-Control": "private, max-age=3600"})

    async def faults_page(request: Request) -> Response:
        return page(request, "faults.html",
                    rules=[r.to_json() for r in emulator.faults.rules()],
                    scenarios=list(emulator.scenarios))

    async def journal_page(request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items() if v != ""}
        limit_text = params.pop("limit", None)
        try:
            criteria = parse_criteria(params)
            limit = PAGE_ROWS if limit_text is None else int(limit_text)
            if limit < 0:
                raise ValueError("limit must be >= 0")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        await emulator.journal.pull()
        found = emulator.journal.select(criteria)
        found = found[len(found) - limit:] if limit else []
        return page(request, "journal.html", entries=[e.to_json() for e in reversed(found)],
                    criteria=CRITERIA, given=params, limit=limit, total=len(emulator.journal))

    async def keys_page(request: Request) -> Response:
        wanted = request.query_params.get("key", "").strip()
        names = sorted({j.api_key for j in jobs.jobs()} | ({wanted} if wanted else set()))
        accounts = []
        for key in names:
            account = await account_view(emulator, key)
            account["ledger"] = account["ledger"][-LEDGER_ROWS:][::-1]
            accounts.append(account)
        return page(request, "keys.html", accounts=accounts, wanted=wanted)

    async def violations_page(request: Request) -> Response:
        found = emulator.guard.violations()
        return page(request, "violations.html", violations=found[::-1])

    async def login(request: Request) -> Response:
        home = PREFIX
        if gate.token is None:
            return RedirectResponse(home, status_code=303, headers=SAFE_HEADERS)
        token = request.query_params.get("token")
        if token is None:
            return page(request, "login.html")
        if not gate.accepts(token.encode("utf-8", "replace")):
            raise AdminTokenRequired(f"that is not the admin token; try again at {PREFIX}/login",
                                     error="invalid_token")
        response = RedirectResponse(home, status_code=303, headers=SAFE_HEADERS)
        response.set_cookie(SESSION_COOKIE, gate.session(), path="/_emulator", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    return [
        Route(PREFIX, job_list, methods=["GET"]),
        Route(PREFIX + "/login", login, methods=["GET"]),
        Route(PREFIX + "/jobs/{job_id}", job_page, methods=["GET"]),
        Route(PREFIX + "/jobs/{job_id}/inputs/{index}", job_input, methods=["GET"]),
        Route(PREFIX + "/faults", faults_page, methods=["GET"]),
        Route(PREFIX + "/journal", journal_page, methods=["GET"]),
        Route(PREFIX + "/keys", keys_page, methods=["GET"]),
        Route(PREFIX + "/violations", violations_page, methods=["GET"]),
    ]


def _inline_image(source: ImageSource, max_bytes: int) -> tuple[bytes, str]:
    """The bytes and MIME type of an inline (``data``/``base64``) input (blocking).

    Raises:
        InputImageError: not base64, over ``max_bytes``, or not an image type of
            :data:`IMAGE_TYPES` (so client bytes are never served as HTML).
    """
    data = decode_inline(source, max_bytes)
    try:
        with Image.open(io.BytesIO(data)) as img:
            kind = IMAGE_TYPES.get(img.format or "")
    except Exception:  # any undecodable header
        kind = None
    if kind is None:
        raise InputImageError("unknown image type")
    return data, kind
