"""The command line: remove, models, and serve's banner and flags."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from emulator.cli import main
from emulator.matte import models
from emulator.testing.server import free_port
from tests.conftest import MODELS_DIR, decode_png, small_photo

PIXAZO = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"


def test_remove_writes_one_png_per_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    inputs = []
    for i, size in enumerate((48, 64)):
        path = tmp_path / f"photo{i}.jpg"
        Image.fromarray(small_photo(size)).save(path, quality=95)
        inputs.append(str(path))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"nope")
    code = main(["remove", *inputs, str(broken), "-o", str(tmp_path / "out"),
                 "--engine", "grabcut"])
    assert code == 1  # one input could not be read
    assert "broken.jpg" in capsys.readouterr().err
    for i, size in enumerate((48, 64)):
        out = decode_png((tmp_path / "out" / f"photo{i}.png").read_bytes())
        assert out.mode == "RGBA" and out.size[0] == size
    assert not (tmp_path / "out" / "broken.png").exists()


def test_remove_single_file_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    Image.fromarray(small_photo(40)).save(path)
    assert main(["remove", str(path), "-o", str(tmp_path), "--engine", "grabcut"]) == 0
    alpha = np.asarray(decode_png((tmp_path / "cat.png").read_bytes()))[:, :, 3]
    assert 0 < (alpha > 0).mean() < 1


def test_models_list_and_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--models-dir", MODELS_DIR]) == 0
    assert "u2netp: found at" in capsys.readouterr().out
    dest = tmp_path / "cache"
    assert main(["models", "install", "u2netp", "--from", f"{MODELS_DIR}/u2netp.onnx",
                 "--dest", str(dest)]) == 0
    assert (dest / "u2netp.onnx").stat().st_size == 4_574_861


def test_models_install_refuses_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"x")
    assert main(["models", "install", "u2netp", "--from", str(bad), "--dest",
                 str(tmp_path)]) == 1


def test_serve_prints_the_banner_and_answers(tmp_path: Path) -> None:
    """A bare install serves with u2netp: no weights directory set, no rembg cache, an empty
    home; the weights come from the package."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("U2NET_HOME", "RMBG_EMULATOR_MODELS")}
    env["HOME"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline()]
        while not banner[-1].startswith("Listening on") and banner[-1]:
            banner.append(proc.stdout.readline())
        assert f"http://127.0.0.1:{port}" in banner[0]
        assert banner[1] == "  engine: u2netp\n"
        assert f"  dashboard: http://127.0.0.1:{port}/_emulator/ui\n" in banner
        assert banner[-1] == f"Listening on http://127.0.0.1:{port} (Ctrl+C to stop)\n"
        deadline = time.monotonic() + 60  # "does not hang", on a loaded machine
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/_emulator/health").json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, "".join(banner) + proc.stdout.read()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert health["status"] == "ok" and health["engine"] == "u2netp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_refuses_bad_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["serve", "--progression", "sometimes"]) == 2
    # no weights anywhere (any found would serve for ever)
    monkeypatch.delenv("RMBG_EMULATOR_MODELS", raising=False)
    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    monkeypatch.setattr(models, "BUNDLED_DIR", tmp_path / "no-package-copy")
    assert main(["serve", "--engine", "u2netp", "--models-dir", "/nonexistent"]) == 2


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """``serve`` that builds the app and stops instead of listening: each call of the fake
    ``run_server`` records the app's settings, idle collector and the gc state then; the
    gc's thresholds and freeze are restored afterwards."""
    import gc

    from emulator import cli

    seen: dict[str, Any] = {}

    def fake_run(app: Any, **kwargs: object) -> None:
        emulator = app.state.emulator
        seen.update(settings=emulator.settings, collector=emulator.idle_gc,
                    thresholds=gc.get_threshold(), frozen=gc.get_freeze_count())

    before = gc.get_threshold()
    monkeypatch.setattr(cli, "run_server", fake_run)
    try:
        yield seen
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_serve_freezes_start_up_objects_and_collects_while_idle(
        served: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from emulator.gcpolicy import THRESHOLDS, IdleCollector

    assert main(["serve", "--engine", "grabcut", "--port", str(free_port())]) == 0
    assert served["thresholds"] == THRESHOLDS
    assert isinstance(served["frozen"], int) and served["frozen"] > 10_000
    assert isinstance(served["collector"], IdleCollector)
    assert "rmbg-emulator" in capsys.readouterr().out


def test_serve_takes_the_fetch_flags(served: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RMBG_EMULATOR_MAX_WAIT_S", "7")
    assert main(["serve", "--engine", "grabcut", "--port", str(free_port()),
                 "--allow-fetch", "10.0.0.0/8", "--allow-fetch", "images.internal",
                 "--fetch-deadline", "5"]) == 0
    settings = served["settings"]
    assert settings.allow_fetch == ("10.0.0.0/8", "images.internal")
    assert settings.fetch_deadline_s == 5.0
    assert settings.max_wait_s == 7.0
    out = capsys.readouterr().out
    assert "input fetches:" in out and "10.0.0.0/8" in out and "127.0.0.1/32" in out
    assert main(["serve", "--allow-fetch", "not a host!"]) == 2
    assert "not a host!" in capsys.readouterr().err


def test_allow_fetch_from_the_environment() -> None:
    from emulator.settings import Settings

    settings = Settings.from_env({"RMBG_EMULATOR_ALLOW_FETCH": "any",
                                  "RMBG_EMULATOR_FETCH_DEADLINE_S": "3"})
    assert settings.allow_fetch == ("any",) and settings.fetch_deadline_s == 3.0
    assert Settings().allow_fetch == () and Settings().fetch_deadline_s == 30.0
    with pytest.raises(ValueError, match="max_wait_s"):
        Settings(max_wait_s=0)


def test_serve_refuses_more_server_processes_with_the_memory_store(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from emulator import cli

    monkeypatch.setattr(cli, "run_server", lambda app, **kwargs: None)  # never serves
    assert main(["serve", "--engine", "grabcut", "--port", str(free_port()),
                 "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "--workers 2" in err and "--store redis://" in err and "--matte-workers" in err


def test_serve_takes_the_matte_pool_flags(served: dict[str, Any],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--engine", "grabcut", "--port", str(free_port()),
                 "--matte-workers", "3", "--workers", "1"]) == 0
    settings = served.pop("settings")
    assert settings.matte_workers == 3
    assert settings.matte_pool == "processes"
    assert "image work: 3 worker processes" in capsys.readouterr().out
    assert main(["serve", "--engine", "grabcut", "--port", str(free_port()),
                 "--matte-pool", "threads"]) == 0
    assert served["settings"].matte_pool == "threads"
    assert "image work: 2 threads" in capsys.readouterr().out


def test_remove_prints_every_output_and_never_overwrites_a_shared_stem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    inputs = [tmp_path / "a" / "photo.jpg", tmp_path / "b" / "photo.jpg",
              tmp_path / "photo.png", tmp_path / "photo-2.png"]
    for i, path in enumerate(inputs):
        Image.fromarray(small_photo(40 + 8 * i)).save(path)
    out_dir = tmp_path / "out"
    assert main(["remove", *map(str, inputs), "-o", str(out_dir), "--engine", "grabcut"]) == 0
    printed = capsys.readouterr().out
    names = ["photo.png", "photo-3.png", "photo-4.png", "photo-2.png"]
    for i, name in enumerate(names):
        assert str(out_dir / name) in printed
        # each input has its own output: the widths differ
        assert decode_png((out_dir / name).read_bytes()).size[0] == 40 + 8 * i
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(names)


def test_serve_on_a_busy_port_prints_only_the_bind_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from emulator import cli

    def never(app: object, **kwargs: object) -> None:
        raise AssertionError("served on a port that was taken")

    monkeypatch.setattr(cli, "run_server", never)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--engine", "grabcut", "--port", str(port)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no banner claiming a URL another program answers on
    assert captured.err.startswith(f"rmbg-emulator: cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in captured.err and "http://" not in captured.err


def test_serve_says_listening_once_bound_and_logs_each_request(tmp_path: Path) -> None:
    import queue
    import threading

    port = free_port()
    env = {**os.environ, "U2NET_HOME": str(tmp_path), "RMBG_EMULATOR_MODELS": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "serve", "--port", str(port), "--engine",
         "grabcut", "--access-log"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None

    def pump() -> None:
        for line in proc.stdout or ():
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()

    def next_line(containing: str) -> str:
        while True:
            line = lines.get(timeout=30)  # raises queue.Empty rather than hang
            if containing in line:
                return line

    try:
        assert next_line("Listening on") == (
            f"Listening on http://127.0.0.1:{port} (Ctrl+C to stop)\n")
        # bound and listening when it says so: the first request is answered, no retry
        assert httpx.get(f"http://127.0.0.1:{port}/_emulator/health").status_code == 200
        assert re.fullmatch(r"GET /_emulator/health 200 \d+\.\d ms\n",
                            next_line("/_emulator/health"))
        assert httpx.get(f"http://127.0.0.1:{port}/nowhere").status_code == 404
        assert re.fullmatch(r"GET /nowhere 404 \d+\.\d ms\n", next_line("/nowhere"))
        # a dropped connection still drops behind the access log, logged without a status
        with pytest.raises(httpx.TransportError):
            httpx.post(f"http://127.0.0.1:{port}{PIXAZO}", json={},
                       headers={"X-Emulator-Fault": "connection=reset"})
        assert re.fullmatch(rf"POST {PIXAZO} - \d+\.\d ms\n", next_line(PIXAZO))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_listen_binds_ipv4_for_a_name_as_uvicorn_does(host: str) -> None:
    import socket

    from emulator.cli import listen

    with listen(host, 0) as sock:
        assert sock.family == socket.AF_INET and sock.getsockname()[0] == "127.0.0.1"
        port = sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # listening: the connection is queued before anything serves it
