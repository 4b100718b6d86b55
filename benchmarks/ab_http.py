"""Two checkouts of the emulator side by side over HTTP: both servers up, wrk runs paired.

Not a test: prints figures. Usage:

    git worktree add --detach /tmp/before <commit>
    python benchmarks/ab_http.py --before /tmp/before [--after .] [--rounds 8] [--duration 5]

Starts ``rmbg-emulator serve`` from each checkout (``PYTHONPATH`` set to it; GrabCut,
``immediate`` progression, as ``http_load.py``'s ``http`` phase), then, round after round,
runs every (path, connections) cell on one and then the other (the order flips each round),
with fresh jobs to poll and download each run. Both run at the same time of the machine's
life, so a round's ratio is a fair pair even when the shared machine's speed drifts. Prints
req/s medians, after / before per round (median [range]) and p99 medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from http_load import (  # benchmarks/http_load.py (this script's directory is on sys.path)
    emulator_cmd,
    ensure_wrk,
    free_port,
    prepare,
    run_wrk,
    scripts,
    serve,
)

#: The cells compared: the paths of ``http_load.scripts``, at 16 and 64 connections.
PATHS = ("pixazo mix", "fal mix", "pixazo poll", "fal poll", "pixazo submit", "fal submit")
CONNECTIONS = (16, 64)
FLAGS = ("--engine", "grabcut", "--progression", "immediate")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    """Parse the arguments, run the rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the checkout to compare against")
    parser.add_argument("--after", default=".", help="the checkout measured (default: .)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    args = parser.parse_args()
    wrk = ensure_wrk()
    trees = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    ports = {name: free_port() for name in trees}
    rps: dict[tuple[str, int, str], list[float]] = {}
    p99: dict[tuple[str, int, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, \
            serve(emulator_cmd(ports["before"], *FLAGS), ports["before"],
                  {"PYTHONPATH": trees["before"]}), \
            serve(emulator_cmd(ports["after"], *FLAGS), ports["after"],
                  {"PYTHONPATH": trees["after"]}):
        for r in range(args.rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for path in PATHS:
                for conns in CONNECTIONS:
                    for name in order:
                        url = f"http://127.0.0.1:{ports[name]}"
                        folder = Path(tmp) / f"{name}-{r}-{path.replace(' ', '-')}-{conns}"
                        folder.mkdir()
                        result = run_wrk(wrk, url, scripts(folder, prepare(url))[path], conns,
                                         args.duration)
                        if result.non2xx or result.errors:
                            print(f"WARNING: {name} {path} {conns}: {result.non2xx} non-2xx, "
                                  f"{result.errors} socket errors")
                        rps.setdefault((path, conns, name), []).append(result.rps)
                        p99.setdefault((path, conns, name), []).append(result.p99_ms)
            print(f"round {r + 1} of {args.rounds} done", flush=True)
    print(f"\nbefore: {trees['before']}\nafter:  {trees['after']}\n")
    print("| path | conns | before req/s | after req/s | after / before, paired "
          "| p99 ms before / after |")
    print("|---|---|---|---|---|---|")
    for path in PATHS:
        for conns in CONNECTIONS:
            before, after = rps[(path, conns, "before")], rps[(path, conns, "after")]
            paired = [a / b if b else 0.0 for b, a in zip(before, after, strict=True)]
            print(f"| {path} | {conns} | {statistics.median(before):,.0f} | "
                  f"{statistics.median(after):,.0f} | {_spread(paired)} | "
                  f"{statistics.median(p99[(path, conns, 'before')]):.1f} / "
                  f"{statistics.median(p99[(path, conns, 'after')]):.1f} |")


if __name__ == "__main__":
    main()
