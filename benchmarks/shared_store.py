"""Mix throughput (submit, poll, download) on Redis with 1, 2 and 4 server processes,
against one process on the memory store, driven by wrk (a C load generator: the figures
measure the servers, not the generator).

Not a test: prints figures. Usage:

    python benchmarks/shared_store.py [--seconds 5] [--rounds 3] [--conns 16 64]
                                      [--workers 1 2 4]

Needs ``redis-server`` and ``wrk`` on PATH (wrk is installed from Debian when missing): Redis
is started on a free port in a temporary folder and stopped at the end. Each configuration
(``memory`` with ``--workers 1``; ``redis://`` with each ``--workers N``) is a real
``rmbg-emulator serve`` (grabcut engine, ``--progression immediate``) on 127.0.0.1, started
fresh in every round on an emptied Redis; the configurations run in round-robin rounds. wrk
(one thread, ``C`` connections, ``--seconds``) cycles through the Pixazo mix of
``benchmarks/http_load.py``: a submit of one small inline image (its output comes from the
result cache), a status read and a download of a finished job made before the run. Prints
mixes per second (requests per second / 3), median [min-max] over rounds, and the ratio to
memory with one worker (above 1: faster); and the answers that were not 2xx/3xx (must be 0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import (  # the benchmarks folder is not a package: on sys.path above
    WrkResult,
    emulator_cmd,
    ensure_wrk,
    free_port,
    prepare,
    redis_server,
    run_wrk,
    scripts,
    serve,
)

#: Requests per mix (submit, status read, download).
MIX = 3


def _flags(store: str, workers: int) -> list[str]:
    return ["--engine", "grabcut", "--progression", "immediate", "--store", store,
            "--workers", str(workers)]


def main() -> None:
    """Run the rounds and print the table (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    wrk = ensure_wrk()
    with redis_server() as url:
        admin = redis.Redis.from_url(url)
        configs = [("memory", "memory", 1)] + [(f"redis w{n}", url, n) for n in args.workers]
        results: dict[tuple[str, int], list[WrkResult]] = {}
        try:
            for round_no in range(args.rounds):
                for name, store, workers in configs:
                    admin.flushdb()
                    port = free_port()
                    base = f"http://127.0.0.1:{port}"
                    with serve(emulator_cmd(port, *_flags(store, workers)), port):
                        time.sleep(0.5 * workers)  # every worker up
                        with tempfile.TemporaryDirectory() as tmp:
                            script = scripts(Path(tmp), prepare(base))["pixazo mix"]
                            for conns in args.conns:
                                res = run_wrk(wrk, base, script, conns, args.seconds)
                                results.setdefault((name, conns), []).append(res)
                                print(f"round {round_no + 1} {name:>9} c={conns:<3} "
                                      f"{res.rps / MIX:8.1f} mixes/s  non-2xx/errors "
                                      f"{res.non2xx + res.errors}", flush=True)
        finally:
            admin.close()
    print(f"\nmixes/s (submit + poll + download; wrk -t1), median [min-max] of {args.rounds} "
          "rounds; ratio to memory w1 (median of the per-round ratios)")
    for conns in args.conns:
        reference = results[("memory", conns)]
        for name, _, _ in configs:
            values = [r.rps / MIX for r in results[(name, conns)]]
            ratios = [r.rps / m.rps for r, m in zip(results[(name, conns)], reference,
                                                    strict=True) if m.rps]
            bad = sum(r.non2xx + r.errors for r in results[(name, conns)])
            print(f"  c={conns:<3} {name:>9}: {statistics.median(values):8.1f} "
                  f"[{min(values):.1f}-{max(values):.1f}]  x{statistics.median(ratios):.2f} "
                  f"[{min(ratios):.2f}-{max(ratios):.2f}]  non-2xx/errors {bad}")


if __name__ == "__main__":
    main()
