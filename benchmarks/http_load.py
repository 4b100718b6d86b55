"""HTTP speed of the emulator, side by side with the ceiling of its stack, in ONE run.

Not a test: prints figures (the machine is shared and noisy: compare the ratios of one run).

    bash benchmarks/http.sh [--duration 20] [--connections 1,16,64]
        [--phases http,busy,e2e,memory] [--models-dir DIR] [--memory-jobs 100000]
        [--memory-cap 100000]

Phases:

* ``http``: wrk against (a) the emulator as users run it (journal and fault middleware on, no
  rule matching, result cache on; engine grabcut and an 8x8 input so image work stays out of
  the figures) and (b) ``benchmarks/bare_app.py`` (bare Starlette + uvicorn, static JSON, same
  uvicorn settings), on Pixazo and fal-queue submit, status poll and a mix (submit, poll,
  download). Prints requests/s, p50, p99 and the ratio a/b; then the two submits again with
  the result cache off (each one mattes and encodes); then the targets, met or missed.
* ``busy``: status-poll p99 while 20 jobs are processing with u2netp on 4-megapixel photographs,
  against its idle value (the event loop must not be blocked by image work); result cache off.
* ``e2e``: submit-to-downloadable time for a 1-megapixel photograph (``--progression
  immediate``, u2netp, result cache off) against the matte step alone.
* ``memory``: RSS of the emulator while 100,000 finished jobs fill its store (capped at
  100,000, the default) and 50,000 more evict the oldest; journal and ledger capped.

wrk comes from Debian (``apt-get install wrk``); the script installs it when missing.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image

HERE = Path(__file__).resolve().parent
KEY = "bench-key"
#: Every emulator started here: a balance no run exhausts (the default $1000 pays for 55,555
#: jobs, then submits answer 402).
BASE_ENV = {"RMBG_EMULATOR_DEFAULT_BALANCE_USD": "1e9"}
#: For phases that measure the image work itself: no result cache (a repeated photograph
#: would otherwise be matted once).
NO_CACHE = {"RMBG_EMULATOR_RESULT_CACHE_BYTES": "0"}


def tiny_png_uri() -> str:
    """An 8x8 PNG as a data URI (its image work costs well under a millisecond)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_wrk() -> str:
    """Path of wrk, installing Debian's package if needed.

    Raises:
        SystemExit: wrk cannot be had.
    """
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (apt-get update; apt-get install -y wrk) ...", flush=True)
    subprocess.run(["apt-get", "update", "-q"], check=False, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False,
                   stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed and could not be installed")
    return found


@contextmanager
def redis_server() -> Iterator[str]:
    """A ``redis-server`` on a free port in a temporary folder, no persistence, until the
    block ends; yields its ``redis://127.0.0.1:PORT/0`` URL.

    Raises:
        SystemExit: ``redis-server`` is not installed, or does not answer within 10 s.
    """
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        server = subprocess.Popen([binary, "--port", str(port), "--dir", folder, "--save", "",
                                   "--appendonly", "no"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise SystemExit("redis-server did not start") from None
                    time.sleep(0.05)
            client.close()
            yield url
        finally:
            server.terminate()
            server.wait()


@contextmanager
def serve(cmd: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run a server command until its ``/_emulator/health`` or ``/`` answers; yield its PID."""
    proc = subprocess.Popen(cmd, env={**os.environ, **BASE_ENV, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise SystemExit(f"server did not start: {' '.join(cmd)}\n{err}") from None
                time.sleep(0.1)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def emulator_cmd(port: int, *extra: str) -> list[str]:
    """``rmbg-emulator serve`` on ``port`` with ``extra`` flags."""
    return [sys.executable, "-m", "emulator.cli", "serve", "--port", str(port), *extra]


@dataclass
class WrkResult:
    """One wrk run: requests/s, p50 and p99 in milliseconds, requests sent, non-2xx/3xx
    answers, socket errors."""

    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    errors: int
    requests: int = 0

    @property
    def ok(self) -> int:
        """Requests answered 2xx/3xx."""
        return max(0, self.requests - self.non2xx - self.errors)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNITS[m.group(2)]


def drain(url: str, timeout_s: float = 120.0) -> None:
    """Wait until the emulator's background work (jobs from a previous run) has ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{url}/_emulator/health", timeout=10).json()
        except (httpx.HTTPError, ValueError):
            return  # the bare app has no health endpoint and no background work
        if not health.get("busy"):
            return
        time.sleep(0.2)


def run_wrk(wrk: str, url: str, script: Path, connections: int, duration: float,
            *, wait: bool = True) -> WrkResult:
    """Run wrk with one thread (2-core machine) and parse its report (after :func:`drain`
    unless ``wait`` is false)."""
    if wait:
        drain(url)
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=False).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return WrkResult(
        rps=float(rps.group(1)) if rps else 0.0,
        p50_ms=_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_ms(p99.group(1)) if p99 else float("nan"),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        errors=sum(int(x) for x in errors.groups()) if errors else 0,
        requests=int(total.group(1)) if total else 0,
    )


def lua_script(directory: Path, name: str, requests: list[tuple[str, str, dict[str, str], str]]
               ) -> Path:
    """A wrk script cycling through ``(method, path, headers, body)`` requests."""

    def lua_str(text: str) -> str:
        return "[==[" + text + "]==]"

    lines = ["local reqs = {}", "init = function(args)"]
    for i, (method, path, headers, body) in enumerate(requests, start=1):
        hdrs = ", ".join(f"[ {lua_str(k)} ] = {lua_str(v)}" for k, v in headers.items())
        body_arg = lua_str(body) if body else "nil"
        lines.append(f"  reqs[{i}] = wrk.format({lua_str(method)}, {lua_str(path)}, "
                     f"{{{hdrs}}}, {body_arg})")
    lines += ["end", "local i = 0",
              f"request = function() i = i % {len(requests)} + 1; return reqs[i] end"]
    script = directory / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def prepare(base: str) -> dict[str, str]:
    """Submit one job per vendor and wait for it: paths of a finished status and a file."""
    image = tiny_png_uri()
    with httpx.Client(base_url=base, timeout=60) as c:
        r = c.post("/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request", json={"image_url": image},
                   headers={"Ocp-Apim-Subscription-Key": KEY})
        rid = r.json()["request_id"]
        status = c.get(f"/v2/requests/status/{rid}",
                       headers={"Ocp-Apim-Subscription-Key": KEY}).json()
        media = httpx.URL(status["output"]["media_url"][0]).path if status.get("output") \
            else "/_emulator/files/pixazo/x.png"
        r = c.post("/queue/fal-ai/bria/background/remove", json={"image_url": image},
                   headers={"Authorization": f"Key {KEY}"})
        fid = r.json().get("request_id", "static")
        c.get(f"/queue/fal-ai/bria/requests/{fid}/status",
              headers={"Authorization": f"Key {KEY}"})
    return {"pixazo_status": f"/v2/requests/status/{rid}", "pixazo_file": media,
            "fal_status": f"/queue/fal-ai/bria/requests/{fid}/status"}


def scripts(directory: Path, paths: dict[str, str]) -> dict[str, Path]:
    """wrk scripts per benchmarked path."""
    body = '{"image_url": "' + tiny_png_uri() + '"}'
    pix = {"Ocp-Apim-Subscription-Key": KEY, "Content-Type": "application/json"}
    fal = {"Authorization": f"Key {KEY}", "Content-Type": "application/json"}
    pix_submit = ("POST", "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request", pix, body)
    pix_poll = ("GET", paths["pixazo_status"], pix, "")
    fal_submit = ("POST", "/queue/fal-ai/bria/background/remove", fal, body)
    fal_poll = ("GET", paths["fal_status"], fal, "")
    download: tuple[str, str, dict[str, str], str] = ("GET", paths["pixazo_file"], {}, "")
    return {
        "pixazo submit": lua_script(directory, "pix_submit", [pix_submit]),
        "pixazo poll": lua_script(directory, "pix_poll", [pix_poll]),
        "pixazo mix": lua_script(directory, "pix_mix", [pix_submit, pix_poll, download]),
        "fal submit": lua_script(directory, "fal_submit", [fal_submit]),
        "fal poll": lua_script(directory, "fal_poll", [fal_poll]),
        "fal mix": lua_script(directory, "fal_mix", [fal_submit, fal_poll, download]),
    }


def _row(name: str, conns: int, a: WrkResult, b: WrkResult) -> str:
    return (f"{name:15} {conns:5d} {a.rps:9.0f} {b.rps:9.0f} "
            f"{a.rps / b.rps if b.rps else float('nan'):5.2f} {a.p50_ms:7.2f} "
            f"{b.p50_ms:7.2f} {a.p99_ms:7.2f} {b.p99_ms:7.2f} "
            f"{a.p99_ms / b.p99_ms if b.p99_ms else float('nan'):7.2f} "
            f"{a.non2xx + a.errors:8d}")


def phase_http(wrk: str, duration: float, connections: list[int]) -> None:
    """Emulator vs bare Starlette on every path and connection count, one run; then the
    submits again with the result cache off; then the targets."""
    emu_port, bare_port, cold_port = free_port(), free_port(), free_port()
    print(f"\n== HTTP: emulator (a) vs bare Starlette (b), wrk -t1, {duration:g} s each")
    print(f"{'path':15} {'conns':>5} {'a req/s':>9} {'b req/s':>9} {'a/b':>5} "
          f"{'a p50':>7} {'b p50':>7} {'a p99':>7} {'b p99':>7} {'p99 a/b':>7} {'a non2xx':>8}")
    flags = ("--engine", "grabcut", "--progression", "immediate")
    found: dict[tuple[str, int], tuple[WrkResult, WrkResult]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        (Path(tmp) / "c").mkdir()
        bare_scripts = scripts(Path(tmp) / "b", {
            "pixazo_status": "/v2/requests/status/x", "pixazo_file": "/_emulator/files/p/x.png",
            "fal_status": "/queue/fal-ai/bria/requests/x/status"})
        bare_url = f"http://127.0.0.1:{bare_port}"
        with serve([sys.executable, str(HERE / "bare_app.py"), str(bare_port)], bare_port):
            with serve(emulator_cmd(emu_port, *flags), emu_port):
                emu_url = f"http://127.0.0.1:{emu_port}"
                names = list(scripts(Path(tmp) / "a", prepare(emu_url)))
                for name in names:
                    for conns in connections:
                        # Fresh jobs to poll and download each run: the submits of earlier
                        # runs have evicted the oldest jobs past max_jobs (100,000).
                        script = scripts(Path(tmp) / "a", prepare(emu_url))[name]
                        a = run_wrk(wrk, emu_url, script, conns, duration)
                        b = run_wrk(wrk, bare_url, bare_scripts[name], conns, duration)
                        found[(name, conns)] = (a, b)
                        print(_row(name, conns, a, b), flush=True)
            # Every submit of the same 8x8 input hits the result cache above; here each one
            # mattes it (GrabCut) and encodes a PNG in the worker pool.
            with serve(emulator_cmd(cold_port, *flags), cold_port, NO_CACHE):
                cold = scripts(Path(tmp) / "c", prepare(f"http://127.0.0.1:{cold_port}"))
                for name in ("pixazo submit", "fal submit"):
                    a = run_wrk(wrk, f"http://127.0.0.1:{cold_port}", cold[name], 16, duration)
                    b = run_wrk(wrk, bare_url, bare_scripts[name], 16, duration)
                    print(_row(name + "*", 16, a, b), flush=True)
    print("* result cache off (RMBG_EMULATOR_RESULT_CACHE_BYTES=0): each submit does its image "
          "work")
    print("\n== HTTP targets (worst over connection counts)")
    failed = sum(a.non2xx + a.errors for a, _ in found.values())
    if failed:
        print(f"WARNING: {failed} emulator answers were not 2xx/3xx: the figures are not valid")
    for vendor in ("pixazo", "fal"):
        for path, target in (("poll", 0.7), ("submit", 0.4)):
            runs = [found[(f"{vendor} {path}", c)] for c in connections]
            ratio = min(a.rps / b.rps if b.rps else 0.0 for a, b in runs)
            print(f"{vendor} {path:6} req/s a/b >= {target}: {ratio:.2f} "
                  f"{'met' if ratio >= target else 'MISSED'}")
        runs = [found[(f"{vendor} poll", c)] for c in connections]
        worst = max(a.p99_ms / b.p99_ms if b.p99_ms else float("inf") for a, b in runs)
        print(f"{vendor} poll   p99 a/b <= 2: {worst:.2f} {'met' if worst <= 2 else 'MISSED'}")


def _big_photo_uri(scale: float) -> str:
    from emulator.testing.composites import make

    return "data:image/jpeg;base64," + base64.b64encode(make("grass", scale=scale).jpeg(90)
                                                        ).decode()


def phase_busy(wrk: str, duration: float, models_dir: str | None) -> None:
    """Poll p99 idle vs with 20 jobs processing (u2netp, 4-megapixel photographs)."""
    port = free_port()
    env = {**NO_CACHE, **({"RMBG_EMULATOR_MODELS": models_dir} if models_dir else {})}
    cmd = emulator_cmd(port, "--engine", "auto", "--progression", "time")
    base = f"http://127.0.0.1:{port}"
    print("\n== Status polls while the matte pool is busy (16 connections)")
    with tempfile.TemporaryDirectory() as tmp, serve(cmd, port, env):
        engine = httpx.get(f"{base}/_emulator/health").json()["engine"]
        paths = prepare(base)
        script = scripts(Path(tmp), paths)["pixazo poll"]
        idle = run_wrk(wrk, base, script, 16, duration)
        photo = _big_photo_uri(4.0)
        with httpx.Client(base_url=base, timeout=60) as c:
            ids = [c.post("/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request",
                          json={"image_url": photo},
                          headers={"Ocp-Apim-Subscription-Key": KEY}).json()["request_id"]
                   for _ in range(20)]
            busy = run_wrk(wrk, base, script, 16, duration, wait=False)
            unfinished = sum(1 for j in c.get("/_emulator/jobs").json()["jobs"]
                             if j["id"] in ids and j["work"] != "done")
    print(f"engine {engine}; jobs still processing when the busy run ended: {unfinished}/20")
    print(f"idle: {idle.rps:8.0f} req/s  p50 {idle.p50_ms:6.2f} ms  p99 {idle.p99_ms:6.2f} ms")
    print(f"busy: {busy.rps:8.0f} req/s  p50 {busy.p50_ms:6.2f} ms  p99 {busy.p99_ms:6.2f} ms")
    print(f"p99 busy/idle: {busy.p99_ms / idle.p99_ms:.2f} (target <= 2)")


def phase_e2e(models_dir: str | None, repeat: int = 5) -> None:
    """Submit-to-downloadable of a 1-megapixel photograph vs the matte step alone."""
    from emulator.core.inputs import decode_image
    from emulator.core.tasks import TaskContext, remove_background
    from emulator.matte.engine import create_engine
    from emulator.testing.composites import make

    comp = make("grass", scale=2.0)  # 1200 x 800
    jpeg = comp.jpeg(92)
    engine = create_engine("auto", models_dir=models_dir)
    rgb = decode_image(jpeg, max_pixels=10**8)
    engine.alpha(rgb)
    alone, work = [], []
    ctx = TaskContext(engine=engine, max_pixels=10**8, compress_level=1)
    for _ in range(repeat):
        start = time.perf_counter()
        engine.alpha(rgb)
        alone.append(time.perf_counter() - start)
        start = time.perf_counter()
        remove_background([jpeg], {}, ctx)
        work.append(time.perf_counter() - start)
    port = free_port()
    env = {**NO_CACHE, **({"RMBG_EMULATOR_MODELS": models_dir} if models_dir else {})}
    uri = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    total = []
    with serve(emulator_cmd(port, "--engine", "auto", "--progression", "immediate"), port,
               env), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
        h = {"Ocp-Apim-Subscription-Key": KEY}
        for i in range(repeat + 1):
            start = time.perf_counter()
            rid = c.post("/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request",
                         json={"image_url": uri}, headers=h).json()["request_id"]
            status = c.get(f"/v2/requests/status/{rid}", headers=h).json()
            png = c.get(status["output"]["media_url"][0]).content
            if i:  # the first one warms the server's engine up
                total.append(time.perf_counter() - start)
            assert png[:4] == b"\x89PNG"
    a, m, w = statistics.median(total), statistics.median(alone), statistics.median(work)
    print(f"\n== Submit-to-downloadable, 1200x800 photograph, engine {engine.name} "
          f"(medians of {repeat})")
    print(f"matte step alone (engine.alpha):            {m * 1000:7.0f} ms")
    print(f"job's image work (decode, matte, PNG):      {w * 1000:7.0f} ms")
    print(f"submit -> poll -> PNG downloaded over HTTP: {a * 1000:7.0f} ms")
    print(f"ratio to the matte step {a / m:.2f} (target <= 1.2); to the image work {a / w:.2f}")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def phase_memory(wrk: str, jobs: int, cap: int) -> None:
    """RSS while ``jobs`` finished jobs pile up in a store capped at ``cap`` jobs (the
    default ``max_jobs``), then half as many again: past the cap the oldest are evicted and
    RSS stays put. Every submit is the same 8x8 photograph (result cache on, as users run
    it), so the figures are the bookkeeping of a job, not its image."""
    port = free_port()
    env = {"RMBG_EMULATOR_MAX_JOBS": str(cap), "RMBG_EMULATOR_JOURNAL_SIZE": "10000",
           "RMBG_EMULATOR_LEDGER_SIZE": "10000"}
    base = f"http://127.0.0.1:{port}"
    total = jobs + jobs // 2
    print(f"\n== Memory: {total} submits, store capped at {cap} jobs, journal at 10000 "
          "entries, ledger at 10000 entries per key")
    with tempfile.TemporaryDirectory() as tmp, serve(
            emulator_cmd(port, "--engine", "grabcut", "--progression", "immediate"), port,
            env) as pid:
        script = scripts(Path(tmp), prepare(base))["pixazo submit"]
        print(f"{'accepted':>10} {'kept':>8} {'journal':>8} {'RSS MiB':>8}")
        print(f"{0:10d} {0:8d} {0:8d} {_rss_mib(pid):8.1f}")
        accepted = 0
        at_cap: float | None = None
        while accepted < total:
            result = run_wrk(wrk, base, script, 16, 5)
            accepted += result.ok
            health = httpx.get(f"{base}/_emulator/health").json()
            rss = _rss_mib(pid)
            if at_cap is None and health["jobs"] >= cap:
                at_cap = rss
            print(f"{accepted:10d} {health['jobs']:8d} {health['journal']:8d} {rss:8.1f}"
                  f"{'   non-2xx: ' + str(result.non2xx) if result.non2xx else ''}", flush=True)
        account = httpx.get(f"{base}/_emulator/keys/{KEY}").json()
        end_rss = _rss_mib(pid)
    print(f"ledger of {KEY}: {len(account.get('ledger', []))} entries kept, "
          f"{account.get('ledger_dropped')} dropped")
    if at_cap is not None:
        print(f"RSS when the store reached {cap} jobs: {at_cap:.1f} MiB; after "
              f"{accepted - cap} more submits: {end_rss:.1f} MiB "
              f"({end_rss - at_cap:+.1f} MiB)")


def main() -> None:
    """Parse arguments and run the phases asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--phases", default="http,busy,e2e,memory")
    parser.add_argument("--models-dir", default=os.environ.get("RMBG_EMULATOR_MODELS"))
    parser.add_argument("--memory-jobs", type=int, default=100_000)
    parser.add_argument("--memory-cap", type=int, default=100_000,
                        help="max_jobs of the memory phase's emulator (the default's)")
    args = parser.parse_args()
    phases = args.phases.split(",")
    wrk = ensure_wrk() if set(phases) & {"http", "busy", "memory"} else ""
    if "http" in phases:
        phase_http(wrk, args.duration, [int(c) for c in args.connections.split(",")])
    if "busy" in phases:
        phase_busy(wrk, min(args.duration, 10.0), args.models_dir)
    if "e2e" in phases:
        phase_e2e(args.models_dir)
    if "memory" in phases:
        phase_memory(wrk, args.memory_jobs, args.memory_cap)


if __name__ == "__main__":
    main()
