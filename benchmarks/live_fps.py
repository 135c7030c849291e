"""Live FPS of what users run: the live loop end to end on 640x480 and 1280x720 video.

davis-mini's ``dog`` frames (resized, looped) are written as an mp4 and run through
``run_live`` with the live command's model stage (decode, preprocess, backbone or flow,
decision, composite), with a random-weight model of the true ViT-S/14-with-registers shape
(384 wide, 12 blocks, 6 heads, MLP ratio 4; speed does not depend on weights). Rows,
measured in one run, each on the same frames:

1. plain fp32 eager, ``paper`` preset (the baseline every ratio is against);
2. ``paper`` preset, fast runtime (``--runtime auto``: ONNX int8 on CPU, fp16 on CUDA);
3. default preset (token budget), fast runtime, no keyframes;
4. default preset, fast runtime, ``--keyframes auto`` (what ``dinomask live`` runs).

Prints ms per stage, FPS, peak RSS of this process and the speed-up over row 1::

    python benchmarks/live_fps.py [--frames 40] [--sizes 640x480,1280x720]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "davis-mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=SHARED if SHARED.is_dir() else ROOT / "tests/fixtures/davis-mini")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--sizes", default="640x480,1280x720")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="dinomask-live-fps-"))
    os.environ.setdefault("DINOMASK_CACHE", str(work / "cache"))

    import cv2
    import torch

    from dinomask.backbones import load_backbone, random_backbone_dir
    from dinomask.composite import composite
    from dinomask.files import AtomicVideoWriter
    from dinomask.keyframes import KeyframeSettings
    from dinomask.live import segment_frames
    from dinomask.postprocess import TemporalSettings
    from dinomask.preprocess import load_image
    from dinomask.reference import Reference
    from dinomask.segmenter import Segmenter, SegmenterConfig
    from dinomask.video import FrameSource, run_live

    model_dir = random_backbone_dir(work / "vits14_reg", arch="dinov2_vits14_reg")
    plain = load_backbone(str(model_dir), device=args.device, runtime="torch", dtype="float32")
    fast = load_backbone(str(model_dir), device=args.device, busy_wait=False)  # as `dinomask live` loads it
    runtime = getattr(fast, "runtime", f"torch {str(fast.dtype).replace('torch.', '')}")
    device = torch.cuda.get_device_name() if plain.device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    reference = Reference.from_images(plain, [args.dataset / "JPEGImages/480p/dog/00000.jpg"],
                                      [args.dataset / "Annotations/480p/dog/00000.png"])
    frames = [load_image(p) for p in sorted((args.dataset / "JPEGImages/480p/dog").glob("*.jpg"))]
    video_temporal = TemporalSettings(alpha=0.5)
    rows = [
        ("plain fp32 eager, paper", plain, SegmenterConfig.preset("paper")),
        (f"paper, {runtime}", fast, SegmenterConfig.preset("paper")),
        (f"default, {runtime}", fast, SegmenterConfig().replace(temporal=video_temporal)),
        (f"default + keyframes auto, {runtime}", fast,
         SegmenterConfig().replace(temporal=video_temporal, keyframes=KeyframeSettings.parse("auto"))),
    ]
    print(f"# {device}; ViT-S/14-reg true shape, random weights; {args.frames} frames per row; torch "
          f"{torch.__version__}")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        video = work / f"dog-{size}.mp4"
        with AtomicVideoWriter(video, 30, (width, height)) as writer:
            for i in range(args.frames):
                writer.write(cv2.resize(frames[i % len(frames)], (width, height), interpolation=cv2.INTER_AREA))
        print(f"\n## {width}x{height}\n")
        print("| row | grid | ms/frame | FPS | speed-up | backbone on | stages (ms per processed frame) | peak RSS MiB |")
        print("|---|---|---|---|---|---|---|---|")
        baseline = None
        for name, backbone, config in rows:
            segmenter = Segmenter(backbone, reference, config)
            segmenter.predict(frames[0])  # warm-up (ONNX session, allocator)
            segmenter.reset()
            segmenter.keyframe_stats.update(frames=0, keyframes=0)
            stats = run_live(FrameSource(str(video)), segment_frames(segmenter),
                             lambda frame, result, meter: composite(frame.image, result.mask, "black") is not None)
            baseline = baseline or stats.fps
            grid = config.geometry.grid(height, width, backbone.spec.patch_size)
            counts = segmenter.keyframe_stats
            share = counts["keyframes"] / counts["frames"] if counts["frames"] else 1.0
            stages = ", ".join(f"{k[:-3]} {v:.1f}" for k, v in stats.stage_ms.items())
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"| {name} | {grid[0]}x{grid[1]} | {1000 / stats.fps:.0f} | {stats.fps:.2f} | "
                  f"{stats.fps / baseline:.2f}x | {share:.0%} | {stages} | {rss:.0f} |")


if __name__ == "__main__":
    main()
