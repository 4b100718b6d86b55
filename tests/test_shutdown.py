"""Shut-down never hangs: a client trickling a body, or a job fetching from a host that never
answers, cannot hold ``serve`` after SIGTERM (``--graceful-shutdown``; JobEngine.stop)."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from emulator.core.clock import Clock
from emulator.core.inputs import ImageSource
from emulator.core.jobs import JobEngine, JobStatus, Task
from emulator.matte.grabcut import GrabCutEngine
from emulator.settings import Settings
from emulator.testing.server import free_port
from tests.conftest import serve_process
from tests.procs import alive, descendants

SUBMIT = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"  # Pixazo (docs/vendors/pixazo.md)


class SilentHost:
    """A TCP server that accepts connections and never answers (an input host that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/photo.png"
        self.accepted = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture()
def silent_host() -> Iterator[SilentHost]:
    host = SilentHost()
    yield host
    host.close()


def _serve(port: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return serve_process(port, *extra, env=env, start_s=30)


def _exit_time_after_sigterm(proc: subprocess.Popen[str], limit_s: float) -> float:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"serve still running {limit_s:g} s after SIGTERM") from None
    return time.monotonic() - started


def test_sigterm_ends_serve_while_a_client_trickles_a_body() -> None:
    port = free_port()
    proc = _serve(port)  # the default grace (3 s)
    stop = threading.Event()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def trickle() -> None:
        try:
            while not stop.wait(1.0):
                sock.sendall(b" ")
        except OSError:
            pass

    try:
        sock.sendall(
            f"POST {SUBMIT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Ocp-Apim-Subscription-Key: k\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n{".encode())
        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        time.sleep(1.5)  # the request is in the app, reading its body
        _exit_time_after_sigterm(proc, 15)
        assert proc.returncode is not None
    finally:
        stop.set()
        sock.close()
        if proc.poll() is None:
            proc.kill()


def test_sigterm_ends_serve_while_a_job_fetches_from_a_silent_host(
        silent_host: SilentHost) -> None:
    port = free_port()
    # The fetch alone would last 120 s; shut-down used to wait 30 s for it.
    proc = _serve(port, env={"RMBG_EMULATOR_FETCH_TIMEOUT_S": "120"})
    try:
        reply = httpx.post(f"http://127.0.0.1:{port}{SUBMIT}",
                           headers={"Ocp-Apim-Subscription-Key": "k"},
                           json={"image_url": silent_host.url}, timeout=10)
        assert reply.status_code == 202, reply.text
        assert silent_host.accepted.wait(15), "the job never fetched its input"
        assert _exit_time_after_sigterm(proc, 15) < 15
    finally:
        if proc.poll() is None:
            proc.kill()


def test_stop_cancels_a_fetch_and_the_job_ends_in_error(silent_host: SilentHost) -> None:
    async def scenario() -> tuple[JobStatus | None, str | None, str | None]:
        engine = JobEngine(Settings(fetch_timeout_s=120.0, progression="immediate"),
                           clock=Clock(), matte=GrabCutEngine)
        await engine.start()
        job = engine.submit(job_id="j1", vendor="pixazo", operation="submit", api_key="k",
                            task=Task("remove", (ImageSource("url", silent_host.url),)))
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, silent_host.accepted.wait, 15)
        await asyncio.wait_for(engine.stop(), timeout=10)
        assert engine.busy == 0
        return job.outcome, job.error_code, job.error

    outcome, code, error = asyncio.run(scenario())
    assert outcome is JobStatus.ERROR and code == "system_error"
    assert error is not None and "shut down" in error


def test_serve_passes_its_grace_to_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from emulator import cli
    from emulator.cli import main

    seen: dict[str, object] = {}
    monkeypatch.setattr(cli, "run_server", lambda app, **kwargs: seen.update(kwargs))
    before = gc.get_threshold()
    try:
        assert main(["serve", "--engine", "grabcut", "--port", str(free_port()),
                     "--graceful-shutdown", "1"]) == 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert seen["timeout_graceful_shutdown"] == 1


def test_graceful_shutdown_setting() -> None:
    assert Settings().graceful_shutdown_s == 3
    assert Settings.from_env(
        {"RMBG_EMULATOR_GRACEFUL_SHUTDOWN_S": "7"}).graceful_shutdown_s == 7
    with pytest.raises(ValueError):
        Settings(graceful_shutdown_s=-1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_a_stopped_serve_leaves_no_matte_worker_process(stop: str) -> None:
    """SIGTERM stops the pool; after SIGKILL (no clean-up at all) each worker sees its
    parent gone and exits within a few seconds, instead of waiting for work forever."""
    port = free_port()
    proc = _serve(port, "--matte-pool", "processes", "--matte-workers", "2")
    try:
        image = f"http://127.0.0.1:{port}/_emulator/samples/astronaut"
        for _ in range(2):
            reply = httpx.post(f"http://127.0.0.1:{port}{SUBMIT}",
                               headers={"Ocp-Apim-Subscription-Key": "k"},
                               json={"image_url": image}, timeout=10)
            assert reply.status_code == 202, reply.text
        deadline = time.monotonic() + 30
        while len(descendants(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = descendants(proc.pid)
        assert len(workers) >= 2, "no matte worker process started"
        if stop == "sigterm":
            assert _exit_time_after_sigterm(proc, 15) < 15
        else:
            proc.kill()
            proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if alive(pid)], "a worker outlived serve"
    finally:
        if proc.poll() is None:
            proc.kill()
