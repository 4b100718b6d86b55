"""``/_emulator/webhooks``: the delivery journal, and replays."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulator.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from emulator.app import Emulator

PREFIX = "/_emulator/webhooks"


def routes(emulator: Emulator) -> list[BaseRoute]:
    """List deliveries (filters: ``job_id``, ``vendor``, ``state``), show one, resend one."""
    outbox = emulator.webhooks

    async def pull() -> None:
        # Under a shared store: every process's deliveries, as Redis holds them.
        if outbox.shared is not None:
            await outbox.shared.pull()

    async def listing(request: Request) -> Response:
        q = request.query_params
        if q.get("state") not in (None, "pending", "delivered", "failed", "dropped"):
            raise InvalidInput("state must be pending, delivered, failed or dropped")
        await pull()
        found = outbox.deliveries(job_id=q.get("job_id"), vendor=q.get("vendor"),
                                  state=q.get("state"))
        return JSONResponse({"deliveries": [d.to_json() for d in found],
                             "pending": outbox.pending()})

    async def one(request: Request) -> Response:
        await pull()
        delivery = outbox.get(request.path_params["delivery_id"])
        if delivery is None:
            raise NotFound("no such delivery")
        return JSONResponse(delivery.to_json())

    async def resend(request: Request) -> Response:
        await pull()
        delivery = outbox.resend(request.path_params["delivery_id"])
        if delivery is None:
            raise NotFound("no such delivery")
        return JSONResponse(delivery.to_json(), status_code=202)

    return [
        Route(PREFIX, listing, methods=["GET"]),
        Route(PREFIX + "/{delivery_id}", one, methods=["GET"]),
        Route(PREFIX + "/{delivery_id}/resend", resend, methods=["POST"]),
    ]
