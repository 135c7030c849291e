"""Ground-truth ceilings of the patch grid and of keyframe propagation (no model, no weights).

1. Grid ceiling: each frame's ground-truth mask averaged onto an aspect-kept grid with S
   patches on the short side (and onto the default token budget's grid), brought back
   with bilinear upsampling, thresholded at 0.5: the J a perfect patch classifier scores.
2. Keyframes: the ground-truth mask of every k-th frame is carried to the frames between
   by ``dinomask.keyframes.ScorePropagator`` (what ``--keyframes every:k`` runs), and, for
   comparison, by naive chaining (DIS ultrafast preset, backward flow and remap, no
   forward-backward check). J is scored on the non-key frames only.

J is the mean over sequences of the per-frame mean. On davis-mini the frames are every
4th frame of DAVIS, so k=2 here spans 8 real frames::

    python benchmarks/keyframe_ceiling.py [--dataset ../shared/data/davis-mini]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "davis-mini"


def sequences(root: Path) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    from dinomask.preprocess import load_image, load_mask

    out = {}
    for folder in sorted((root / "JPEGImages/480p").iterdir()):
        frames = sorted(folder.glob("*.jpg"))
        out[folder.name] = [(load_image(f), load_mask(root / "Annotations/480p" / folder.name / f"{f.stem}.png"))
                            for f in frames]
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def grid_ceiling(data, grid_for) -> float:
    from dinomask.preprocess import patch_coverage

    per_sequence = []
    for frames in data.values():
        scores = []
        for _, mask in frames:
            grid = grid_for(*mask.shape)
            coverage = patch_coverage(mask, grid)
            up = cv2.resize(coverage, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_LINEAR)
            scores.append(iou(up > 0.5, mask))
        per_sequence.append(np.mean(scores))
    return float(np.mean(per_sequence))


def naive_chain(frames, k: int) -> list[float]:
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    scores = []
    for index, (image, mask) in enumerate(frames):
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if index % k == 0:
            carried, previous = mask.astype(np.float32), grey
            continue
        backward = flow.calc(grey, previous, None)
        ys, xs = np.mgrid[0:grey.shape[0], 0:grey.shape[1]].astype(np.float32)
        carried = cv2.remap(carried, xs + backward[..., 0], ys + backward[..., 1], cv2.INTER_LINEAR)
        previous = grey
        scores.append(iou(carried > 0.5, mask))
    return scores


def propagated(frames, k: int) -> list[float]:
    from dinomask.keyframes import KeyframeSettings, ScorePropagator

    propagator = ScorePropagator(KeyframeSettings("every", interval=k))
    scores = []
    for index, (image, mask) in enumerate(frames):
        if index % k == 0:
            propagator.seed(image, (mask.astype(np.float32) - 0.5)[None])
            continue
        maps = propagator.step(image)
        assert maps is not None
        full = cv2.resize(maps[0], (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_LINEAR)
        scores.append(iou(full > 0, mask))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=SHARED if SHARED.is_dir() else ROOT / "tests/fixtures/davis-mini")
    args = parser.parse_args()
    from dinomask.preprocess import InputGeometry, budget_grid

    data = sequences(args.dataset)
    print(f"# {args.dataset}: {len(data)} sequences, {sum(len(v) for v in data.values())} frames\n")
    print("| S (short side) | grid at 854x480 | tokens | ceiling J |\n|---|---|---|---|")
    for side in (16, 20, 24, 28, 32, 37, 48):
        geometry = InputGeometry(side * 14)
        grid = geometry.grid(480, 854, 14)
        print(f"| {side} | {grid[0]}x{grid[1]} | {grid[0] * grid[1]} | {grid_ceiling(data, lambda h, w: geometry.grid(h, w, 14)):.3f} |")
    default = InputGeometry()
    grid = default.grid(480, 854, 14)
    print(f"| default (--tokens {default.tokens}) | {grid[0]}x{grid[1]} | {grid[0] * grid[1]} | "
          f"{grid_ceiling(data, lambda h, w: budget_grid(h, w, default.tokens)):.3f} |")
    print(f"| paper (37x37 squashed) | 37x37 | 1369 | {grid_ceiling(data, lambda h, w: (37, 37)):.3f} |")

    print("\n| k (davis-mini frames) | naive chaining J | dinomask propagation J |\n|---|---|---|")
    for k in (2, 3, 4, 6):
        naive = np.mean([np.mean(naive_chain(frames, k)) for frames in data.values()])
        ours = np.mean([np.mean(propagated(frames, k)) for frames in data.values()])
        print(f"| {k} | {naive:.3f} | {ours:.3f} |")


if __name__ == "__main__":
    main()
