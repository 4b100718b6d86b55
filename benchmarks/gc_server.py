"""``rmbg-emulator serve ARGS`` with the garbage collector's pauses timed, for the benchmarks
that ask whether the collector explains a slowdown (``benchmarks/store_cap.py``).

    GC_STATS=/tmp/gc.json python benchmarks/gc_server.py --port 8000 --engine grabcut

Registers a ``gc.callbacks`` hook that times every collection, by generation, and writes
``{"0": [count, total_s, max_s], "1": [...], "2": [...]}`` to the file ``GC_STATS`` names
every 0.2 s (a daemon thread). ``GC_THRESHOLDS=700,10,1000000000`` replaces the policy's
young-generation thresholds (``emulator.gcpolicy.THRESHOLDS``), to compare policies.
``SIGUSR1`` runs a full collection on the event loop's
thread at once, as the idle collector's pass would (``store_cap.py --stall``). The server is
otherwise the one users run (its ``emulator.gcpolicy`` included).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

STATS: dict[str, list[float]] = {str(g): [0, 0.0, 0.0] for g in range(3)}
_started = 0.0


def _timed(phase: str, info: dict[str, Any]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
        return
    pause = time.perf_counter() - _started
    entry = STATS[str(info["generation"])]
    entry[0] += 1
    entry[1] += pause
    entry[2] = max(entry[2], pause)


def _writer(path: Path) -> None:
    while True:
        time.sleep(0.2)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(STATS))
        tmp.replace(path)


def main() -> int:
    """Start the writer, hook the collector, run the server."""
    path = Path(os.environ.get("GC_STATS", "gc_stats.json"))
    threading.Thread(target=_writer, args=(path,), daemon=True).start()
    gc.callbacks.append(_timed)
    signal.signal(signal.SIGUSR1, lambda *_: gc.collect())
    import emulator.gcpolicy
    from emulator.cli import main as cli

    if os.environ.get("GC_THRESHOLDS"):  # another policy to compare, "50000,20,1000000000"
        emulator.gcpolicy.THRESHOLDS = tuple(  # type: ignore[assignment]
            int(n) for n in os.environ["GC_THRESHOLDS"].split(","))

    code: int = cli(["serve", *sys.argv[1:]])
    return code


if __name__ == "__main__":
    sys.exit(main())
