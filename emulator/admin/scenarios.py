"""``/_emulator/scenarios``: load a scenario (YAML or JSON body), list those loaded.

``POST /_emulator/scenarios`` (``?name=`` names it when the document does not) checks the
whole scenario first, then sets its keys and adds its rules after the stored ones; a bad
scenario answers 400 and changes nothing. See :mod:`emulator.core.scenarios` for the format.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulator.admin.core import by_method
from emulator.core import scenarios
from emulator.errors import InvalidInput
from emulator.jsonbody import check_shape

if TYPE_CHECKING:
    from emulator.app import Emulator

PREFIX = "/_emulator/scenarios"
MAX_BYTES = 1024 * 1024


def routes(emulator: Emulator) -> list[BaseRoute]:
    """``POST`` and ``GET`` on ``/_emulator/scenarios``."""

    async def load(request: Request) -> Response:
        try:
            raw = await request.body()
        except InvalidInput as exc:  # a chunked body past the app's limit
            return JSONResponse({"detail": exc.message}, status_code=exc.status)
        if len(raw) > MAX_BYTES:
            return JSONResponse({"detail": f"scenario is over {MAX_BYTES} bytes"},
                                status_code=413)
        try:
            # Nesting and structure limits first: deep flow-style YAML recurses as JSON does.
            check_shape(raw, what="scenario")
            text = raw.decode("utf-8")
            try:  # JSON first: YAML 1.1 would read a JSON number such as 1e+16 as a string
                data = json.loads(text)
            except ValueError:
                data = scenarios.read_text(text)
            scenario = scenarios.parse(data, emulator.faults,
                                       default_name=request.query_params.get("name",
                                                                             "scenario"))
        except UnicodeDecodeError:
            return JSONResponse({"detail": "scenario is not UTF-8 text"}, status_code=400)
        except scenarios.ScenarioError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        except InvalidInput as exc:
            return JSONResponse({"detail": exc.message}, status_code=400)
        except RecursionError:  # block-style YAML nested past the interpreter's stack
            return JSONResponse({"detail": "scenario is nested too deeply"}, status_code=400)
        return JSONResponse(emulator.load_scenario(scenario), status_code=201)

    async def listing(request: Request) -> Response:
        return JSONResponse({"scenarios": list(emulator.scenarios)})

    return [Route(PREFIX, by_method({"GET": listing, "POST": load}), methods=["GET", "POST"])]
