"""Cost per frame of each upsampling / refinement mode and of temporal smoothing.

The score map is a 37 x 66 grid (518 px short side of an 854 x 480 frame); the output is
the frame's own size. Not a test: it prints milliseconds.

    python benchmarks/postprocess_cost.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dinomask.postprocess import TemporalSettings, TemporalSmoother, upsample_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'frame':>10s} {'grid':>6s} {'mode':10s} {'ms/frame':>9s}")
    for (height, width), grid in [((480, 854), (37, 66)), ((720, 1280), (37, 66)), ((1080, 1920), (37, 66))]:
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        score = rng.normal(0, 0.2, grid).astype(np.float32)
        for mode in ("nearest", "bilinear"):
            upsample_score(score, (height, width), mode, image)
            start = time.perf_counter()
            for _ in range(args.repeats):
                upsample_score(score, (height, width), mode, image)
            ms = (time.perf_counter() - start) / args.repeats * 1e3
            print(f"{width:>4d}x{height:<5d} {grid[0]}x{grid[1]} {mode:10s} {ms:9.2f}")
    smoother = TemporalSmoother(TemporalSettings(alpha=0.5))
    descriptor = np.ones(8) / np.sqrt(8)
    start = time.perf_counter()
    for _ in range(args.repeats):
        smoother.update(rng.normal(0, 0.2, (1, 37, 66)).astype(np.float32), descriptor)
    print(f"temporal smoothing (37x66): {(time.perf_counter() - start) / args.repeats * 1e3:.3f} ms/frame")


if __name__ == "__main__":
    main()
