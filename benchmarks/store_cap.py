"""Submit and mix rates with the job store below its cap against at its cap, in one run, with
the garbage collector's pauses timed. Not a test: prints figures.

    python benchmarks/store_cap.py [--max-jobs 100000] [--rounds 3] [--duration 4]
        [--connections 64] [--spy]
    python benchmarks/store_cap.py --stall [--max-jobs 100000] [--duration 6]
    python benchmarks/store_cap.py --inproc [--max-jobs 100000] [--rounds 3] [--submits 5000]

Two emulators (``benchmarks/gc_server.py``: the server users run, its collections timed), the
same cap (``RMBG_EMULATOR_MAX_JOBS``): "below" is reset before each round (it then holds
far fewer jobs than the cap), "at cap" is first filled with submits to its cap, so that every
submit of the run evicts a job. Each round runs the Apiframe submit and the mix (submit, poll,
file; as ``benchmarks/peers.py``) on both, the order alternating per round. Prints per cell
the req/s (median [min-max]), the at-cap / below ratio paired per round, p99, wrk's socket
errors and non-2xx, the server's CPU per request, and the collections of each generation
during the runs (count, total and longest pause). With ``--spy`` the at-cap and below submit
runs of the last round are sampled by py-spy and the functions with the largest difference
in share are printed.

With ``--stall`` it fills one server to its cap, then runs the mix once plainly and once
with a full collection forced a third of the way in (``SIGUSR1``, the pass the idle
collector makes), printing wrk's socket errors, non-2xx, p99 and the pause.

With ``--inproc`` it runs in one process, straight on the ASGI app (no sockets, so no other
server shares the CPU), the server's collector policy installed (``emulator.gcpolicy``):
each round resets the emulator, times ``--submits`` Apiframe submits below the cap, fills the
store to its cap and times as many at the cap; CPU microseconds per submit, the collections
during the timed submits, and cProfile's own time per function where at cap and below differ
most.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import ensure_wrk, free_port, run_wrk, serve  # siblings (not a package)
from peers import prepare, scripts
from profile_poll import _cpu_s
from spy import main_thread_samples, record

HERE = Path(__file__).resolve().parent


def _gc(path: Path) -> dict[str, list[float]]:
    time.sleep(0.3)  # the server writes it every 0.2 s
    stats: dict[str, list[float]] = json.loads(path.read_text())
    return stats


def _gc_delta(before: dict[str, list[float]], after: dict[str, list[float]]) -> str:
    parts = []
    for gen in ("0", "1", "2"):
        count = after[gen][0] - before[gen][0]
        total = (after[gen][1] - before[gen][1]) * 1000
        longest = after[gen][2] * 1000  # the longest since start (a max has no delta)
        parts.append(f"g{gen} {count:.0f}x {total:.0f} ms (max {longest:.1f})")
    return ", ".join(parts)


def _fill(wrk: str, base: str, script: Path, cap: int) -> None:
    done = 0
    while done < cap * 1.05:
        res = run_wrk(wrk, base, script, 64, 5, wait=False)
        done += res.ok
    print(f"filled: about {done:,} submits (cap {cap:,})", flush=True)


def _functions(path: Path) -> collections.Counter[str]:
    """Inclusive share (%) of the main thread's samples per function."""
    per: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in main_thread_samples(path):
        total += count
        for name in {f.split(":")[0] for f in frames}:
            per[name] += count
    return collections.Counter({k: 100.0 * v / max(1, total) for k, v in per.items()})


