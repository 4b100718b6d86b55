"""How many emulator source files and module transitions one request crosses, in process.

Not a test: prints figures. Usage:

    python benchmarks/trace_request.py

Sets up one finished Pixazo job, then traces (``sys.setprofile``) two requests made straight
on the ASGI app: a Pixazo status poll, and a fal queue submit with an ``X-Emulator-Fault``
header (``latency=0.001``: the plan is applied and the job still submitted). Counts the
distinct source files of the ``emulator`` package entered, and the module transitions: each
time the emulator module running changes (a call into, or a return back to, another emulator
module; frames outside the package are looked through); then the same counting Starlette's
modules too (the framework code a request walks through).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import starlette
from inproc import call, scope  # benchmarks/inproc.py (this script's directory is on sys.path)
from PIL import Image

import emulator
from emulator.app import create_app
from emulator.settings import Settings

PACKAGE = str(Path(emulator.__file__).resolve().parent)
FRAMEWORK = str(Path(starlette.__file__).resolve().parent)
KEY = "trace-key"
POLL = "pixazo status poll"
SUBMIT = "fal queue submit + fault header"


class Tracer:
    """``sys.setprofile`` hook counting the files and module transitions under ``roots``
    (path prefixes; frames elsewhere are looked through)."""

    def __init__(self, roots: tuple[str, ...]) -> None:
        self.roots = roots
        self.files: set[str] = set()
        self.transitions = 0
        self.current: str | None = None

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            target: FrameType | None = frame
        elif event == "return":
            target = frame.f_back
        else:
            return
        while target is not None and not target.f_code.co_filename.startswith(self.roots):
            target = target.f_back
        if target is None:
            return
        name = target.f_code.co_filename
        self.files.add(name)
        if name != self.current:
            if self.current is not None:
                self.transitions += 1
            self.current = name


class _Both:
    """Two tracers at once: the emulator's files, and the emulator's and Starlette's."""

    def __init__(self) -> None:
        self.own = Tracer((PACKAGE,))
        self.stack = Tracer((PACKAGE, FRAMEWORK))

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        self.own(frame, event, arg)
        self.stack(frame, event, arg)


async def _traced(app: Any, scope: dict[str, Any], body: bytes = b"") -> _Both:
    tracer = _Both()
    sys.setprofile(tracer)
    try:
        status, out = await call(app, scope, body)
    finally:
        sys.setprofile(None)
    assert status < 300, (status, out)
    return tracer


async def measure(settings: Settings | None = None) -> dict[str, _Both]:
    """Set up a job, trace the two requests; their tracers by name (``"pixazo status
    poll"``, ``"fal queue submit + fault header"``). ``settings``: the emulator's (default:
    immediate progression, the GrabCut engine)."""
    app = create_app(settings or Settings(progression="immediate", engine="grabcut"))
    emu = app.state.emulator
    await emu.jobs.start()
    found: dict[str, _Both] = {}
    try:
        buf = io.BytesIO()
        Image.new("RGB", (32, 24), (200, 40, 40)).save(buf, format="PNG")
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        body = json.dumps({"image_url": uri}).encode()
        pixazo = [(b"ocp-apim-subscription-key", KEY.encode())]
        status, out = await call(app, scope(
            "POST", "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request", pixazo, body), body)
        assert status == 202, out
        poll = scope("GET", "/v2/requests/status/" + json.loads(out)["request_id"], pixazo,
                     b"")
        await emu.jobs.finish(emu.jobs.find(json.loads(out)["request_id"]))
        await call(app, dict(poll))  # warm: renders the final answer
        fal = [(b"authorization", f"Key {KEY}".encode()),
               (b"x-emulator-fault", b"latency=0.001")]
        submit = "/queue/fal-ai/bria/background/remove"
        await call(app, scope("POST", submit, fal, body), body)  # warm
        for name, request, payload in ((POLL, poll, b""),
                                       (SUBMIT, scope("POST", submit, fal, body), body)):
            found[name] = await _traced(app, dict(request), payload)
    finally:
        await emu.jobs.stop()
    return found


def files_of(tracer: Tracer) -> list[str]:
    """The emulator files ``tracer`` saw, relative to the package, sorted."""
    return sorted(f[len(PACKAGE) + 1:] for f in tracer.files if f.startswith(PACKAGE))


async def main_async() -> None:
    """Trace the two requests, print the figures."""
    for name, both in (await measure()).items():
        own = files_of(both.own)
        print(f"{name:34s} emulator: {len(own):3d} files {both.own.transitions:3d} "
              f"transitions; with starlette: {len(both.stack.files):3d} files "
              f"{both.stack.transitions:3d} transitions\n    {own}")


if __name__ == "__main__":
    asyncio.run(main_async())
