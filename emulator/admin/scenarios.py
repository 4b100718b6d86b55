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
        raw = await request.body()  # InvalidInput: a chunked body past the app's limit
        if len(raw) > MAX_BYTES:
            raise InvalidInput(f"scenario is over {MAX_BYTES} bytes", status=413)
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
            raise InvalidInput("scenario is not UTF-8 text") from None
        except scenarios.ScenarioError as exc:
            raise InvalidInput(str(exc)) from exc
        except InvalidInput as exc:
            raise InvalidInput(exc.message) from exc
        except RecursionError:  # block-style YAML nested past the interpreter's stack
            raise InvalidInput("scenario is nested too deeply") from None
        summary = emulator.load_scenario(scenario)
        shared = emulator.jobs.shared
        if shared is not None:  # its keys' balances and limits, for every process
            for key, settings in scenario.keys.items():
                await shared.configure_key(key, settings, emulator.clock.now())
        return JSONResponse(summary, status_code=201)

    async def listing(request: Request) -> Response:
        return JSONResponse({"scenarios": list(emulator.scenarios)})

    return [Route(PREFIX, by_method({"GET": listing, "POST": load}), methods=["GET", "POST"])]
