"""Where a status poll's time goes: the emulator's Apiframe, Pixazo and fal polls of a finished
job against each other and against the bare Starlette app (``benchmarks/bare_app.py``).

Not a test: prints figures. Usage:

    python benchmarks/profile_poll.py inproc [--n 4000] [--rounds 5]
    python benchmarks/profile_poll.py wrk [--connections 64] [--duration 5]
        [--polls apiframe,pixazo,fal] [--rounds 3] [--idle]

``inproc`` calls the ASGI apps straight (no socket, no uvicorn): CPU microseconds per poll of
each vendor on the emulator (middleware, route table, fast lane, journal) and on the bare app,
``--rounds`` interleaved rounds (median [min-max]); then one cProfile run per vendor poll with
the share of the poll's time under each step (:data:`STEPS`, inclusive), and whether the
reads were answered by the fast lane (its hit count).

``wrk`` starts the emulator (``--engine grabcut``, as ``benchmarks/peers.py`` does) and the
bare app, makes one finished job per vendor, then for each poll drives each server with wrk
(one thread) while ``py-spy record --format raw`` samples the server process; prints wrk's
req/s and the share of py-spy's samples whose stack holds each step (:data:`SPY_STEPS`,
inclusive; with ``--idle`` the samples of an idle event loop are kept, so the loop's wait
shows as ``loop waiting (select)``). The collapsed stacks are left in a temporary folder whose
path is printed (open them with speedscope or ``flamegraph.pl``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import cProfile
import io
import json
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bare_app  # the benchmarks folder is not a package: siblings on sys.path above
from http_load import KEY, emulator_cmd, ensure_wrk, free_port, lua_script, run_wrk, serve
from inproc import call, scope
from spy import main_thread_samples, record

from emulator.app import create_app
from emulator.settings import Settings

#: The submit and the auth header of each vendor's poll.
VENDORS: dict[str, tuple[str, tuple[bytes, bytes]]] = {
    "apiframe": ("/v2/images/background-remove", (b"x-api-key", KEY.encode())),
    "pixazo": ("/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request",
               (b"ocp-apim-subscription-key", KEY.encode())),
    "fal": ("/queue/fal-ai/bria/background/remove", (b"authorization", b"Key " + KEY.encode())),
}
#: Steps of a poll in cProfile, by (file suffix, function name): inclusive shares.
STEPS = {
    "middleware (whole)": ("middleware.py", "_http"),
    "route table resolve": ("context.py", "resolve"),
    "  host / mount match": ("routing.py", "matches"),
    "  route scan (_in_area)": ("context.py", "_in_area"),
    "boundary serve": ("middleware.py", "serve"),
    "  fast lane answer": ("finalreads.py", "answer"),
    "  lane fingerprint": ("finalreads.py", "fingerprint"),
    "journal entry": ("middleware.py", "_record"),
    "  journal record": ("journal.py", "record"),
}
#: py-spy's sampling rate (Hz).
RATE = 250
#: Where py-spy's event-loop samples go, exclusive: a sample counts for the step of the
#: innermost frame (leaf first) that holds one of its substrings ("function (file"); the
#: rest (uvicorn's request cycle, asyncio's loop and transports) is "other".
SPY_STEPS: dict[str, tuple[str, ...]] = {
    "uvicorn send (headers, transport write)": ("send (uvicorn/protocols",),
    "uvicorn HTTP parse (data_received)": ("data_received (uvicorn/",),
    "route table resolve": ("resolve (emulator/context.py",),
    "  of it: prefix match (Mount.matches)": ("Mount.matches (starlette/routing.py",),
    "fast lane (lookup, fingerprint)": ("(emulator/vendors/finalreads.py",),
    "journal entry": ("_record (emulator/middleware.py", "(emulator/core/journal.py"),
    "middleware + boundary, own": ("(emulator/middleware.py",),
    "bare app: Starlette (router, Request, Response)": ("(starlette/",),
    "other (uvicorn cycle, asyncio)": (),
}


def _png_uri() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _submit_body(vendor: str, image: str) -> bytes:
    if vendor == "apiframe":
        return json.dumps({"model": "bria-bg-remove", "briaBgRemoveParams": {
            "image": image, "content_moderation": False}}).encode()
    return json.dumps({"image_url": image}).encode()


def _poll_path(vendor: str, answer: dict[str, Any]) -> str:
    if vendor == "apiframe":
        return f"/v2/jobs/{answer['jobId']}"
    if vendor == "pixazo":
        return f"/v2/requests/status/{answer['request_id']}"
    return f"/queue/fal-ai/bria/requests/{answer['request_id']}/status"


def _ratio_line(name: str, values: list[float], ref: list[float]) -> str:
    ratios = [v / r for v, r in zip(values, ref, strict=True)]
    return (f"{name:<28} {statistics.median(values):8.1f} us  [{min(values):.1f}-"
            f"{max(values):.1f}]   / bare same path {statistics.median(ratios):.2f} "
            f"[{min(ratios):.2f}-{max(ratios):.2f}]")


async def _inproc(n: int, rounds: int) -> None:
    app = create_app(Settings(progression="immediate", engine="grabcut", journal_size=10000))
    emulator = app.state.emulator
    await emulator.jobs.start()
    try:
        image = _png_uri()
        polls: dict[str, dict[str, Any]] = {}
        for vendor, (submit, auth) in VENDORS.items():
            body = _submit_body(vendor, image)
            status, out = await call(app, scope("POST", submit, [auth], body), body)
            assert status in (200, 201, 202), out
            polls[vendor] = scope("GET", _poll_path(vendor, json.loads(out)),
                                  [auth, (b"user-agent", b"bench"), (b"accept", b"*/*")])
            deadline = time.monotonic() + 30
            while b'"COMPLETED"' not in (await call(app, polls[vendor]))[1].upper():
                assert time.monotonic() < deadline, "job did not finish"
                await asyncio.sleep(0.05)
        stack = app.build_middleware_stack()
        bare = bare_app.app

        async def cpu(target: Any, request: dict[str, Any]) -> float:
            start = time.process_time()
            for _ in range(n):
                await call(target, request)
            return (time.process_time() - start) / n * 1e6

        emu: dict[str, list[float]] = collections.defaultdict(list)
        ref: dict[str, list[float]] = collections.defaultdict(list)
        for _ in range(rounds):
            for vendor, request in polls.items():
                emu[vendor].append(await cpu(stack, request))
                ref[vendor].append(await cpu(bare, request))
        print(f"CPU per poll, in process ({n} polls x {rounds} interleaved rounds; median "
              "[min-max]):")
        for vendor in polls:
            print(_ratio_line(f"emulator {vendor} poll", emu[vendor], ref[vendor]))
            print(_ratio_line(f"bare app {vendor} poll", ref[vendor], ref[vendor]))
        af = emu["apiframe"]
        for vendor in ("pixazo", "fal"):
            print(_ratio_line(f"{vendor} / apiframe (emulator)", emu[vendor], af))
        print("\ncProfile, inclusive share of the emulator's poll time per step "
              "(lane hits counted):")
        print(f"{'step':<30}" + "".join(f"{v:>10}" for v in polls))
        shares: dict[str, dict[str, float]] = {}
        for vendor, request in polls.items():
            lane = emulator.adapters[vendor]._final_reads
            hits = lane.hits
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(n):
                await call(stack, request)
            prof.disable()
            stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
            total = sum(v[2] for v in stats.values())  # own time of everything
            shares[vendor] = {"lane hits %": 100.0 * (lane.hits - hits) / n}
            for step, (suffix, func) in STEPS.items():
                cum = sum(v[3] for (file, _, fn), v in stats.items()
                          if file.endswith(suffix) and fn == func)
                shares[vendor][step] = 100.0 * cum / total
        for step in ["lane hits %", *STEPS]:
            print(f"{step:<30}" + "".join(f"{shares[v][step]:>9.1f}%" for v in polls))
    finally:
        await emulator.jobs.stop()


def _prepare(base: str) -> dict[str, tuple[str, dict[str, str]]]:
    """One finished job per vendor on a running emulator: its poll path and headers."""
    import httpx

    image = _png_uri()
    out: dict[str, tuple[str, dict[str, str]]] = {}
    with httpx.Client(base_url=base, timeout=60) as c:
        c.put(f"/_emulator/keys/{KEY}", json={"balance_usd": 1e9}).raise_for_status()
        for vendor, (submit, (name, value)) in VENDORS.items():
            headers = {name.decode(): value.decode(), "content-type": "application/json"}
            got = c.post(submit, content=_submit_body(vendor, image), headers=headers)
            got.raise_for_status()
            path = _poll_path(vendor, got.json())
            del headers["content-type"]
            deadline = time.monotonic() + 30
            while c.get(path, headers=headers).json().get("status") not in (
                    "COMPLETED", "completed", "FAILED") and time.monotonic() < deadline:
                time.sleep(0.1)
            out[vendor] = (path, headers)
    return out


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used (``/proc``, Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    """CPU seconds of this process's ended children (wrk's runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _answer_bytes(base: str, path: str, headers: dict[str, str]) -> int:
    """Bytes of one poll's answer: status line and headers (as sent) plus body."""
    import httpx

    got = httpx.get(base + path, headers=headers)
    head = sum(len(k) + len(v) + 4 for k, v in got.headers.raw) + 17
    return head + len(got.content)


