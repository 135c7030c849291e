"""The live loop on a video file against backbone-only throughput at the same resolution.

Writes the davis-mini ``dog`` frames (looped) as an mp4, builds a reference from its
first frame and mask, then measures, in one run:

* backbone only: the backbone called on already-preprocessed frames, nothing else, in
  its fastest setting for running alone (ONNX Runtime threads spinning);
* end to end: ``run_live`` on the video (decode, preprocess, backbone, similarity,
  threshold, upsampling, composite, and optionally mp4 encoding in the output thread),
  with the backbone loaded as ``dinomask live`` loads it (threads that do not spin).

Prints FPS of both, their ratio (goal: end to end within 10% of backbone only), the
per-stage latencies and dropped frames. Random weights, real ViT-S/14 architecture.

    python benchmarks/live_loop.py [--frames 48] [--runtime auto] [--record]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

DAVIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis-mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DAVIS)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--method", default="dinomask")
    parser.add_argument("--record", action="store_true", help="also encode the output to mp4 in the output thread")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="dinomask-live-"))
    os.environ.setdefault("DINOMASK_CACHE", str(work / "cache"))

    from dinomask.backbones import load_backbone, random_backbone_dir
    from dinomask.composite import composite
    from dinomask.files import AtomicVideoWriter
    from dinomask.live import segment_frames
    from dinomask.preprocess import load_image, to_pixel_values
    from dinomask.reference import Reference
    from dinomask.segmenter import Segmenter, SegmenterConfig
    from dinomask.video import FrameSource, run_live

    random_backbone_dir(work / "vits14", arch="dinov2_vits14_reg")  # the default backbone's true shape
    backbone = load_backbone(str(work / "vits14"), device="cpu", runtime=args.runtime)  # alone: threads spin
    live_backbone = load_backbone(str(work / "vits14"), device="cpu", runtime=args.runtime, busy_wait=False)
    frames = [load_image(p) for p in sorted((args.dataset / "JPEGImages/480p/dog").glob("*.jpg"))]
    video = work / "dog.mp4"
    with AtomicVideoWriter(video, 25, (frames[0].shape[1], frames[0].shape[0])) as writer:
        for i in range(args.frames):
            writer.write(frames[i % len(frames)])
    reference = Reference.from_images(backbone, [args.dataset / "JPEGImages/480p/dog/00000.jpg"],
                                      [args.dataset / "Annotations/480p/dog/00000.png"])
    config = SegmenterConfig.preset(args.method)
    segmenter = Segmenter(live_backbone, reference, config)  # as `dinomask live` loads it
    grid = config.geometry.grid(*frames[0].shape[:2], backbone.spec.patch_size)
    pixels = [to_pixel_values([f], backbone.spec, grid) for f in frames]

    backbone(pixels[0])
    start = time.perf_counter()
    for i in range(args.frames):
        backbone(pixels[i % len(pixels)])
    backbone_fps = args.frames / (time.perf_counter() - start)

    out_path = work / "out.mp4"
    state = {}

    def output(frame, result, meter):
        shown = composite(frame.image, result.mask, "black")
        if args.record:
            if "w" not in state:
                state["w"] = AtomicVideoWriter(out_path, 25, (shown.shape[1], shown.shape[0]))
            state["w"].write(shown)
        return True

    stats = run_live(FrameSource(str(video)), segment_frames(segmenter), output)
    if "w" in state:
        state["w"].close()
    ratio = stats.fps / backbone_fps
    print(f"# {type(backbone).__name__} ({getattr(backbone, 'runtime', 'torch')}), method {args.method}, "
          f"grid {grid[0]}x{grid[1]} ({grid[0] * 14}x{grid[1] * 14} px), {args.frames} frames of 854x480")
    print(f"backbone only : {backbone_fps:6.2f} FPS")
    print(f"end to end    : {stats.fps:6.2f} FPS  ({ratio:.1%} of backbone only; goal >= 90%)")
    print(f"frames        : {stats.frames_captured} captured, {stats.frames_processed} processed, "
          f"{stats.frames_dropped} dropped, {stats.frames_output} output")
    print("stage ms      : " + ", ".join(f"{k[:-3]} {v:.1f}" for k, v in stats.stage_ms.items()))


if __name__ == "__main__":
    main()