async def _inproc(cap: int, rounds: int, n: int) -> None:
    import asyncio
    import cProfile
    import gc
    import pstats

    from http_load import KEY, tiny_png_uri
    from inproc import call, scope

    from emulator import gcpolicy
    from emulator.app import create_app
    from emulator.settings import Settings

    app = create_app(Settings(progression="immediate", engine="grabcut", max_jobs=cap))
    emu = app.state.emulator
    await emu.jobs.start()
    body = json.dumps({"model": "bria-bg-remove", "briaBgRemoveParams": {
        "image": tiny_png_uri(), "content_moderation": False}}).encode()
    request = scope("POST", "/v2/images/background-remove", [(b"x-api-key", KEY.encode())],
                    body)
    collections_seen = [0, 0.0]
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            collections_seen[0] += 1
            collections_seen[1] += time.perf_counter() - started[0]

    async def submits(count: int) -> None:
        for _ in range(count):
            status, out = await call(app, request, body)
            assert status == 202, out

    async def timed_submits(label: str, rnd: int) -> float:
        collections_seen[:] = [0, 0.0]
        begin = time.process_time()
        await submits(n)
        per = (time.process_time() - begin) / n * 1e6
        rows[label].append(per)
        print(f"round {rnd + 1} {label:7} store {len(emu.jobs.store):7,} jobs: {per:6.1f} us "
              f"CPU per submit; {collections_seen[0]} collections, "
              f"{collections_seen[1] * 1000:.0f} ms", flush=True)
        return per

    rows: dict[str, list[float]] = collections.defaultdict(list)
    try:
        emu.jobs.billing.set_balance(KEY, 10**9, emu.clock.now())
        await submits(1)
        while emu.jobs.busy:  # the first job's work (the worker's start): then the cache
            await asyncio.sleep(0.05)
        await submits(200)
        gcpolicy.install()  # as the server: frozen start-up, young passes, no automatic full
        gc.callbacks.append(timed)
        profiles: dict[str, cProfile.Profile] = {}
        for rnd in range(rounds):
            emu.reset(reload_scenarios=False)
            gc.collect()
            emu.jobs.billing.set_balance(KEY, 10**9, emu.clock.now())
            await timed_submits("below", rnd)
            await submits(max(0, cap - len(emu.jobs.store)) + 10)
            gc.collect()  # what the idle collector would have done before the run
            await timed_submits("at cap", rnd)
        for label in ("at cap", "below"):
            if label == "below":
                emu.reset(reload_scenarios=False)
                gc.collect()
                emu.jobs.billing.set_balance(KEY, 10**9, emu.clock.now())
            profile = profiles[label] = cProfile.Profile()
            profile.enable()
            await submits(n)
            profile.disable()
        gc.callbacks.remove(timed)
    finally:
        await emu.jobs.stop()
    below, at_cap = rows["below"], rows["at cap"]
    ratios = [c / b for c, b in zip(at_cap, below, strict=True)]
    print(f"\nin process, cap {cap:,}, {n} submits per timed run, {rounds} rounds; CPU us per "
          f"submit below {statistics.median(below):.1f} [{min(below):.1f}-{max(below):.1f}], "
          f"at cap {statistics.median(at_cap):.1f} [{min(at_cap):.1f}-{max(at_cap):.1f}], "
          f"at cap / below {statistics.median(ratios):.2f} "
          f"[{min(ratios):.2f}-{max(ratios):.2f}]")
    own = {label: {f"{Path(k[0]).name}:{k[2]}": v[2] / n * 1e6
                   for k, v in pstats.Stats(p).stats.items()}  # type: ignore[attr-defined]
           for label, p in profiles.items()}
    names = sorted(set(own["below"]) | set(own["at cap"]),
                   key=lambda k: -abs(own["at cap"].get(k, 0) - own["below"].get(k, 0)))
    print("cProfile own time, us per submit, largest differences (at cap, below):")
    for name in names[:12]:
        print(f"  {own['at cap'].get(name, 0):6.1f} {own['below'].get(name, 0):6.1f}  {name}")


def _stall(cap: int, duration: float, connections: int) -> None:
    import signal

    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="store_cap-"))
    port, stats = free_port(), tmp / "gc.json"
    with serve([sys.executable, str(HERE / "gc_server.py"), "--port", str(port), "--engine",
                "grabcut"], port, {"RMBG_EMULATOR_MAX_JOBS": str(cap),
                                   "GC_STATS": str(stats)}) as pid:
        url = f"http://127.0.0.1:{port}"
        paths, _ = prepare(url)
        _fill(wrk, url, scripts(tmp, paths)["apiframe submit"], cap)
        for forced in (False, True, False, True):
            mix = scripts(tmp, prepare(url)[0])["apiframe mix"]
            before = _gc(stats)
            with ThreadPoolExecutor(1) as pool:
                running = pool.submit(run_wrk, wrk, url, mix, connections, duration)
                if forced:
                    time.sleep(duration / 3 + 0.5)
                    os.kill(pid, signal.SIGUSR1)
                res = running.result()
            after = _gc(stats)
            pause = (after["2"][1] - before["2"][1]) * 1000
            print(f"mix at cap, {connections} connections, full collection forced: "
                  f"{'yes' if forced else 'no '}: {res.rps:8,.0f} req/s, p99 "
                  f"{res.p99_ms:7.1f} ms, socket errors {res.errors}, non-2xx {res.non2xx}, "
                  f"full passes {after['2'][0] - before['2'][0]:.0f} ({pause:.0f} ms)",
                  flush=True)


