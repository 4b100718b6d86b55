"""Cost of each state store against the memory one, and restart time from SQLite.

Not a test: prints figures. Usage:

    python benchmarks/stores.py [--n 3000] [--rounds 3] [--reference PATH] [--restart-jobs 10000]
                                [--redis]

Each configuration runs in its own child process (a fresh interpreter), in round-robin
rounds: ``memory`` and ``sqlite`` of this checkout, and, with ``--reference PATH``, the
memory store of another checkout (``main``: the figures before this change), and with
``--redis`` the Redis store (a ``redis-server`` started on a free port, emptied before each
child; the child is one process, so this is the cost of the round trips, not of sharing).
A child calls
the ASGI app directly (no sockets) with N Pixazo submits of one small inline image (after the
first, its outputs come from the result cache: the request path and the store are what is
measured) and N status polls of one job, and prints CPU microseconds per request (process
time, the SQLite writer thread and its last batch included). Prints medians and ranges, and
ratios to this checkout's memory store (1.0 = as fast; below 1: slower).

Restart: a child fills an SQLite store with ``--restart-jobs`` finished jobs and stops; then
the wall-clock seconds to build the app on that file (restoring them) and on memory.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from http_load import redis_server  # siblings (this script's directory is on sys.path)
from inproc import call, scope

HERE = Path(__file__).resolve().parent
SUBMIT = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"
KEY = "bench-key"


def _scope(method: str, path: str, body: bytes = b"") -> dict[str, Any]:
    return scope(method, path, [(b"ocp-apim-subscription-key", KEY.encode())], body)


def _body() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return json.dumps({"image_url": uri}).encode()


def _settings(store: str) -> Any:
    from emulator.settings import Settings

    kwargs: dict[str, Any] = {"engine": "grabcut", "progression": "immediate",
                              "default_balance_usd": 1e9}
    if store != "memory":
        kwargs["store"] = store
    return Settings(**kwargs)


class InlineExecutor(Executor):
    """Runs what it is given at once, in the caller's thread: the saver's batches then
    encode and commit on the event loop (the alternative to its writer thread)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


async def _child_mix(store: str, n: int) -> dict[str, float]:
    from emulator.app import create_app

    on_loop = store.startswith("loop:")
    app = create_app(_settings(store.removeprefix("loop:")))
    if on_loop:
        app.state.emulator.saver._writer = InlineExecutor()
    body = _body()
    async with app.router.lifespan_context(app):
        status, out = await call(app, _scope("POST", SUBMIT, body), body)
        assert status in (200, 202), out
        poll = _scope("GET", "/v2/requests/status/" + json.loads(out)["request_id"])
        for _ in range(100):  # the first job's work ends, its outputs are cached
            status, out = await call(app, poll)
            if b"COMPLETED" in out:
                break
            await asyncio.sleep(0.05)
        saver = getattr(app.state.emulator, "saver", None)
        start, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            await call(app, _scope("POST", SUBMIT, body), body)
        submit_wall_us = (time.perf_counter() - wall) / n * 1e6
        if saver is not None:
            await saver.flush()
        submit_us = (time.process_time() - start) / n * 1e6
        start, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            await call(app, poll)
        poll_wall_us = (time.perf_counter() - wall) / n * 1e6
        if saver is not None:
            await saver.flush()
        poll_us = (time.process_time() - start) / n * 1e6
        # Loop stalls: submits one at a time for 2 s, yielding between them so the saver's
        # batches run in between (as under real traffic); the slowest iterations show what
        # one batch holds the loop for.
        took = []
        end = time.perf_counter() + 2.0
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await call(app, _scope("POST", SUBMIT, body), body)
            await asyncio.sleep(0)
            took.append(time.perf_counter() - t0)
        took.sort()
        stall_p999_ms = took[int(len(took) * 0.999)] * 1e3
        stall_max_ms = took[-1] * 1e3
    return {"stall_p999_ms": stall_p999_ms, "stall_max_ms": stall_max_ms,
            "submit_us": submit_us, "poll_us": poll_us, "submit_wall_us": submit_wall_us,
            "poll_wall_us": poll_wall_us}


