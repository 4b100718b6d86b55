"""``/_emulator/faults``: add, list, show and delete fault rules.

``POST`` takes one rule object (answers the rule with its ``id``) or a list of them (all or
none, answers ``{"rules": [...]}``). A rule that cannot be accepted (unknown attribute, bad
value, a vendor or operation that does not exist) is refused with 400 and a message saying why.
See :mod:`emulator.core.faults` for the rule type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulator.admin.core import by_method
from emulator.core.faults import RuleError
from emulator.errors import InvalidInput, NotFound
from emulator.jsonbody import read_json

if TYPE_CHECKING:
    from emulator.app import Emulator

PREFIX = "/_emulator/faults"


def routes(emulator: Emulator) -> list[BaseRoute]:
    """``POST``, ``GET`` and ``DELETE`` on ``/_emulator/faults`` and ``/_emulator/faults/{id}``."""
    faults = emulator.faults

    async def add(request: Request) -> Response:
        body = await read_json(request, default=None)
        if isinstance(body, dict):
            specs, single = [body], True
        elif isinstance(body, list) and body:
            specs, single = body, False
        else:
            raise InvalidInput("body must be a rule object (e.g. {\"status\": 429}) or a "
                               "non-empty list of them")
        try:
            added = faults.add_all(specs, source="admin")
        except RuleError as exc:
            raise InvalidInput(str(exc)) from exc
        if single:
            return JSONResponse(added[0].to_json(), status_code=201)
        return JSONResponse({"rules": [r.to_json() for r in added]}, status_code=201)

    async def listing(request: Request) -> Response:
        return JSONResponse({"rules": [r.to_json() for r in faults.rules()]})

    async def one(request: Request) -> Response:
        rule = faults.get(request.path_params["rule_id"])
        if rule is None:
            raise NotFound(f"no fault rule {request.path_params['rule_id']!r}")
        return JSONResponse(rule.to_json())

    async def delete_one(request: Request) -> Response:
        rule_id = request.path_params["rule_id"]
        if not faults.remove(rule_id):
            raise NotFound(f"no fault rule {rule_id!r}")
        return JSONResponse({"deleted": [rule_id]})

    async def delete_all(request: Request) -> Response:
        ids = [r.id for r in faults.rules()]
        faults.clear()
        return JSONResponse({"deleted": ids})

    return [
        Route(PREFIX, by_method({"GET": listing, "POST": add, "DELETE": delete_all}),
              methods=["GET", "POST", "DELETE"]),
        Route(PREFIX + "/{rule_id}", by_method({"GET": one, "DELETE": delete_one}),
              methods=["GET", "DELETE"]),
    ]
