"""The long contract runs: ``contracts check VENDOR --max-examples 1000`` for every contract.

Not a test (CI runs the same suite with bounded counts, tests/contracts/test_suite.py): these
runs take minutes per contract and find the edges where a contract and the server disagree.

    python benchmarks/contracts_long.py [--max-examples 1000] [--vendors gmicloud,fal]
        [--seed 42] [--timeout 1200] [--log-dir DIR]

Starts one emulator (``serve --progression immediate --engine grabcut``) on a free loopback
port, resets it before each contract, runs the checks one contract at a time (each is
CPU-heavy), prints each contract's verdict and time, and stops the emulator at the end, also
when interrupted. A contract's run stops after ``--timeout`` seconds (then it counts as
failed). Each run's full report goes to ``DIR/VENDOR.log`` (a temporary directory unless
``--log-dir``). The exit status is 0 when every contract passed.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ("apiframe", "emulator", "fal", "gmicloud", "pixazo", "runflow")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, server: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Return once ``url``/_emulator/health answers 200.

    Raises:
        RuntimeError: the server exited, or did not answer within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the emulator exited with status {server.returncode}")
        try:
            if httpx.get(f"{url}/_emulator/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the emulator did not answer within {timeout_s:.0f} s")


def run_check(name: str, url: str, args: argparse.Namespace, log: Path) -> tuple[str, float]:
    """Run one contract's check; its report goes to ``log``. Returns (verdict, seconds)."""
    cmd = [sys.executable, "-m", "emulator.cli", "contracts", "check", name,
           "--base-url", url, "--max-examples", str(args.max_examples), "--seed", str(args.seed)]
    started = time.monotonic()
    with log.open("wb") as out:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                timeout=args.timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            return f"TIMEOUT after {args.timeout:.0f} s", time.monotonic() - started
    return ("PASS" if rc == 0 else f"FAIL (exit {rc})"), time.monotonic() - started


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def main(argv: list[str] | None = None) -> int:
    """Run the long checks; 0 when every contract passed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=1000)
    parser.add_argument("--vendors", default=",".join(CONTRACTS),
                        help="contracts to check, comma-separated (default: all six)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="seconds one contract's run may take (default 1200)")
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.vendors.split(",") if n.strip()]
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="rmbg-contracts-long-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "serve", "--engine", "grabcut",
         "--host", "127.0.0.1", "--port", str(port), "--progression", "immediate"],
        cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: list[tuple[str, str, float]] = []
    try:
        wait_healthy(url, server, timeout_s=60.0)
        print(f"emulator at {url}; {args.max_examples} examples per operation, seed "
              f"{args.seed}; reports in {log_dir}", flush=True)
        for name in names:
            httpx.post(f"{url}/_emulator/reset", timeout=10.0).raise_for_status()
            verdict, seconds = run_check(name, url, args, log_dir / f"{name}.log")
            results.append((name, verdict, seconds))
            print(f"{name:10s} {verdict:24s} {seconds:7.1f} s", flush=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    passed = sum(verdict == "PASS" for _, verdict, _ in results)
    total = sum(seconds for _, _, seconds in results)
    print(f"{passed}/{len(names)} contracts passed in {total:.0f} s")
    return 0 if passed == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
