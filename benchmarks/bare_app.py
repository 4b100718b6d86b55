"""The ceiling: a bare Starlette + uvicorn app answering the emulator's benchmarked routes with
static JSON (and a static PNG), started with the same uvicorn settings as ``rmbg-emulator
serve``. Used by ``benchmarks/http_load.py``; run alone with ``python benchmarks/bare_app.py PORT``.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


async def pixazo_submit(request: Request) -> Response:
    await request.body()
    return JSONResponse({"request_id": "bria-rmbg-2-0-682_static", "status": "QUEUED",
                         "polling_url": "http://127.0.0.1/v2/requests/status/x"},
                        status_code=202)


async def pixazo_status(request: Request) -> Response:
    return JSONResponse({
        "request_id": request.path_params["request_id"], "status": "COMPLETED",
        "model_id": "bria-rmbg-2-0-682", "error": None,
        "output": {"media_url": ["http://127.0.0.1/_emulator/files/pixazo/x.png"],
                   "media_type": "image/png"},
        "created_at": "2026-03-31T10:00:00.000Z", "updated_at": "2026-03-31T10:00:15.000Z",
        "completed_at": "2026-03-31T10:00:15.000Z",
    })


async def fal_submit(request: Request) -> Response:
    await request.body()
    base = "http://127.0.0.1/queue/fal-ai/bria/requests/static"
    return JSONResponse({"request_id": "static", "gateway_request_id": "static",
                         "status": "IN_QUEUE", "queue_position": 0, "response_url": base,
                         "status_url": base + "/status", "cancel_url": base + "/cancel"})


async def fal_status(request: Request) -> Response:
    base = f"http://127.0.0.1/queue/fal-ai/bria/requests/{request.path_params['request_id']}"
    return JSONResponse({"status": "COMPLETED", "request_id": request.path_params["request_id"],
                         "response_url": base, "logs": None, "metrics": {}})


async def apiframe_submit(request: Request) -> Response:
    await request.body()
    return JSONResponse({"jobId": "static", "status": "QUEUED"}, status_code=202)


async def apiframe_status(request: Request) -> Response:
    return JSONResponse({
        "jobId": request.path_params["job_id"], "model": "bria-bg-remove", "status": "COMPLETED",
        "result": {"images": ["http://127.0.0.1/_emulator/files/apiframe/x.png"]},
        "error": None, "createdAt": "2026-03-31T10:00:00.000Z",
        "updatedAt": "2026-03-31T10:00:15.000Z", "completedAt": "2026-03-31T10:00:15.000Z",
    })


async def file(request: Request) -> Response:
    return Response(PNG, media_type="image/png")


app = Starlette(routes=[
    Route("/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request", pixazo_submit, methods=["POST"]),
    Route("/v2/requests/status/{request_id}", pixazo_status, methods=["GET"]),
    Route("/queue/fal-ai/bria/background/remove", fal_submit, methods=["POST"]),
    Route("/queue/fal-ai/bria/requests/{request_id}/status", fal_status, methods=["GET"]),
    Route("/v2/images/background-remove", apiframe_submit, methods=["POST"]),
    Route("/v2/jobs/{job_id}", apiframe_status, methods=["GET"]),
    Route("/_emulator/files/{vendor}/{name}", file, methods=["GET"]),
    Route("/cdn/files/{bucket}/{name}", file, methods=["GET"]),
])


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False)  # as `rmbg-emulator serve` (its --access-log is its own)
