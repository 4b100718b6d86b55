"""Matte engines: milliseconds per megapixel, IoU and MAE on composites with exact masks.

Not a test: prints figures. Usage:

    python benchmarks/matte.py [--engines u2netp,grabcut] [--scales 1,2] [--repeat 3]
        [--models-dir DIR]   (default: the emulator's own lookup; the package ships u2netp)

Composites are the coffee cup (a real photograph) cut along a known shape and laid onto four
photographed backgrounds (``emulator.testing.composites``), so the ground truth is exact.
Timings include the whole engine call (resize, inference, upsampling) and, separately, the
cut-out + PNG encode (compress_level 1).
"""

from __future__ import annotations

import argparse
import statistics
import time

from emulator.matte.compose import cutout, encode_png
from emulator.matte.engine import create_engine
from emulator.testing.composites import all_composites, iou, mae


def main() -> None:
    """Parse arguments, run every engine on every composite, print one row per engine/scale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="u2netp,grabcut")
    parser.add_argument("--scales", default="1,2", help="composite scales (1 = 600x400)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models-dir", default=None)
    args = parser.parse_args()

    print(f"{'engine':10} {'size':>10} {'MP':>5} {'ms/image':>9} {'ms/MP':>8} "
          f"{'encode ms':>9} {'IoU':>6} {'MAE':>6}")
    for spec in args.engines.split(","):
        engine = create_engine(spec, models_dir=args.models_dir)
        for scale in (float(s) for s in args.scales.split(",")):
            comps = all_composites(scale=scale)
            engine.alpha(comps[0].rgb)  # warm-up
            times, encodes, ious, maes = [], [], [], []
            for comp in comps:
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    alpha = engine.alpha(comp.rgb)
                    times.append(time.perf_counter() - start)
                start = time.perf_counter()
                encode_png(cutout(comp.rgb, alpha), compress_level=1)
                encodes.append(time.perf_counter() - start)
                ious.append(iou(alpha, comp.mask))
                maes.append(mae(alpha, comp.mask))
            h, w = comps[0].rgb.shape[:2]
            mp = h * w / 1e6
            ms = statistics.median(times) * 1000
            print(f"{engine.name:10} {f'{w}x{h}':>10} {mp:5.2f} {ms:9.0f} {ms / mp:8.0f} "
                  f"{statistics.median(encodes) * 1000:9.1f} {statistics.mean(ious):6.3f} "
                  f"{statistics.mean(maes):6.3f}")


if __name__ == "__main__":
    main()
