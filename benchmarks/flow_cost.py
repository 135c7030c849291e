"""What one frame's flow step costs in the live loop, by flow resolution (the simulated clock of
``eval live --costs`` charges a finer flow its extra from these figures).

    python benchmarks/flow_cost.py [--clip ../shared/data/davis-motion/JPEGImages/480p/breakdance]

Prints the median and p90 ms of :meth:`dinomask.keyframes.FlowCarrier.step` (two DIS flows, the
warp of the carried maps and the uncovered-background step) at several short sides, on the clip's
frames (854 x 480 in DAVIS), in this process alone, one thread of OpenCV's pool per flow.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from dinomask.keyframes import FlowCarrier
    from dinomask.preprocess import load_image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=ROOT.parent / "shared/data/davis-motion/JPEGImages/480p/breakdance")
    parser.add_argument("--sides", default="120,160,180,240")
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    paths = sorted(args.clip.glob("*.jpg"))[: args.frames] if args.clip.is_dir() else []
    if len(paths) < 2:  # a fresh clone without ../shared: the bundled example's frames
        paths = sorted((ROOT / "examples/dog/frames").glob("*.jpg"))
    frames = [load_image(p) for p in paths]
    grid = np.random.default_rng(0).random((28, 50), np.float32)
    maps = [grid - 0.5, grid]
    height, width = frames[0].shape[:2]
    print(f"{len(frames)} frames of {width}x{height} from {paths[0].parent}")
    base = None
    for side in (int(s) for s in args.sides.split(",")):
        carrier = FlowCarrier(side, side / 240, 32)
        carrier.step(0, frames[0])
        carrier.land(0, maps)
        times = []
        for repeat in range(2):
            for index, frame in enumerate(frames[1:], start=1):
                started = time.perf_counter()
                carrier.step(repeat * 1000 + index, frame)
                times.append((time.perf_counter() - started) * 1e3)
        median = float(np.median(times))
        base = base or median
        print(f"flow side {side:4d} px: median {median:5.1f} ms, p90 {np.percentile(times, 90):5.1f} ms "
              f"({median / base:.2f}x of {args.sides.split(',')[0]} px; area ratio {(side / int(args.sides.split(',')[0])) ** 2:.2f})")


if __name__ == "__main__":
    main()
