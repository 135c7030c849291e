"""One flow step carrying the ground truth, with and without an object's own shift
(:func:`dinomask.keyframes.follow_object`): how often DIS loses a carried object, and what the
shift gives back where it does.

    python benchmarks/object_shift_steps.py -d ../shared/data/davis-live -d ../shared/data/davis-motion \\
        -d ../shared/data/davis-train6 -d scenarios/pan -d scenarios/pan3 --sides 96,128,160

For every clip and every pair of consecutive frames where either has an object, the first frame's
ground truth (at the flow's size) is carried onto the second as :class:`~dinomask.keyframes.FlowCarrier`
carries a map (the flow started from the camera's shift, backward warping, uncovered background
cleared), once with DIS's flow alone and once after ``follow_object``; each is scored by IoU
against the second frame's ground truth. Prints the clips where the two differ (each step's
change), then per flow side the steps, the steps it changed and both means.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b) / union)


def carried(truth: np.ndarray, backward: np.ndarray, forward: np.ndarray, side: int) -> np.ndarray:
    """``truth`` (bool, flow-sized) carried one step by these flows, as the live loop's carrier does
    at a ``side`` px flow (its forward-backward tolerance for that side)."""
    from dinomask.keyframes import FlowCarrier, KeyframeSettings, carry_step

    tolerance = FlowCarrier.for_settings(KeyframeSettings(policy="async", flow_side=side)).fb_tolerance
    return carry_step(np.where(truth, 1.0, -1.0).astype(np.float32)[None], backward, forward, tolerance)[0] > 0


def clip_steps(sequence, side: int) -> list[tuple[int, float, float]]:
    """``(frame, IoU with DIS alone, IoU with the object's own shift)`` for each step of ``sequence``."""
    from dinomask.evaluate.scenarios import labelled_frames
    from dinomask.keyframes import PannedFlow, follow_object, small_grey

    flow, previous, before, rows = PannedFlow(), None, None, []
    for index, (frame, ids) in enumerate(labelled_frames(sequence)):  # the annotated frames, in order
        grey = small_grey(frame, side)
        size = (grey.shape[1], grey.shape[0])
        truth = cv2.resize((ids > 0).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        if previous is not None:
            backward, forward = flow.backward(grey, previous), flow.forward(previous, grey)
            if before.any() or truth.any():
                plain = _iou(carried(before, backward, forward, side), truth)
                backward, forward = backward.copy(), forward.copy()
                follow_object(backward, forward, previous, grey, before)
                rows.append((index, plain, _iou(carried(before, backward, forward, side), truth)))
        previous, before = grey, truth
    return rows


def main() -> None:
    from dinomask.evaluate.datasets import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", "--dataset", action="append", required=True, help="a DAVIS-layout set (repeat)")
    parser.add_argument("--sides", default="96,128,160", help="flow short sides, px")
    args = parser.parse_args()
    sequences = [s for d in args.dataset for s in load_dataset(d).sequences]
    for side in (int(s) for s in args.sides.split(",")):
        steps = changed = 0
        plain_means, shift_means = [], []
        for sequence in sequences:
            rows = clip_steps(sequence, side)
            if not rows:
                continue
            diffs = [round(after - plain, 2) for _, plain, after in rows if abs(after - plain) > 0.005]
            steps += len(rows)
            changed += len(diffs)
            plain_means.append(np.mean([r[1] for r in rows]))
            shift_means.append(np.mean([r[2] for r in rows]))
            if diffs:
                print(f"  {side} px  {sequence.name:28s} IoU {plain_means[-1]:.3f} -> {shift_means[-1]:.3f}  steps changed: {diffs}")
        print(f"{side} px: {steps} steps, {changed} changed; mean IoU of clips {np.mean(plain_means):.4f} with DIS "
              f"alone, {np.mean(shift_means):.4f} with the object's own shift")


if __name__ == "__main__":
    main()
