"""Per-task cost of image work through Redis to an ``rmbg-emulator worker`` (RQ), against the
in-server process pool (``--matte-pool processes``), in one run.

Not a test: prints figures.

    python benchmarks/queue_worker.py [--rounds 5] [--tasks 40] [--size 64]

Needs ``redis-server`` on PATH (started on a free port in a temporary folder). Each round
runs ``--tasks`` background removals of one ``--size`` x ``--size`` PNG (grabcut engine),
one at a time, through each pool in turn (order alternating): the process pool with one
worker process, and :class:`emulator.core.jobs.queue.QueueDispatch` with one ``rmbg-emulator
worker`` process. Both are warm (the first task of each is not counted). Prints the median
milliseconds per task of each round, then median [min-max] over rounds and the ratio
queue / processes (the queue's cost: the pickle through Redis, RQ's bookkeeping, the result
stream).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emulator.core.jobs.pool import EngineSpec, MattePool  # noqa: E402
from emulator.core.jobs.queue import QueueDispatch  # noqa: E402
from emulator.core.tasks import TaskContext  # noqa: E402
from emulator.testing.server import free_port  # noqa: E402

SPEC = EngineSpec("grabcut", None, None, 0)
CTX = TaskContext(engine=None, max_pixels=50_000_000, compress_level=1)  # type: ignore[arg-type]


def _png(size: int) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", (size, size), (30, 120, 200))
    image.paste((220, 40, 40), (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    image.save(out, "PNG")
    return out.getvalue()


def _per_task_ms(render: Callable[[], object], tasks: int) -> float:
    render()  # warm
    times = []
    for _ in range(tasks):
        start = time.perf_counter()
        render()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    payload = [_png(args.size)]
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                   "--dir", folder, "--save", ""],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        worker = None
        pool = MattePool("processes", 1, 0, SPEC)
        try:
            time.sleep(0.5)
            redis.Redis.from_url(url).ping()
            worker = subprocess.Popen(
                [sys.executable, "-m", "emulator.cli", "worker", "--store", url],
                stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
            queue = QueueDispatch(url, SPEC, 60)
            pool.start()
            runs: dict[str, Callable[[], object]] = {
                "processes": lambda: pool.render("remove", {}, payload, CTX),
                "queue": lambda: queue.render("remove", {}, payload, CTX),
            }
            results: dict[str, list[float]] = {name: [] for name in runs}
            for round_ in range(args.rounds):
                order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
                for name in order:
                    results[name].append(_per_task_ms(runs[name], args.tasks))
                print(f"round {round_ + 1}: " + "  ".join(
                    f"{name} {results[name][-1]:.2f} ms" for name in runs), flush=True)
            ratios = [q / p for q, p in zip(results["queue"], results["processes"],
                                             strict=True)]
            print(f"\n{args.tasks} tasks a round, {args.size}x{args.size} PNG, grabcut; "
                  "ms per task, median [min-max] over rounds")
            for name, values in results.items():
                print(f"  {name:10} {statistics.median(values):7.2f} "
                      f"[{min(values):.2f}-{max(values):.2f}]")
            print(f"  queue / processes: {statistics.median(ratios):.2f} "
                  f"[{min(ratios):.2f}-{max(ratios):.2f}]")
            queue.close()
        finally:
            pool.close()
            if worker is not None:
                worker.terminate()
                worker.wait(timeout=30)
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
