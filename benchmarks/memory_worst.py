"""Peak memory and CPU of the worst inputs the emulator accepts, one fresh process per case.

Cases (built once into a temporary directory, then each run in its own child process so its
peak RSS is its own):

- ``gif7000``: a 7,000 x 7,000 GIF (49 Mpx, under the 50 Mpx limit; a few KB on disk);
- ``png50`` / ``jpeg50``: a 7,071 x 7,071 PNG / JPEG (50 Mpx);
- ``body_b64``: a JSON request body carrying a 25 MiB file as a base64 data URI, parsed and
  decoded as a vendor submit does;
- ``body_array``: a 34 MiB JSON array of empty objects (``[{},{},...]``), the worst
  amplification per body byte, parsed as a vendor submit does (refused after the change).

The image cases run the ``remove`` task (decode, matte, cut-out, PNG encode) with the GrabCut
engine and ``max_input_pixels`` 50,000,000. Each line prints the peak RSS of the child
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), the peak minus the child's RSS before the case
(the case's own cost) and the child's CPU seconds (user + system).

Run: ``PYTHONPATH=. python benchmarks/memory_worst.py [CASE ...]`` (about a minute for all).
"""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("gif7000", "png50", "jpeg50", "body_b64", "body_array")
SIDE_50MPX = 7071
FILE_BYTES = 25 * 1024 * 1024
ARRAY_BYTES = 34 * 1024 * 1024


def _rss_mib() -> float:
    """Current RSS (MiB) from /proc (Linux), else the peak so far."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(case: str, folder: Path) -> Path:
    """Write ``case``'s input to ``folder``; returns the path."""
    import numpy as np
    from PIL import Image, ImageDraw

    path = folder / case
    if path.exists():
        return path
    if case == "gif7000":
        img = Image.new("P", (7000, 7000), 0)
        img.putpalette([0, 0, 0, 200, 60, 40, 30, 160, 220] + [0] * (256 * 3 - 9))
        draw = ImageDraw.Draw(img)
        draw.ellipse((1800, 1200, 5200, 5800), fill=1)
        draw.rectangle((3000, 3000, 4000, 6800), fill=2)
        img.save(path, format="GIF")
    elif case in ("png50", "jpeg50"):
        img = Image.new("RGB", (SIDE_50MPX, SIDE_50MPX), (40, 90, 160))
        draw = ImageDraw.Draw(img)
        draw.ellipse((1800, 1200, 5200, 5800), fill=(220, 180, 60))
        img.save(path, format="PNG" if case == "png50" else "JPEG", quality=85)
    elif case == "body_b64":
        data = np.random.default_rng(0).integers(0, 256, FILE_BYTES, dtype=np.uint8).tobytes()
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        path.write_bytes(json.dumps({"image_url": uri}).encode())
    elif case == "body_array":
        n = (ARRAY_BYTES - 2) // 3
        path.write_bytes(b"[" + b"{}," * (n - 1) + b"{}]")
    else:
        raise SystemExit(f"unknown case {case!r}; choose from {CASES}")
    return path


def run_case(case: str, path: Path) -> None:
    """Child: run one case and print one JSON line of figures."""
    import numpy as np  # noqa: F401  (imports before the baseline)

    from emulator.core.inputs import decode_inline, parse_source
    from emulator.core.tasks import TaskContext, remove_background
    from emulator.matte.grabcut import GrabCutEngine

    try:  # after the change: the one JSON parser; before it: json.loads
        from emulator.jsonbody import parse_json
        from emulator.settings import Settings

        limit = Settings().json_body_limit

        def parse(raw: bytes) -> object:
            return parse_json(raw, limit=limit)
        parser = "emulator.jsonbody"
    except ImportError:
        def parse(raw: bytes) -> object:
            return json.loads(raw)
        parser = "json.loads"

    raw = path.read_bytes()
    base = _rss_mib()
    t0 = time.process_time()
    wall = time.perf_counter()
    outcome = "ok"
    try:
        if case.startswith("body"):
            body = parse(raw)
            if isinstance(body, dict):
                source = parse_source(body["image_url"], field="image_url")
                decode_inline(source, FILE_BYTES + 1)
        else:
            ctx = TaskContext(engine=GrabCutEngine(), max_pixels=50_000_000, compress_level=1)
            out = remove_background([raw], {}, ctx)
            outcome = f"{out[0].width}x{out[0].height} PNG {len(out[0].data)} bytes"
    except Exception as exc:  # a refusal is a result here
        outcome = f"refused: {type(exc).__name__}: {str(exc)[:80]}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"case": case, "input_bytes": len(raw), "peak_rss_mib": round(peak),
                      "case_mib": round(peak - base), "cpu_s": round(time.process_time() - t0, 2),
                      "wall_s": round(time.perf_counter() - wall, 2), "parser": parser,
                      "outcome": outcome}))


def main(argv: list[str]) -> None:
    """Build the inputs, run each case in a child process, print a table."""
    if len(argv) == 3 and argv[0] == "--child":
        run_case(argv[1], Path(argv[2]))
        return
    cases = argv or list(CASES)
    folder = Path(os.environ.get("MEMORY_WORST_DIR") or tempfile.mkdtemp(prefix="memworst-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{'case':<11} {'input':>12} {'peak RSS':>9} {'case':>8} {'CPU s':>7}  outcome")
    for case in cases:
        path = build(case, folder)
        proc = subprocess.run([sys.executable, __file__, "--child", case, str(path)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{case:<11} failed: {proc.stderr.strip()[-300:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{case:<11} {r['input_bytes']:>12,} {r['peak_rss_mib']:>6} MiB "
              f"{r['case_mib']:>4} MiB {r['cpu_s']:>7}  {r['outcome']}")


if __name__ == "__main__":
    main(sys.argv[1:])
