"""Cost of the fault/journal middleware on a status poll, in process (no sockets).

Not a test: prints figures. Usage:

    python benchmarks/middleware.py [--n 20000] [--repeat 5]

Calls the ASGI app directly with a Pixazo status poll of one finished job, N times, three
ways: the emulator's route table and error boundary without the middleware, with it and no
fault rule stored (the hot path: journal only), and with one stored rule that matches nothing
(the slow path: the fault plan, with the key read once). Also a bare Starlette app answering
static JSON, the ceiling. Prints CPU microseconds per request (process time, best of ``--repeat``
interleaved rounds: the machine is shared and wall-clock figures swing).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import time
from typing import Any

import bare_app  # benchmarks/bare_app.py (this script's directory is on sys.path)
from inproc import call, scope
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import Route

from emulator.app import create_app
from emulator.context import CTX_KEY
from emulator.middleware import serve
from emulator.settings import Settings

KEY = "bench-key"
SUBMIT = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"


def _scope(method: str, path: str, body: bytes = b"") -> dict[str, Any]:
    return scope(method, path, [(b"ocp-apim-subscription-key", KEY.encode()),
                                (b"user-agent", b"bench"), (b"accept", b"*/*")], body)


async def _time(app: Any, scope: dict[str, Any], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(n):
            await call(app, scope)
        best = min(best, (time.process_time() - start) / n)
    return best * 1e6


async def main_async(n: int, repeat: int) -> None:
    """Set up one finished job, then time the three stacks and the ceiling."""
    app = create_app(Settings(progression="immediate", engine="grabcut",
                              journal_size=1000))
    emulator = app.state.emulator
    await emulator.jobs.start()
    try:
        buf = io.BytesIO()
        Image.new("RGB", (32, 24), (200, 40, 40)).save(buf, format="PNG")
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        body = json.dumps({"image_url": uri}).encode()
        status, out = await call(app, _scope("POST", SUBMIT, body), body)
        assert status == 202, out
        poll = _scope("GET", "/v2/requests/status/" + json.loads(out)["request_id"])
        assert (await call(app, poll))[0] == 200
        async def bare_stack(scope: Any, receive: Any, send: Any) -> None:
            # the route table and the error boundary, without the middleware's journal
            ctx = scope[CTX_KEY] = app.table.resolve(scope)
            await serve(ctx, scope, receive, send)

        full_stack = app.build_middleware_stack()

        # bare_app.py's status answer: the same JSON body the bare app of http_load.py sends
        ceiling = Starlette(routes=[Route("/v2/requests/status/{request_id}",
                                          bare_app.pixazo_status)])
        stacks = [("bare Starlette, static JSON", ceiling),
                  ("emulator, no middleware", bare_stack),
                  ("emulator + middleware, no rules", full_stack)]
        # Interleaved rounds, best of each: the machine is shared and figures swing.
        best = {name: float("inf") for name, _ in stacks}
        for _ in range(repeat):
            for name, stack in stacks:
                best[name] = min(best[name], await _time(stack, poll, n, 1))
        emulator.faults.add({"vendor": "apiframe", "status": 500})
        slow = "emulator + middleware, 1 rule (no match)"
        best[slow] = float("inf")
        for _ in range(repeat):
            best[slow] = min(best[slow], await _time(full_stack, poll, n, 1))
        rows = [(name, best[name]) for name in best]
        base = rows[1][1]
        for name, us in rows:
            print(f"{name:45s} {us:8.1f} us/request  ({base / us:4.2f}x of no middleware, "
                  f"{rows[0][1] / us:4.2f}x of bare)")
    finally:
        await emulator.jobs.stop()


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main_async(args.n, args.repeat))


if __name__ == "__main__":
    main()