async def _child_fill(store: str, n: int) -> None:
    from emulator.app import create_app

    app = create_app(_settings(store))
    body = _body()
    async with app.router.lifespan_context(app):
        for _ in range(n):
            status, out = await call(app, _scope("POST", SUBMIT, body), body)
            assert status in (200, 202), out
        await asyncio.sleep(0.5)


def _child_restart(store: str) -> dict[str, float]:
    from emulator.app import create_app

    start = time.perf_counter()
    app = create_app(_settings(store))
    seconds = time.perf_counter() - start
    jobs = len(app.state.emulator.jobs.store)
    return {"seconds": seconds, "jobs": jobs}


def _run_child(python_path: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": python_path}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *args],
                         env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):.1f}-{max(values):.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reference", default=None, metavar="PATH",
                        help="another checkout whose memory store is measured too (main)")
    parser.add_argument("--restart-jobs", type=int, default=10_000)
    parser.add_argument("--redis", action="store_true",
                        help="measure the Redis store too (needs redis-server)")
    parser.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, store, *rest = args.child
        if what == "mix":
            print(json.dumps(asyncio.run(_child_mix(store, int(rest[0])))))
        elif what == "fill":
            asyncio.run(_child_fill(store, int(rest[0])))
            print("{}")
        else:
            print(json.dumps(_child_restart(store)))
        return

    repo = str(HERE.parent)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        configs = {"memory": (repo, "memory"), "sqlite": (repo, f"sqlite:{tmp}/mix.db"),
                   "sqlite, batches on loop": (repo, f"loop:sqlite:{tmp}/loop.db")}
        if args.reference:
            configs["memory (reference)"] = (args.reference, "memory")
        if args.redis:
            import redis

            url = stack.enter_context(redis_server())
            admin = stack.enter_context(redis.Redis.from_url(url))
            configs["redis"] = (repo, url)
        results: dict[str, dict[str, list[float]]] = {
            name: {"submit_us": [], "poll_us": [], "submit_wall_us": [], "poll_wall_us": [],
                   "stall_p999_ms": [], "stall_max_ms": []}
            for name in configs}
        for _ in range(args.rounds):
            for name, (path, store) in configs.items():
                if "sqlite:" in store:
                    Path(store.split("sqlite:", 1)[1]).unlink(missing_ok=True)
                if store.startswith("redis://"):
                    admin.flushdb()
                got = _run_child(path, "mix", store, str(args.n))
                for key, value in got.items():
                    results[name][key].append(value)
        base = {k: statistics.median(v) for k, v in results["memory"].items()}
        print(f"us per request, median [range] of {args.rounds} rounds, n={args.n}; "
              "ratio = memory's median / this one's (1.0 = as fast, below 1: slower)")
        for title, keys in (("CPU (writer thread included)", ("submit_us", "poll_us")),
                            ("wall, event loop", ("submit_wall_us", "poll_wall_us"))):
            print(title)
            for name, got in results.items():
                line = f"  {name:24s}"
                for key in keys:
                    line += (f"  {key.split('_')[0]} {_spread(got[key])} us "
                             f"(x{base[key] / statistics.median(got[key]):.2f})")
                print(line)
        print("event-loop stalls while submitting, ms (one submit plus whatever ran between)")
        for name, got in results.items():
            print(f"  {name:24s}  p99.9 {_spread(got['stall_p999_ms'])}  "
                  f"max {_spread(got['stall_max_ms'])}")

        db = f"sqlite:{tmp}/restart.db"
        _run_child(repo, "fill", db, str(args.restart_jobs))
        for name, store in (("sqlite", db), ("memory", "memory")):
            got = _run_child(repo, "restart", store)
            print(f"start-up on {name:6s}: {got['seconds']:.2f} s ({got['jobs']} jobs restored)")


if __name__ == "__main__":
    main()
