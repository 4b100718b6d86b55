"""Mix throughput (submit, poll, download) on Redis with 1, 2 and 4 server processes,
against one process on the memory store.

Not a test: prints figures. Usage:

    python benchmarks/shared_store.py [--seconds 3] [--rounds 3] [--conns 16 64]
                                      [--workers 1 2 4]

Needs ``redis-server`` on PATH: it is started on a free port in a temporary folder and
stopped at the end. Each configuration (``memory`` with ``--workers 1``; ``redis://`` with
each ``--workers N``) is a real ``rmbg-emulator serve`` (grabcut engine, ``--progression
immediate``) on 127.0.0.1, started fresh in every round; the configurations run in
round-robin rounds. A load generator (one asyncio process, httpx, ``C`` connections) runs
mixes for ``--seconds``: a Pixazo submit of one small inline image (after the first, its
output comes from the result cache), one status read, one download of the result. Prints
mixes per second, median and range over rounds, and the ratio to memory with one worker
(above 1: faster). The generator shares the machine's cores with the servers: on a small
machine it caps what more workers can show.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
SUBMIT = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"
HEADERS = {"Ocp-Apim-Subscription-Key": "bench-key"}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _image() -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 30, 30)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def _serve(port: int, store: str, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "serve", "--port", str(port), "--engine",
         "grabcut", "--progression", "immediate", "--store", store, "--workers",
         str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=2)
            time.sleep(0.5 * workers)  # every worker up
            return proc
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("serve did not start") from None
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _load(port: int, conns: int, seconds: float, image: str) -> float:
    """Mixes per second over ``seconds`` with ``conns`` connections."""
    done = 0
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                 timeout=30) as client:
        body = {"image_url": image}

        async def one() -> None:
            submitted = await client.post(SUBMIT, json=body, headers=HEADERS)
            assert submitted.status_code == 202, submitted.text
            status_url = submitted.json()["polling_url"]
            polled = (await client.get(status_url, headers=HEADERS)).json()
            assert polled["status"] == "COMPLETED", polled
            url = polled["output"]["media_url"][0]
            got = await client.get(url)
            assert got.status_code == 200

        await one()  # the result cache is warm
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                await one()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conns)))
        return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    image = _image()
    with tempfile.TemporaryDirectory() as folder:
        redis_port = _free_port()
        redis = subprocess.Popen([binary, "--port", str(redis_port), "--dir", folder,
                                  "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        url = f"redis://127.0.0.1:{redis_port}/0"
        configs = [("memory", "memory", 1)] + [(f"redis w{n}", url, n) for n in args.workers]
        results: dict[tuple[str, int], list[float]] = {}
        try:
            for round_no in range(args.rounds):
                for name, store, workers in configs:
                    port = _free_port()
                    proc = _serve(port, store, workers)
                    try:
                        for conns in args.conns:
                            rate = asyncio.run(_load(port, conns, args.seconds, image))
                            results.setdefault((name, conns), []).append(rate)
                            print(f"round {round_no + 1} {name:>9} c={conns:<3} "
                                  f"{rate:8.1f} mixes/s", flush=True)
                    finally:
                        _stop(proc)
        finally:
            redis.terminate()
            redis.wait()
    print(f"\nmixes/s (submit + poll + download), median [min-max] of {args.rounds} rounds; "
          "ratio to memory w1")
    for conns in args.conns:
        reference = statistics.median(results[("memory", conns)])
        for name, _, _ in configs:
            values = results[(name, conns)]
            med = statistics.median(values)
            print(f"  c={conns:<3} {name:>9}: {med:8.1f} [{min(values):.1f}-{max(values):.1f}]"
                  f"  x{med / reference:.2f}")


if __name__ == "__main__":
    main()
