"""Where a status poll's tail time goes while u2netp jobs run (the process pool): the event
loop's CPU, its wait for a CPU, the worker processes' CPU, and py-spy's view of the loop.

Not a test: prints figures. Usage:

    python benchmarks/profile_busy.py [--rounds 2] [--duration 5] [--jobs 20]
        [--models-dir DIR] [--pool processes]

As ``benchmarks/poll_under_load.py`` (u2netp when its weights are found, result cache off,
``--progression time``, two matte workers, Pixazo polls of a finished job with wrk at 16
connections), each round measures an idle run and a busy run (``--jobs`` 4-megapixel photos
submitted just before). During each run it reads, per second of the run:

* the event loop's CPU and its **run-queue wait** (time the loop's thread was ready to run
  but had no CPU: ``/proc/PID/task/PID/schedstat``, Linux scheduler statistics);
* the CPU of the server's other threads and of its worker processes (``/proc``);
* wrk's CPU and run-queue wait (wrk's latencies include its own waits for a CPU);

and samples the server with ``py-spy record --idle`` (all threads kept), printing the share of
the loop thread's samples in each step (:data:`STEPS`: waiting in ``select``, serving a
request, ending a job on the loop, the rest). The collapsed stacks stay in a temporary folder.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_load import NO_CACHE, emulator_cmd, ensure_wrk, free_port, prepare, run_wrk, scripts
from http_load import serve as serve_cmd
from poll_under_load import HEADERS, SUBMIT, photo_uri, wait_done
from spy import main_thread_samples, record

#: Steps of the loop thread's samples: waiting when the innermost frame is the loop's own
#: (uvloop waits in C, below ``Runner.run``; asyncio's loop in ``select``), else the first
#: step (in this order) one of whose substrings is in the stack.
STEPS: dict[str, tuple[str, ...]] = {
    "waiting for I/O (the loop idle)": (),
    "serving a request (middleware)": ("(emulator/middleware.py",),
    "ending a job (engine, runner, pool callbacks)": ("(emulator/core/jobs/",),
    "uvicorn (parse, send)": ("(uvicorn/protocols",),
    "other (asyncio, timers)": (),
}
#: Innermost frames of a loop waiting for I/O.
IDLE_LEAVES = ("Runner.run (", "run_until_complete (", "select (selectors.py")
RATE = 200


def _stat(pid: int, tid: int | None = None) -> tuple[float, float]:
    """(CPU s, run-queue wait s) of one thread of a process, or of all its threads."""
    tasks = [tid] if tid is not None else [int(t.name) for t in
                                           Path(f"/proc/{pid}/task").iterdir()]
    cpu = wait = 0
    for task in tasks:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()
            cpu, wait = cpu + int(fields[0]), wait + int(fields[1])
    return cpu / 1e9, wait / 1e9


def _wrk_pid(base: str) -> int | None:
    """The running wrk process driving ``base``, if found."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                if cmdline[0].endswith(b"wrk") and base.encode() in cmdline:
                    return int(proc.name)
    return None


def _process_cpu(pid: int) -> float:
    from profile_poll import _cpu_s

    return _cpu_s(pid)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids += [int(k) for k in text]
    return kids


def _snapshot(pid: int) -> dict[str, float]:
    loop_cpu, loop_wait = _stat(pid, pid)
    kids = 0.0
    for kid in _children(pid):
        with contextlib.suppress(OSError):  # a worker that just ended
            kids += _process_cpu(kid)
    return {"loop CPU": loop_cpu, "loop run-queue wait": loop_wait,
            "server other threads CPU": _process_cpu(pid) - loop_cpu, "workers CPU": kids,
            "at": time.monotonic()}


def _shares(path: Path) -> dict[str, float]:
    hits: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in main_thread_samples(path):
        stack = ";".join(frames)
        total += count
        if any(leaf in frames[-1] for leaf in IDLE_LEAVES):
            step = "waiting for I/O (the loop idle)"
        else:
            step = next((s for s, needles in STEPS.items()
                         if needles and any(n in stack for n in needles)),
                        "other (asyncio, timers)")
        hits[step] += count
    return {s: 100.0 * hits[s] / max(1, total) for s in STEPS}


