"""The emulator side by side with its peers, in ONE run: bare Starlette (the ceiling of the
stack, ``benchmarks/bare_app.py``), WireMock 3.13 (stubs of the same routes) and Prism (mocking
the vendor's contract). Not a test: prints figures.

    bash benchmarks/peers.sh            # once: WireMock and Prism under benchmarks/.peers/
    python benchmarks/peers.py [--rounds 5] [--duration 10] [--connections 16,64]
        [--paths "apiframe poll,pixazo poll,fal poll,apiframe submit,apiframe mix"]

Every round runs every (path, connections) cell on every target in turn (wrk, one thread; the
order of targets rotates each round), so the ratios emulator / peer are paired per round; it
prints each ratio's median [min-max] over the rounds, and the median p99 of every target.
The emulator runs as users run it (journal and fault middleware on, no rule, result cache on,
engine grabcut, an 8x8 input); its key's balance is raised through the control plane
(``PUT /_emulator/keys/{key}``), the vendor-facing default is left alone. WireMock serves
each poll from a static stub and the submit from a templated stub (a fresh UUID per answer),
request journal on (its default, unbounded), emptied before each run (holding every request
of the benchmark, WireMock slows to a crawl in later rounds; bounded to 10,000 entries as the
emulator's is, it runs 20x slower). Every round polls jobs made at its start (the submits
pass the store's cap, which evicts the oldest).
Prism mocks ``contracts/apiframe.yaml`` (Apiframe rows only),
its log to /dev/null.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import (  # the benchmarks folder is not a package: on sys.path above
    KEY,
    WrkResult,
    emulator_cmd,
    ensure_wrk,
    free_port,
    lua_script,
    run_wrk,
    tiny_png_uri,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / ".peers"
PATHS = ("apiframe poll", "pixazo poll", "fal poll", "apiframe submit", "apiframe mix")
APIFRAME_BODY = {"model": "bria-bg-remove",
                 "briaBgRemoveParams": {"image": "", "content_moderation": False}}


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 90.0
              ) -> None:
    """Wait until something accepts TCP connections on ``port``.

    Raises:
        SystemExit: ``proc`` ended or ``timeout_s`` passed first.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} ended at start-up (exit {proc.returncode})")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not start in {timeout_s:g} s")


@contextmanager
def process(cmd: list[str], port: int, what: str, env: dict[str, str] | None = None
            ) -> Iterator[None]:
    """Run ``cmd`` (output to /dev/null) until it listens on ``port``; stop it after."""
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, what)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wiremock_jar() -> Path:
    """The standalone jar of the npm package (``bash benchmarks/peers.sh``).

    Raises:
        SystemExit: not installed.
    """
    found = sorted((PEERS / "node_modules" / "wiremock").rglob("wiremock-standalone-*.jar"))
    if not found:
        raise SystemExit("WireMock is not installed: bash benchmarks/peers.sh")
    return found[0]


def wiremock_root(directory: Path, bodies: dict[str, dict[str, object]]) -> Path:
    """WireMock mappings: the three polls as static stubs (the emulator's own bodies), the
    Apiframe submit as a templated stub, a result file."""
    root = directory / "wiremock"
    (root / "mappings").mkdir(parents=True)
    json_headers = {"Content-Type": "application/json"}
    stubs = [
        {"request": {"method": "GET", "urlPathPattern": "/v2/jobs/[^/]+"},
         "response": {"status": 200, "jsonBody": bodies["apiframe"], "headers": json_headers}},
        {"request": {"method": "GET", "urlPathPattern": "/v2/requests/status/[^/]+"},
         "response": {"status": 200, "jsonBody": bodies["pixazo"], "headers": json_headers}},
        {"request": {"method": "GET",
                     "urlPathPattern": "/queue/fal-ai/bria/requests/[^/]+/status"},
         "response": {"status": 200, "jsonBody": bodies["fal"], "headers": json_headers}},
        {"request": {"method": "POST", "urlPath": "/v2/images/background-remove"},
         "response": {"status": 202, "headers": json_headers,
                      "body": '{"jobId":"{{randomValue type=\'UUID\'}}","status":"QUEUED"}',
                      "transformers": ["response-template"]}},
        {"request": {"method": "GET", "urlPathPattern": "/_emulator/files/.+"},
         "response": {"status": 200, "base64Body": "iVBORw0KGgo=",
                      "headers": {"Content-Type": "image/png"}}},
    ]
    for i, stub in enumerate(stubs):
        (root / "mappings" / f"{i}.json").write_text(json.dumps(stub))
    return root


