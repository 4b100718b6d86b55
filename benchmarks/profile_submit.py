"""Where an Apiframe submit's CPU goes, in process (cProfile), with no network.

Not a test: prints figures. Usage:

    python benchmarks/profile_submit.py [--submits 5000] [--top 25] [--max-jobs 100000]

Makes ``--submits`` Apiframe submits of the same 8x8 PNG (result cache on: the job ends at
once, as in ``benchmarks/peers.py``) straight on the ASGI app (the middleware, guard, adapter
and engine all run; uvicorn and the socket do not), first unprofiled (microseconds per
submit), then under cProfile: the functions by own time, and the share of the submit spent
under each named step (ids, billing hold, store put, result-cache key, guard, task
scheduling, journal). With ``--max-jobs`` below the number of submits, the store is at its cap
(every put evicts one job) while it is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inproc import call, scope  # the benchmarks folder is not a package

from emulator.app import create_app
from emulator.settings import Settings

KEY = "profile-key"
#: Steps of a submit, by the function that does each (file suffix, function name).
STEPS = {
    "guard": ("guard.py", "check"),
    "job id (uuid7)": ("core/ids.py", "uuid7"),
    "billing hold": ("core/billing.py", "open_job"),
    "rate limit": ("core/billing.py", "throttle"),
    "store put": ("core/jobs/engine.py", "put"),
    "result cache / work now": ("core/jobs/runner.py", "work_now"),
    "task scheduling": ("core/jobs/engine.py", "_spawn"),
    "journal": ("middleware.py", "_record"),
    "JSON body parse": ("jsonbody.py", "parse_json_async"),
    "answer (JSON encode)": ("vendors/base.py", "json"),
}


def main() -> None:
    """Run the submits and print the profile (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--submits", type=int, default=5000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--max-jobs", type=int, default=100_000, help="the store's cap")
    args = parser.parse_args()
    asyncio.run(run(args.submits, args.top, args.max_jobs))


async def run(n: int, top: int, max_jobs: int) -> None:
    """Submit ``n`` times unprofiled, then ``n`` times under cProfile; print both."""
    app = create_app(Settings(progression="immediate", engine="grabcut", max_jobs=max_jobs))
    emu = app.state.emulator
    emu.jobs.billing.set_balance(KEY, 10**9, emu.clock.now())  # never runs dry
    await emu.jobs.start()
    try:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 40, 40)).save(buf, format="PNG")
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        body = json.dumps({"model": "bria-bg-remove", "briaBgRemoveParams": {
            "image": uri, "content_moderation": False}}).encode()
        headers = [(b"x-api-key", KEY.encode())]

        async def submit() -> None:
            status, out = await call(app, scope("POST", "/v2/images/background-remove",
                                                  headers, body), body)
            assert status == 202, out

        await submit()
        while emu.jobs.busy:  # the first one's work (worker start-up): then the result cache
            await asyncio.sleep(0.05)
        for _ in range(200):  # warm (memos)
            await submit()
        started = time.process_time()  # CPU: the machine is shared
        for _ in range(n):
            await submit()
        per = (time.process_time() - started) / n * 1e6
        print(f"{n} Apiframe submits in process: {per:.1f} us CPU each (unprofiled; store "
              f"{len(emu.jobs.store)} jobs, cap {max_jobs})")
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(n):
            await submit()
        profile.disable()
    finally:
        await emu.jobs.stop()
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in raw.values())
    print(f"\nshare of profiled time under each step (cumulative, of {total:.2f} s):")
    for name, (suffix, func) in STEPS.items():
        cum = sum(ct for (file, _, fn), (_, _, _, ct, _) in raw.items()
                  if file.endswith(suffix) and fn == func)
        print(f"  {name:26} {100 * cum / total:5.1f} %  {cum / n * 1e6:7.1f} us/submit")
    print(f"\ntop {top} functions by own time:")
    stats.sort_stats("tottime").print_stats(top)


if __name__ == "__main__":
    main()