def _measured(wrk: str, base: str, script: Path, pid: int, duration: float, raw: Path
              ) -> dict[str, float]:
    with ThreadPoolExecutor(1) as pool:
        before = _snapshot(pid)
        running = pool.submit(run_wrk, wrk, base, script, 16, duration, wait=False)
        time.sleep(0.3)
        spy = record(pid, duration - 1, raw, rate=RATE, idle=True)
        client = _wrk_pid(base)
        client_before = _stat(client) if client else (0.0, 0.0)
        client_at = time.monotonic()
        time.sleep(max(0.1, duration - 1.0))
        client_after = _stat(client) if client else (0.0, 0.0)
        client_s = time.monotonic() - client_at
        res = running.result()
        after = _snapshot(pid)
        spy.wait(timeout=60)
    seconds = after["at"] - before["at"]
    row = {k: (after[k] - before[k]) / seconds * 1000 for k in before if k != "at"}
    row["wrk CPU"] = (client_after[0] - client_before[0]) / client_s * 1000
    row["wrk run-queue wait"] = (client_after[1] - client_before[1]) / client_s * 1000
    row |= {"p50 ms": res.p50_ms, "p99 ms": res.p99_ms, "req/s": res.rps}
    return row | _shares(raw)


def main() -> None:
    """Run the rounds and print idle against busy (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--pool", default="processes")
    args = parser.parse_args()
    wrk = ensure_wrk()
    env = {**NO_CACHE, **({"RMBG_EMULATOR_MODELS": args.models_dir} if args.models_dir else {})}
    photo = photo_uri()
    folder = Path(tempfile.mkdtemp(prefix="profile_busy-"))
    rows: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    engine = "?"
    for rnd in range(args.rounds):
        port = free_port()
        cmd = emulator_cmd(port, "--engine", "auto", "--progression", "time",
                           "--matte-pool", args.pool, "--matte-workers", "2")
        base = f"http://127.0.0.1:{port}"
        with serve_cmd(cmd, port, env) as pid, httpx.Client(base_url=base, timeout=120) as c:
            engine = c.get("/_emulator/health").json()["engine"]
            script = scripts(folder, prepare(base))["pixazo poll"]
            warm = [c.post(SUBMIT, json={"image_url": photo}, headers=HEADERS)
                    .json()["request_id"] for _ in range(2)]
            wait_done(c, warm)
            rows["idle"].append(_measured(wrk, base, script, pid, args.duration,
                                          folder / f"idle-{rnd}.txt"))
            for _ in range(args.jobs):
                c.post(SUBMIT, json={"image_url": photo}, headers=HEADERS).raise_for_status()
            rows["busy"].append(_measured(wrk, base, script, pid, args.duration,
                                          folder / f"busy-{rnd}.txt"))
        for phase in ("idle", "busy"):
            r = rows[phase][-1]
            print(f"round {rnd + 1} {phase}: p99 {r['p99 ms']:.2f} ms, {r['req/s']:,.0f} req/s, "
                  f"loop CPU {r['loop CPU']:.0f} ms/s, run-queue wait "
                  f"{r['loop run-queue wait']:.0f} ms/s, workers {r['workers CPU']:.0f} ms/s",
                  flush=True)
    print(f"\n{args.rounds} rounds, engine {engine}, pool {args.pool}, {args.jobs} jobs, "
          f"wrk 16 connections {args.duration:g} s; median [min-max] per run "
          "(CPU and waits in ms per second of the run):")
    keys = list(rows["idle"][0])
    print(f"{'':<48}{'idle':>22}{'busy':>22}")
    for key in keys:
        cells = []
        for phase in ("idle", "busy"):
            got = [r[key] for r in rows[phase]]
            unit = "%" if key in STEPS else ""
            cells.append(f"{statistics.median(got):.1f}{unit} [{min(got):.1f}-{max(got):.1f}]")
        print(f"{key:<48}" + "".join(f"{c:>22}" for c in cells))
    print(f"\ncollapsed stacks: {folder}")


if __name__ == "__main__":
    main()