def prepare(base: str) -> tuple[dict[str, str], dict[str, dict[str, object]]]:
    """Raise the key's balance, make one finished job per vendor: the paths to poll and a
    result file, and the bodies the polls answer (for WireMock's stubs)."""
    image = tiny_png_uri()
    with httpx.Client(base_url=base, timeout=60) as c:
        c.put(f"/_emulator/keys/{KEY}", json={"balance_usd": 1e12}).raise_for_status()
        body = {**APIFRAME_BODY, "briaBgRemoveParams": {"image": image,
                                                        "content_moderation": False}}
        aid = c.post("/v2/images/background-remove", json=body,
                     headers={"X-API-Key": KEY}).json()["jobId"]
        pid = c.post("/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request", json={"image_url": image},
                     headers={"Ocp-Apim-Subscription-Key": KEY}).json()["request_id"]
        fid = c.post("/queue/fal-ai/bria/background/remove", json={"image_url": image},
                     headers={"Authorization": f"Key {KEY}"}).json()["request_id"]
        paths = {"apiframe": f"/v2/jobs/{aid}", "pixazo": f"/v2/requests/status/{pid}",
                 "fal": f"/queue/fal-ai/bria/requests/{fid}/status"}
        heads = {"apiframe": {"X-API-Key": KEY}, "pixazo": {"Ocp-Apim-Subscription-Key": KEY},
                 "fal": {"Authorization": f"Key {KEY}"}}
        bodies: dict[str, dict[str, object]] = {}
        deadline = time.monotonic() + 30
        for vendor, path in paths.items():
            while True:
                got = c.get(path, headers=heads[vendor]).json()
                if got.get("status") in ("COMPLETED", "FAILED") or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            bodies[vendor] = got
        images = bodies["apiframe"].get("result") or {}
        urls = images.get("images", []) if isinstance(images, dict) else []
        paths["file"] = httpx.URL(urls[0]).path if urls else "/_emulator/files/apiframe/x.png"
    return paths, bodies


def scripts(directory: Path, paths: dict[str, str]) -> dict[str, Path]:
    """A wrk script per benchmarked path."""
    body = json.dumps({**APIFRAME_BODY, "briaBgRemoveParams": {
        "image": tiny_png_uri(), "content_moderation": False}})
    af = {"X-API-Key": KEY, "Content-Type": "application/json"}
    submit = ("POST", "/v2/images/background-remove", af, body)
    poll = ("GET", paths["apiframe"], {"X-API-Key": KEY}, "")
    return {
        "apiframe poll": lua_script(directory, "af_poll", [poll]),
        "pixazo poll": lua_script(directory, "pix_poll", [
            ("GET", paths["pixazo"], {"Ocp-Apim-Subscription-Key": KEY}, "")]),
        "fal poll": lua_script(directory, "fal_poll", [
            ("GET", paths["fal"], {"Authorization": f"Key {KEY}"}, "")]),
        "apiframe submit": lua_script(directory, "af_submit", [submit]),
        "apiframe mix": lua_script(directory, "af_mix", [submit, poll,
                                                         ("GET", paths["file"], {}, "")]),
    }


