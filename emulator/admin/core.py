"""The control plane under ``/_emulator``: health, reset, samples, output files, jobs, clock, keys.

Errors here are raised (:mod:`emulator.errors`) and answered as ``{"detail": ...}`` JSON by the
one error boundary (:func:`emulator.middleware.control_plane_error`). Nothing here imitates a
vendor, except the output files, which answer as the vendor's storage would
(``VendorAdapter.storage_missing`` once a file has expired or is gone).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulator import __version__, samples
from emulator.core.billing import KEY_FIELDS, parse_key_settings, usd_text
from emulator.core.jobs import JobStatus
from emulator.errors import Conflict, InvalidInput, NotFound
from emulator.jsonbody import read_json

if TYPE_CHECKING:
    from emulator.app import Emulator

PREFIX = "/_emulator"
#: With a shared store, ``GET /_emulator/jobs`` first reads this many of the newest jobs of
#: every process.
SHARED_LIST_ROWS = 1000
#: The most ``POST /_emulator/clock/advance`` moves the clock at once (100 years, seconds);
#: beyond it timestamps stop being representable.
MAX_CLOCK_ADVANCE_S = 100 * 365 * 24 * 3600.0
#: The clock never goes past 9000-01-01 (unix seconds), so every timestamp stays printable.
MAX_CLOCK_TIME = 221845392000.0


async def _json(request: Request) -> dict[str, Any]:
    """The body as a JSON object (``{}`` when there is none), by the app's one parser
    (:func:`emulator.jsonbody.read_json`).

    Raises:
        InvalidInput: not JSON, not an object (400), or too large (413).
    """
    body = await read_json(request, default={})
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object")
    return body


def _number(body: dict[str, Any], key: str, *, minimum: float = 0.0) -> float | str | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{key} must be a finite number"
    if value < minimum:
        return f"{key} must be >= {minimum:g}"
    return float(value)


Handler = Callable[[Request], Awaitable[Response]]


def by_method(handlers: dict[str, Handler]) -> Handler:
    """One endpoint for several methods on a path (one route, so a 405 lists them all in
    ``Allow``); ``HEAD`` goes to ``GET``."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return endpoint


def file_route(emulator: Emulator) -> Route:
    """``GET /_emulator/files/{vendor}/{name}``: an output file, as its vendor's storage."""

    async def get_file(request: Request) -> Response:
        name = request.path_params["name"]
        adapter = emulator.adapters.get(request.path_params["vendor"])
        if emulator.jobs.shared is not None:
            await emulator.jobs.shared.prefetch([name])
        record = emulator.jobs.files.get(name.split(".", 1)[0])
        gone = record is None or (
            record.expires_at is not None and emulator.clock.now() >= record.expires_at)
        if gone or record is None:
            if adapter is not None:
                return adapter.storage_missing(name)
            raise NotFound(f"no file {name}")
        return Response(record.data, media_type=record.content_type,
                        headers={"Cache-Control": "public, max-age=3600"})

    return Route(PREFIX + "/files/{vendor}/{name}", get_file, methods=["GET"], name="file")


async def account_view(emulator: Emulator, key: str) -> dict[str, Any]:
    """A key's account as ``GET /_emulator/keys/{key}`` and the dashboard show it
    (:meth:`emulator.core.billing.Account.to_json` and ``strict``); with a shared store
    (Redis), the balance, holds, live jobs, ledger and rate limit every process shares.

    Raises:
        StoreUnavailable: the shared store cannot be reached.
    """
    jobs = emulator.jobs
    local = jobs.billing.account(key)
    view = {**local.to_json(), "strict": emulator.guard.is_strict_key(key)}
    if jobs.shared is not None:
        held = await jobs.shared.account(key, local.balance_usd)
        view.update(balance_usd=usd_text(held.balance_usd), held_usd=usd_text(held.held_usd),
                    available_usd=usd_text(held.balance_usd - held.held_usd),
                    active_jobs=held.active_jobs, ledger=held.ledger,
                    ledger_dropped=held.ledger_dropped)
        if held.limit is not None:
            view["limits"] = dict(held.limit.__dict__)
    return view


