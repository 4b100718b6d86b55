"""py-spy for the benchmarks: sample a server process while a load runs, and read the
samples back (``py-spy record --format raw``: one ``frame;frame;... count`` line a stack,
root first). Not a test: a helper of ``profile_poll.py``, ``profile_busy.py`` and
``store_cap.py``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def record(pid: int, seconds: float, out: Path, *, rate: int = 200,
           idle: bool = False) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` on ``pid`` for ``seconds`` (at least 1), ``rate`` samples a
    second, into ``out``; with ``idle``, samples of threads waiting are kept too."""
    cmd = [str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw",
           "-o", str(out), "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", str(rate)]
    if idle:
        cmd.append("--idle")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main_thread_samples(path: Path) -> Iterator[tuple[list[str], int]]:
    """The event loop's (main thread's) stacks in ``path`` with their sample counts; the
    process's other threads (``Thread._bootstrap`` at their root) are left out."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit() and "Thread._bootstrap" not in stack:
            yield stack.split(";"), int(count)