def summary(values: list[float]) -> str:
    """``median [min-max]``."""
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    """Run the rounds and print the table (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--peers", default="bare,wiremock,prism")
    args = parser.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    names = [p.strip() for p in args.paths.split(",") if p.strip()]
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    wrk = ensure_wrk()
    ports = {t: free_port() for t in ("emulator", "bare", "wiremock", "prism")}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(process(emulator_cmd(ports["emulator"], "--engine", "grabcut"),
                                    ports["emulator"], "emulator"))
        paths, bodies = prepare(f"http://127.0.0.1:{ports['emulator']}")
        if "bare" in peers:
            stack.enter_context(process([sys.executable, str(HERE / "bare_app.py"),
                                         str(ports["bare"])], ports["bare"], "bare app"))
        if "wiremock" in peers:
            root = wiremock_root(tmp, bodies)
            java = shutil.which("java") or "java"
            stack.enter_context(process(
                [java, "-jar", str(wiremock_jar()), "--port", str(ports["wiremock"]),
                 "--bind-address", "127.0.0.1", "--root-dir", str(root), "--disable-banner"],
                ports["wiremock"], "WireMock"))
        if "prism" in peers:
            prism = PEERS / "node_modules" / ".bin" / "prism"
            if not prism.exists():
                raise SystemExit("Prism is not installed: bash benchmarks/peers.sh")
            stack.enter_context(process(
                [str(prism), "mock", "-h", "127.0.0.1", "-p", str(ports["prism"]),
                 str(ROOT / "contracts" / "apiframe.yaml")], ports["prism"], "Prism"))
        wrk_scripts = scripts(tmp, paths)
        targets = ["emulator", *peers]
        results: dict[tuple[str, int, str], list[WrkResult]] = {}
        for target in targets:  # warm-up (the JVM's JIT, Node's): not counted
            for name in names:
                if target == "prism" and (not name.startswith("apiframe") or name.endswith("mix")):
                    continue
                run_wrk(wrk, f"http://127.0.0.1:{ports[target]}", wrk_scripts[name], max(conns),
                        max(2.0, args.duration / 2), wait=False)
        for rnd in range(args.rounds):
            if rnd:  # fresh jobs to poll: the submits of the rounds before pass the store's
                # cap (100,000 jobs), which evicts the oldest finished jobs, these first
                paths, _ = prepare(f"http://127.0.0.1:{ports['emulator']}")
                wrk_scripts = scripts(tmp, paths)
            for name in names:
                for c in conns:
                    order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
                    for target in order:
                        if target == "prism" and (not name.startswith("apiframe")
                                                  or name.endswith("mix")):
                            continue  # Prism mocks the Apiframe contract, with no files
                        url = f"http://127.0.0.1:{ports[target]}"
                        if target == "wiremock":  # its journal (unbounded, its default)
                            # emptied before each run: holding every request of the whole
                            # benchmark, WireMock slows to a crawl in the later rounds (and
                            # bounded with --max-request-journal-entries it is 20x slower)
                            httpx.delete(f"{url}/__admin/requests").raise_for_status()
                        res = run_wrk(wrk, url, wrk_scripts[name], c, args.duration,
                                      wait=target == "emulator")
                        results.setdefault((name, c, target), []).append(res)
            print(f"round {rnd + 1}/{args.rounds} done", flush=True)
        journal = httpx.get(f"http://127.0.0.1:{ports['emulator']}/_emulator/journal",
                            params={"limit": 10000}).json()
        codes = sorted({(e["status"], e["path"].split("/")[1]) for e in
                        journal.get("entries", []) if e["status"] >= 300})
        print(f"emulator's last {len(journal.get('entries', []))} journal entries: "
              f"statuses >= 300 (status, first path segment): {codes or 'none'}")
    print(f"\n== emulator / peer, requests/s ratios paired per round: median [min-max] over "
          f"{args.rounds} rounds of {args.duration:g} s (wrk -t1); p99 medians in ms")
    header = f"{'path':16} {'conns':>5} {'emu rps':>8}"
    for peer in peers:
        header += f" {'emu/' + peer:>20}"
    header += "   p99 ms: " + " / ".join(targets) + "   non-2xx/3xx+errors: " + " / ".join(targets)
    print(header)
    for name in names:
        for c in conns:
            emu = results.get((name, c, "emulator"), [])
            line = f"{name:16} {c:5d} {statistics.median([r.rps for r in emu]):8.0f}"
            p99s = [f"{statistics.median([r.p99_ms for r in emu]):.2f}"]
            bad = [str(sum(r.non2xx + r.errors for r in emu))]
            for peer in peers:
                theirs = results.get((name, c, peer), [])
                ratios = [a.rps / b.rps for a, b in zip(emu, theirs, strict=False) if b.rps]
                line += f" {summary(ratios):>20}"
                p99s.append(f"{statistics.median([r.p99_ms for r in theirs]):.2f}"
                            if theirs else "-")
                bad.append(str(sum(r.non2xx + r.errors for r in theirs)) if theirs else "-")
            print(f"{line}   {' / '.join(p99s)}   {' / '.join(bad)}")


if __name__ == "__main__":
    main()