def routes(emulator: Emulator) -> list[BaseRoute]:
    """Every ``/_emulator`` route except the files route."""
    jobs = emulator.jobs

    async def health(request: Request) -> Response:
        return JSONResponse({
            "status": "ok",
            "version": __version__,
            "engine": emulator.engine_name,
            "progression": emulator.settings.progression,
            "latency": emulator.settings.latency,
            "clock": "virtual" if emulator.clock.frozen else "real",
            "now": emulator.clock.now(),
            "vendors": sorted(emulator.adapters),
            "jobs": len(jobs.store),
            "busy": jobs.busy,
            "fault_rules": len(emulator.faults.rules()),
            "journal": len(emulator.journal),
            "scenarios": [loaded["name"] for loaded in emulator.scenarios],
            "uptime_s": round(time.time() - emulator.started_at, 3),
            "strict": emulator.guard.strict,
            "keys": "any" if emulator.accepted_keys is None else "listed",
        })

    async def reset(request: Request) -> Response:
        body = await _json(request)
        reload = body.get("scenarios", True)
        if not isinstance(reload, bool):
            raise InvalidInput("scenarios must be true or false")
        emulator.reset(reload_scenarios=reload)
        if emulator.saver is not None:
            await emulator.saver.drain()  # the store is empty before the answer
        if emulator.jobs.shared is not None:
            await emulator.jobs.shared.reset_done()  # the others reset themselves
        return JSONResponse({"reset": True,
                             "scenarios": [s["name"] for s in emulator.scenarios]})

    async def sample_list(request: Request) -> Response:
        base = f"{request.url.scheme}://{request.url.netloc}{PREFIX}/samples"
        return JSONResponse({"samples": [
            {"name": s.name, "title": s.title, "licence": s.licence, "kind": s.kind,
             "url": f"{base}/{s.name}.jpg"}
            for s in samples.SAMPLES.values()
        ]})

    async def sample_get(request: Request) -> Response:
        name = request.path_params["name"]
        if samples.lookup(name) is None:
            raise NotFound(f"no sample {name!r}; see {PREFIX}/samples")
        return Response(samples.read_bytes(name), media_type="image/jpeg")

    async def job_list(request: Request) -> Response:
        q = request.query_params
        wanted = q.get("status")
        if wanted is not None and wanted not in {s.value for s in JobStatus}:
            raise InvalidInput(f"status must be one of {', '.join(s.value for s in JobStatus)}")
        if jobs.shared is not None:  # the newest of every process's jobs (Redis)
            await jobs.shared.pull_newest(SHARED_LIST_ROWS)
        found = jobs.jobs(vendor=q.get("vendor"), api_key=q.get("api_key") or q.get("key"),
                          status=q.get("status"))
        return JSONResponse({"jobs": [j.summary() for j in found]})

    async def _job(request: Request) -> Any:
        job_id = request.path_params["job_id"]
        if jobs.shared is not None:  # as another process left it (Redis)
            await jobs.shared.prefetch([job_id])
        return jobs.find(job_id)

    async def job_get(request: Request) -> Response:
        job = await _job(request)
        if job is None:
            raise NotFound(f"no job {request.path_params['job_id']!r}")
        return JSONResponse(job.summary())

    async def job_action(request: Request) -> Response:
        job = await _job(request)
        if job is None:
            raise NotFound(f"no job {request.path_params['job_id']!r}")
        action = request.path_params["action"]
        body = await _json(request)
        if action == "advance":
            jobs.advance(job)
            await jobs.observe(job, count=False)
        elif action == "complete":
            jobs.complete(job)
            await jobs.observe(job, count=False)
        elif action == "fail":
            message = body.get("message", "failed by the control plane")
            kind = body.get("status", "failed")
            if kind not in ("failed", "error"):
                raise InvalidInput("status must be 'failed' or 'error'")
            if not isinstance(message, str):
                raise InvalidInput("message must be a string")
            if job.status.terminal:
                raise Conflict(f"job is already {job.status.value}")
            jobs.fail(job, str(message), status=JobStatus(kind))
        else:
            raise NotFound(f"unknown action {action!r}: advance, complete or fail")
        return JSONResponse(job.summary())

    async def clock_advance(request: Request) -> Response:
        body = await _json(request)
        seconds = _number(body, "seconds")
        if isinstance(seconds, str) or seconds is None:
            raise InvalidInput(seconds or "seconds is required")
        if seconds > MAX_CLOCK_ADVANCE_S:
            raise InvalidInput(f"seconds must be <= {MAX_CLOCK_ADVANCE_S:g} (100 years)")
        if emulator.clock.now() + seconds > MAX_CLOCK_TIME:
            raise InvalidInput("the clock cannot go past the year 9000")
        now = emulator.clock.advance(seconds)
        return JSONResponse({"now": now, "advanced_s": seconds})

    async def key_route(request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            return JSONResponse(await account_view(emulator, request.path_params["key"]))
        return await key_put(request)

    async def key_put(request: Request) -> Response:
        key = request.path_params["key"]
        body = await _json(request)
        strict = body.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise InvalidInput("strict must be a boolean")
        try:
            settings = parse_key_settings({k: v for k, v in body.items() if k in KEY_FIELDS})
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        if strict is not None:
            emulator.guard.set_strict_key(key, strict)
        jobs.billing.configure(key, settings, emulator.clock.now())
        if jobs.shared is not None:  # for every process
            await jobs.shared.configure_key(key, settings, emulator.clock.now())
        return JSONResponse(await account_view(emulator, key))

    return [
        Route(PREFIX + "/health", health, methods=["GET"]),
        Route(PREFIX + "/reset", reset, methods=["POST"]),
        Route(PREFIX + "/samples", sample_list, methods=["GET"]),
        Route(PREFIX + "/samples/{name}", sample_get, methods=["GET"]),
        Route(PREFIX + "/jobs", job_list, methods=["GET"]),
        Route(PREFIX + "/jobs/{job_id}", job_get, methods=["GET"]),
        Route(PREFIX + "/jobs/{job_id}/{action}", job_action, methods=["POST"]),
        Route(PREFIX + "/clock/advance", clock_advance, methods=["POST"]),
        Route(PREFIX + "/keys/{key}", key_route, methods=["GET", "PUT", "POST"]),
    ]
