"""Status-poll latency while images are matted: the matte pool's threads against its processes.

Not a test: prints figures (the machine is shared and noisy: compare the ratios of one run).

    python benchmarks/poll_under_load.py [--rounds 3] [--duration 5] [--jobs 20]
        [--models-dir DIR]

Each round, for ``--matte-pool threads`` and ``--matte-pool processes`` (their order
alternating between rounds), it starts ``rmbg-emulator serve`` (u2netp when its weights are
found, the result cache off so every job is real work, ``--progression time``), warms the
matte workers with one job each, measures Pixazo status polls with wrk at 16 connections
while idle, then submits ``--jobs`` 4-megapixel photographs (a sample resized to 2048x2048)
and measures the polls again while they are matted. Per pool it prints each round's poll p99
busy/idle and requests/s busy/idle, then the median [min-max] over rounds. wrk comes from
Debian (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from http_load import (  # noqa: E402
    KEY,
    NO_CACHE,
    WrkResult,
    emulator_cmd,
    ensure_wrk,
    free_port,
    prepare,
    run_wrk,
    scripts,
    serve,
)

SUBMIT = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"
HEADERS = {"Ocp-Apim-Subscription-Key": KEY}
POOLS = ("threads", "processes")


def photo_uri(side: int = 2048) -> str:
    """A sample photograph resized to ``side`` x ``side`` (4.2 MP at 2048) as a JPEG data URI."""
    from PIL import Image

    from emulator.samples import load_rgb

    buf = io.BytesIO()
    Image.fromarray(load_rgb("astronaut")).resize((side, side), Image.Resampling.BICUBIC).save(
        buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def wait_done(c: httpx.Client, ids: list[str], timeout_s: float = 300.0) -> None:
    """Wait until the jobs ``ids`` have finished their work."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = c.get("/_emulator/jobs").json()["jobs"]
        if all(j["work"] == "done" for j in jobs if j["id"] in ids):
            return
        time.sleep(0.2)
    raise SystemExit("warm-up jobs did not finish")


def one_round(wrk: str, pool: str, photo: str, jobs: int, duration: float,
              env: dict[str, str]) -> tuple[WrkResult, WrkResult, str, int]:
    """Idle and busy poll runs on a fresh emulator with ``--matte-pool pool``."""
    port = free_port()
    cmd = emulator_cmd(port, "--engine", "auto", "--progression", "time",
                       "--matte-pool", pool, "--matte-workers", "2")
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp, serve(cmd, port, env), \
            httpx.Client(base_url=base, timeout=120) as c:
        engine = c.get("/_emulator/health").json()["engine"]
        script = scripts(Path(tmp), prepare(base))["pixazo poll"]
        # one job per worker: processes are started and the model loaded before measuring
        warm = [c.post(SUBMIT, json={"image_url": photo}, headers=HEADERS).json()["request_id"]
                for _ in range(2)]
        wait_done(c, warm)
        idle = run_wrk(wrk, base, script, 16, duration)
        ids = [c.post(SUBMIT, json={"image_url": photo}, headers=HEADERS).json()["request_id"]
               for _ in range(jobs)]
        busy = run_wrk(wrk, base, script, 16, duration, wait=False)
        unfinished = sum(1 for j in c.get("/_emulator/jobs").json()["jobs"]
                         if j["id"] in ids and j["work"] != "done")
    return idle, busy, engine, unfinished


def summary(values: list[float]) -> str:
    """``median [min-max]``."""
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    """Round-robin rounds of both pools; prints per-round rows and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--models-dir", default=None)
    args = parser.parse_args()
    wrk = ensure_wrk()
    env = {**NO_CACHE, **({"RMBG_EMULATOR_MODELS": args.models_dir} if args.models_dir else {})}
    photo = photo_uri()
    p99: dict[str, list[float]] = {p: [] for p in POOLS}
    rps: dict[str, list[float]] = {p: [] for p in POOLS}
    busy_p99: dict[str, list[float]] = {p: [] for p in POOLS}
    print(f"poll p99 and req/s, busy ({args.jobs} jobs of 4.2 MP) / idle, 16 connections, "
          f"{args.duration:g} s per run")
    for r in range(args.rounds):
        for pool in (POOLS if r % 2 == 0 else POOLS[::-1]):
            idle, busy, engine, unfinished = one_round(wrk, pool, photo, args.jobs,
                                                       args.duration, env)
            p99[pool].append(busy.p99_ms / idle.p99_ms)
            rps[pool].append(busy.rps / idle.rps)
            busy_p99[pool].append(busy.p99_ms)
            print(f"round {r + 1} {pool:<9} engine {engine}: idle p99 {idle.p99_ms:6.2f} ms "
                  f"{idle.rps:7.0f} req/s; busy p99 {busy.p99_ms:6.2f} ms {busy.rps:7.0f} "
                  f"req/s; p99 x{p99[pool][-1]:.2f}, req/s x{rps[pool][-1]:.2f}; "
                  f"{unfinished}/{args.jobs} jobs still processing at the end", flush=True)
    print("\npool       p99 busy/idle        req/s busy/idle")
    for pool in POOLS:
        print(f"{pool:<10} {summary(p99[pool]):<20} {summary(rps[pool])}")
    ratio = [t / p for t, p in zip(p99["threads"], p99["processes"], strict=True)]
    print(f"threads' p99 ratio / processes' p99 ratio: {summary(ratio)} (target: processes' "
          "p99 ratio <= 2)")
    # Adjacent runs of one round: less exposed to a noisy idle run than the ratios above.
    paired = [t / p for t, p in zip(busy_p99["threads"], busy_p99["processes"], strict=True)]
    print(f"busy p99 ms: threads {summary(busy_p99['threads'])}, processes "
          f"{summary(busy_p99['processes'])}; threads / processes per round {summary(paired)}")


if __name__ == "__main__":
    main()
