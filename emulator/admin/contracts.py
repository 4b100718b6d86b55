"""``/_emulator/contracts`` (the OpenAPI documents) and ``/_emulator/violations``.

``GET /_emulator/contracts`` lists the contracts; ``GET /_emulator/contracts/{name}.yaml``
serves one as YAML (the control plane's with its enums of vendors, operations and fault
effects filled from this emulator's registries: :func:`emulator.contracts.fill_registry_enums`).
``GET /_emulator/violations`` lists the client requests that broke their vendor's contract
(strict or not, see :mod:`emulator.guard`); ``DELETE`` forgets them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulator import contracts
from emulator.errors import EmulatorError, NotFound

if TYPE_CHECKING:
    from emulator.app import Emulator

PREFIX = "/_emulator"
YAML_MEDIA_TYPE = "application/yaml"  # RFC 9512


def routes(emulator: Emulator) -> list[BaseRoute]:
    """The contracts and violations routes."""

    async def contract_list(request: Request) -> Response:
        base = f"{request.url.scheme}://{request.url.netloc}{PREFIX}/contracts"
        try:
            found = contracts.load_all()
        except contracts.ContractError as exc:
            raise EmulatorError(str(exc), status=500) from exc
        return JSONResponse({"contracts": [
            {"name": c.name, "title": c.title, "version": c.version, "vendor": c.vendor,
             "url": f"{base}/{c.name}.yaml"}
            for c in found
        ]})

    async def contract_get(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            body = contracts.text(name, emulator.faults.catalog)
        except contracts.ContractError as exc:
            raise NotFound(str(exc)) from exc
        return Response(body, media_type=YAML_MEDIA_TYPE)

    async def violations(request: Request) -> Response:
        if request.method == "DELETE":
            return JSONResponse({"cleared": emulator.guard.clear()})
        q = request.query_params
        return JSONResponse({"violations": emulator.guard.violations(
            vendor=q.get("vendor"), api_key=q.get("api_key"))})

    return [
        Route(PREFIX + "/contracts", contract_list, methods=["GET"]),
        Route(PREFIX + "/contracts/{name}.yaml", contract_get, methods=["GET"]),
        Route(PREFIX + "/violations", violations, methods=["GET", "DELETE"]),
    ]