def _spy_shares(path: Path) -> dict[str, float]:
    """Per step of :data:`SPY_STEPS`, the share of the event loop's samples (the main
    thread's: the process's other threads, idle pool and queue feeders, are left out)."""
    total = 0
    hits: collections.Counter[str] = collections.Counter()
    for frames, count in main_thread_samples(path):
        total += count
        step = _innermost(frames)
        hits[step] += count
        if step == "route table resolve" and any("Mount.matches (" in f for f in frames):
            hits["  of it: prefix match (Mount.matches)"] += count
    return {step: 100.0 * hits[step] / max(1, total) for step in SPY_STEPS} | {
        "loop samples": float(total)}


def _innermost(frames: list[str]) -> str:
    """The step of a sample's stack (root first): the route table's resolve when under it
    (Starlette's matchers it calls count for it), else the innermost frame's step."""
    resolve = SPY_STEPS["route table resolve"]
    if any(n in frame for frame in frames for n in resolve):
        return "route table resolve"
    for frame in reversed(frames):
        for step, needles in SPY_STEPS.items():
            if needles and not step.startswith("  ") and any(n in frame for n in needles):
                return step
    return "other (uvicorn cycle, asyncio)"


def _wrk(connections: int, duration: float, polls: list[str], idle: bool, rounds: int
         ) -> None:
    wrk = ensure_wrk()
    folder = Path(tempfile.mkdtemp(prefix="profile_poll-"))
    emu_port, bare_port = free_port(), free_port()
    here = Path(__file__).resolve().parent
    with serve(emulator_cmd(emu_port, "--engine", "grabcut"), emu_port) as emu_pid, \
            serve([sys.executable, str(here / "bare_app.py"), str(bare_port)],
                  bare_port) as bare_pid:
        jobs = _prepare(f"http://127.0.0.1:{emu_port}")
        sizes = {(target, vendor): _answer_bytes(f"http://127.0.0.1:{port}", *jobs[vendor])
                 for target, port in (("emulator", emu_port), ("bare", bare_port))
                 for vendor in polls}
        runs: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
        targets = [("emulator", emu_port, emu_pid), ("bare", bare_port, bare_pid)]
        for rnd in range(rounds):
            for vendor in polls:
                path, headers = jobs[vendor]
                script = lua_script(folder, f"{vendor}_poll", [("GET", path, headers, "")])
                for target, port, pid in targets[rnd % 2:] + targets[:rnd % 2]:
                    url = f"http://127.0.0.1:{port}"
                    run_wrk(wrk, url, script, connections, 1, wait=False)  # warm
                    # a plain run: req/s, and the CPU of the server and of wrk per request
                    server_cpu, client_cpu = _cpu_s(pid), _children_cpu_s()
                    res = run_wrk(wrk, url, script, connections, duration, wait=False)
                    server_cpu, client_cpu = (_cpu_s(pid) - server_cpu,
                                              _children_cpu_s() - client_cpu)
                    done = max(1, res.requests)
                    # then a sampled run: where the event loop's time goes
                    raw = folder / f"{target}-{vendor}-{connections}-r{rnd}.txt"
                    with ThreadPoolExecutor(1) as pool:  # py-spy samples inside wrk's run
                        running = pool.submit(run_wrk, wrk, url, script, connections,
                                              duration, wait=False)
                        time.sleep(0.5)
                        spy = record(pid, duration - 1, raw, rate=RATE, idle=idle)
                        spy.wait(timeout=duration + 30)
                        running.result()
                    row = _spy_shares(raw)
                    row["req/s"] = res.rps
                    row["server CPU us / request"] = server_cpu / done * 1e6
                    row["wrk CPU us / request"] = client_cpu / done * 1e6
                    row["answer bytes (headers + body)"] = float(sizes[target, vendor])
                    row["non-2xx + socket errors"] = float(res.non2xx + res.errors)
                    runs[f"{target} {vendor}"].append(row)
    rows = {name: {key: statistics.median(r[key] for r in got) for key in got[0]}
            for name, got in runs.items()}
    names = list(rows)
    print(f"{rounds} round(s), medians; wrk -t1 -c{connections} {duration:.0f} s per cell, "
          f"py-spy raw at {RATE} Hz ({'with' if idle else 'without'} idle samples); share of "
          "the event loop's samples whose stack holds the step:")
    counts = ("req/s", "server CPU us / request", "wrk CPU us / request",
              "answer bytes (headers + body)", "non-2xx + socket errors", "loop samples")
    width = max(len(k) for k in [*counts, *SPY_STEPS]) + 2
    print(f"{'':<{width}}" + "".join(f"{n:>18}" for n in names))
    for key in counts:
        print(f"{key:<{width}}" + "".join(f"{rows[n][key]:>18,.1f}" for n in names))
    print("share of loop samples (server CPU us / request):")
    for key in SPY_STEPS:
        cells = []
        for n in names:
            share, cpu = rows[n][key], rows[n]["server CPU us / request"]
            cells.append(f"{share:>9.1f}% ({share * cpu / 100:4.1f})")
        print(f"{key:<{width}}" + "".join(cells))
    print(f"\ncollapsed stacks: {folder}")


def main() -> None:
    """Parse the arguments and run the chosen mode (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p_in = sub.add_parser("inproc")
    p_in.add_argument("--n", type=int, default=4000)
    p_in.add_argument("--rounds", type=int, default=5)
    p_wrk = sub.add_parser("wrk")
    p_wrk.add_argument("--connections", type=int, default=64)
    p_wrk.add_argument("--duration", type=float, default=5.0)
    p_wrk.add_argument("--polls", default="apiframe,pixazo,fal")
    p_wrk.add_argument("--idle", action="store_true")
    p_wrk.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.mode == "inproc":
        asyncio.run(_inproc(args.n, args.rounds))
    else:
        _wrk(args.connections, args.duration,
             [p.strip() for p in args.polls.split(",") if p.strip()], args.idle, args.rounds)


if __name__ == "__main__":
    main()
