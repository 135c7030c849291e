"""Cost per frame of each upsampling mode, and of temporal smoothing.

The score is the ground truth averaged onto the default grid (1,400 tokens: 28 x 50 at 16:9)
of the davis-mini dog frames kept in the repository, at 854x480 and resized to 1280x720 and
1920x1080 (the frame is the ``bilateral`` mode's guide); a worst case for ``bilateral`` is a
noise score whose edge band covers most of the frame. Not a test: it prints milliseconds.

    python benchmarks/postprocess_cost.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from dinomask.postprocess import UPSAMPLE_MODES, TemporalSettings, TemporalSmoother, upsample_score
from dinomask.preprocess import InputGeometry, load_image, load_mask, patch_coverage

DAVIS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "davis-mini"


def timed(score, size, mode, image, repeats: int) -> float:
    upsample_score(score, size, mode, image)
    start = time.perf_counter()
    for _ in range(repeats):
        upsample_score(score, size, mode, image)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = sorted((DAVIS / "JPEGImages/480p/dog").glob("*.jpg"))[:4]
    print(f"{'frame':>10s} {'grid':>6s} {'mode':22s} {'ms/frame':>9s}")
    for height, width in [(480, 854), (720, 1280), (1080, 1920)]:
        grid = InputGeometry().grid(height, width, 14)
        rows: dict[str, list[float]] = {}
        for path in frames:
            image = cv2.resize(load_image(path), (width, height), interpolation=cv2.INTER_AREA)
            truth = cv2.resize(load_mask(DAVIS / "Annotations/480p/dog" / (path.stem + ".png")).astype(np.uint8),
                               (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
            score = (patch_coverage(truth, grid) - 0.5).astype(np.float32)
            for mode in UPSAMPLE_MODES:
                rows.setdefault(mode, []).append(timed(score, (height, width), mode, image, args.repeats))
            noise = rng.normal(0, 0.2, grid).astype(np.float32)
            rows.setdefault("bilateral (noise score)", []).append(
                timed(noise, (height, width), "bilateral", image, args.repeats))
        for mode, values in rows.items():
            print(f"{width:>4d}x{height:<5d} {grid[0]}x{grid[1]} {mode:22s} {np.median(values):9.2f}")
    smoother = TemporalSmoother(TemporalSettings(alpha=0.5))
    descriptor = np.ones(8) / np.sqrt(8)
    start = time.perf_counter()
    for _ in range(args.repeats):
        smoother.update(rng.normal(0, 0.2, (1, 28, 50)).astype(np.float32), descriptor)
    print(f"temporal smoothing (28x50): {(time.perf_counter() - start) / args.repeats * 1e3:.3f} ms/frame")


if __name__ == "__main__":
    main()