def main() -> None:
    """Run the rounds and print the table (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--spy", action="store_true")
    parser.add_argument("--inproc", action="store_true")
    parser.add_argument("--stall", action="store_true")
    parser.add_argument("--submits", type=int, default=5000, help="per timed run (--inproc)")
    args = parser.parse_args()
    if args.stall:
        _stall(args.max_jobs, args.duration, args.connections)
        return
    if args.inproc:
        import asyncio

        asyncio.run(_inproc(args.max_jobs, args.rounds, args.submits))
        return
    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="store_cap-"))
    ports = {"below": free_port(), "at cap": free_port()}
    gc_files = {t: tmp / f"gc-{i}.json" for i, t in enumerate(ports)}
    env = {"RMBG_EMULATOR_MAX_JOBS": str(args.max_jobs)}
    with serve([sys.executable, str(HERE / "gc_server.py"), "--port", str(ports["below"]),
                "--engine", "grabcut"], ports["below"],
               {**env, "GC_STATS": str(gc_files["below"])}) as below_pid, \
            serve([sys.executable, str(HERE / "gc_server.py"), "--port", str(ports["at cap"]),
                   "--engine", "grabcut"], ports["at cap"],
                  {**env, "GC_STATS": str(gc_files["at cap"])}) as cap_pid:
        pids = {"below": below_pid, "at cap": cap_pid}
        urls = {t: f"http://127.0.0.1:{p}" for t, p in ports.items()}
        paths, _ = prepare(urls["at cap"])
        _fill(wrk, urls["at cap"], scripts(tmp, paths)["apiframe submit"], args.max_jobs)
        rows: dict[tuple[str, str], list[tuple[float, float, int, float, str]]] = \
            collections.defaultdict(list)
        names = ("apiframe submit", "apiframe mix")
        targets = list(ports)
        dirs = {t: tmp / t.replace(" ", "_") for t in targets}
        for folder in dirs.values():
            folder.mkdir()
        for rnd in range(args.rounds):
            httpx.post(f"{urls['below']}/_emulator/reset", timeout=60).raise_for_status()
            # fresh polled jobs on both (the reset forgot them; the cap evicted them)
            wrk_scripts = {t: scripts(dirs[t], prepare(urls[t])[0]) for t in targets}
            for name in names:
                for target in targets[rnd % 2:] + targets[:rnd % 2]:
                    before, cpu = _gc(gc_files[target]), _cpu_s(pids[target])
                    spy = None
                    if args.spy and rnd == args.rounds - 1 and name == "apiframe submit":
                        with ThreadPoolExecutor(1) as pool:
                            running = pool.submit(run_wrk, wrk, urls[target],
                                                  wrk_scripts[target][name], args.connections,
                                                  args.duration)
                            time.sleep(1.0)
                            spy = record(pids[target], args.duration - 1.5,
                                       tmp / f"spy-{target.replace(' ', '_')}.txt")
                            spy.wait(timeout=args.duration + 30)
                            res = running.result()
                    else:
                        res = run_wrk(wrk, urls[target], wrk_scripts[target][name],
                                      args.connections, args.duration)
                    cpu = _cpu_s(pids[target]) - cpu
                    gc_text = _gc_delta(before, _gc(gc_files[target]))
                    rows[name, target].append((res.rps, res.p99_ms, res.errors + res.non2xx,
                                               cpu / max(1, res.requests) * 1e6, gc_text))
                    print(f"round {rnd + 1} {name:16} {target:7} {res.rps:9,.0f} req/s  "
                          f"p99 {res.p99_ms:7.1f} ms  errors {res.errors} non-2xx "
                          f"{res.non2xx}  CPU {cpu / max(1, res.requests) * 1e6:6.1f} "
                          f"us/req  GC: {gc_text}", flush=True)
    print(f"\n{args.rounds} rounds x {args.duration:.0f} s, {args.connections} connections, "
          f"cap {args.max_jobs:,}; median [min-max]")
    for name in names:
        below = [r[0] for r in rows[name, "below"]]
        cap = [r[0] for r in rows[name, "at cap"]]
        ratios = [c / b for c, b in zip(cap, below, strict=True) if b]
        for target, got in (("below", below), ("at cap", cap)):
            cpus = [r[3] for r in rows[name, target]]
            p99s = [r[1] for r in rows[name, target]]
            errors = sum(r[2] for r in rows[name, target])
            print(f"{name:16} {target:7} {statistics.median(got):9,.0f} req/s "
                  f"[{min(got):,.0f}-{max(got):,.0f}]  p99 {statistics.median(p99s):6.1f} ms  "
                  f"CPU {statistics.median(cpus):6.1f} us/req  errors+non-2xx {errors}")
        print(f"{name:16} at cap / below {statistics.median(ratios):.2f} "
              f"[{min(ratios):.2f}-{max(ratios):.2f}]")
    if args.spy:
        below_f = _functions(tmp / "spy-below.txt")
        cap_f = _functions(tmp / "spy-at_cap.txt")
        print("\nsubmit, py-spy inclusive shares, largest differences (at cap - below):")
        diff = sorted(set(below_f) | set(cap_f), key=lambda k: -abs(cap_f[k] - below_f[k]))
        for name in diff[:15]:
            print(f"  {cap_f[name]:5.1f}% vs {below_f[name]:5.1f}%  {name}")
    print(f"\nfiles: {tmp}")


if __name__ == "__main__":
    main()
