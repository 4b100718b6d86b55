"""``/_emulator/journal``: the request journal, its filters, and WireMock-style verify.

* ``GET /_emulator/journal?vendor=&operation=&api_key=&method=&path=&status=&fault=&early_retry=
  &job_id=&limit=N``: matching entries, oldest first (the last ``limit`` when given).
* ``DELETE /_emulator/journal``: forget every entry.
* ``POST /_emulator/journal/verify`` ``{criteria..., count | min | max}``: pass or fail, with
  the near misses when it fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulator.admin.core import by_method
from emulator.core.journal import parse_criteria
from emulator.errors import InvalidInput
from emulator.jsonbody import read_json

if TYPE_CHECKING:
    from emulator.app import Emulator

PREFIX = "/_emulator/journal"
BOUNDS = ("count", "min", "max")


def _bound(body: dict[str, Any], name: str) -> int | None:
    if name not in body:
        return None
    value = body[name]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def routes(emulator: Emulator) -> list[BaseRoute]:
    """The journal's routes."""
    journal = emulator.journal

    async def listing(request: Request) -> Response:
        params = dict(request.query_params)
        limit_text = params.pop("limit", None)
        try:
            criteria = parse_criteria(params)
            limit = None if limit_text is None else int(limit_text)
            if limit is not None and limit < 0:
                raise ValueError("limit must be >= 0")
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        await journal.pull()  # under a shared store: every process's entries
        found = journal.select(criteria)
        if limit is not None:
            found = found[len(found) - limit:] if limit else []
        return JSONResponse({"entries": [e.to_json() for e in found], "total": len(journal),
                             "size": journal.size})

    async def clear(request: Request) -> Response:
        await journal.wipe()
        return JSONResponse({"cleared": True})

    async def verify(request: Request) -> Response:
        body = await read_json(request, default={})
        if not isinstance(body, dict):
            raise InvalidInput("body must be a JSON object of criteria and count, min or max")
        try:
            count, minimum, maximum = (_bound(body, name) for name in BOUNDS)
            if count is not None and (minimum is not None or maximum is not None):
                raise ValueError("give count, or min and/or max, not both")
            criteria = parse_criteria({k: v for k, v in body.items() if k not in BOUNDS},
                                      typed=True)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        await journal.pull()
        return JSONResponse(journal.verify(criteria, count=count, minimum=minimum,
                                           maximum=maximum))

    return [
        Route(PREFIX, by_method({"GET": listing, "DELETE": clear}), methods=["GET", "DELETE"]),
        Route(PREFIX + "/verify", verify, methods=["POST"]),
    ]
